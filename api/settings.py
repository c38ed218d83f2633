"""One typed settings object, read from ``LUMINA_*`` environment variables and an optional TOML
file (``LUMINA_CONFIG``, else ``./lumina.toml`` when it exists). Environment wins over the file.

An invalid value raises ``SettingsError`` naming the setting and the expected form; the CLI prints
that one line and exits 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from application.routing import RoutingSettings
from domain.errors import InvalidRequest

__all__ = ["Settings", "SettingsError", "load_settings"]

PREFIX = "LUMINA_"
# Vendor keys keep their vendors' usual names.
VENDOR_ENV = {
    "OPENAI_API_KEY": "openai_api_key",
    "OPENAI_BASE_URL": "openai_base_url",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "GEMINI_API_KEY": "gemini_api_key",
    "GOOGLE_API_KEY": "gemini_api_key",
    "DEEPSEEK_API_KEY": "deepseek_api_key",
    "XAI_API_KEY": "xai_api_key",
}


class SettingsError(Exception):
    pass


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8000
    web_port: int = 8080
    sim_port: int = 8090
    data_dir: str = ".lumina"
    # None means "embedded": `lumina up` starts it under data_dir.
    database_url: str | None = None
    nats_url: str | None = None
    redis_url: str | None = None
    # Where the console finds the backend's gRPC endpoint.
    backend: str | None = None
    tenant_id: str = "default"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    traces: Literal["none", "console", "memory"] = "none"
    default_model: str = ""
    db_pool_size: int = 10
    # Backend processes `lumina up` starts (`lumina serve` each, sharing the gRPC and HTTP ports through
    # SO_REUSEPORT; the kernel spreads connections over them). One process uses one core: set it to
    # the cores the backend may use (docs/operations.md "Backend processes").
    backend_processes: int = 1
    # Usage rows and their events (what a response waits for): "durable" commits wait for the WAL
    # flush; "fast" does not (synchronous_commit = off on that one connection: ~1 ms less per request
    # here, and a crash of the database server, not of Lumina, can lose the last ~0.6 s of usage rows).
    usage_commit: Literal["durable", "fast"] = "durable"
    outbox_poll_interval: float = 0.5
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_api_key: str | None = None
    gemini_api_key: str | None = None
    deepseek_api_key: str | None = None
    xai_api_key: str | None = None
    # identity (docs/operations.md "First start and API keys")
    # Where people reach the console: reset links point here; '' = http://<host>:<web_port>.
    public_url: str = ""
    # WebAuthn relying party id (a domain, never an IP address); '' = public_url's host, or
    # "localhost" when that is an address. Origins: comma-separated; '' = public_url plus
    # http://localhost:<web_port> and http://127.0.0.1:<web_port>.
    webauthn_rp_id: str = ""
    webauthn_origins: str = ""
    # First start (`lumina up`): the default tenant's administrator, and an API key stored for
    # them when set (lum_<12 hex>_<secret>, e.g. for CI; treat it as a secret).
    admin_email: str = "admin@localhost"
    bootstrap_api_key: str | None = None
    signup_enabled: bool = True
    # How long a verified API key is trusted without asking the database again (0 = every call).
    api_key_cache_seconds: float = 5.0
    # Peers whose x-forwarded-for names the client (comma-separated addresses or CIDR networks;
    # '' = none): the console and any reverse proxy in front of the backend or the console. The
    # login limiter and audit events key on that client address (docs/operations.md "Client addresses").
    trusted_proxies: str = "127.0.0.0/8,::1"
    # Prefix of the Redis keys Lumina writes (deployments, or test runs, sharing one Redis)
    redis_namespace: str = "lumina"
    # The console signs its CSRF tokens with this (give every console replica the same one);
    # unset = a random secret per console process. Its cookies are Secure when public_url is https.
    web_secret: str | None = None
    # mail (docs/operations.md "Mail"): the worker sends the mail outbox (password reset links)
    # through this SMTP server; smtp_host unset = no delivery (mail waits in the outbox).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "lumina@localhost"
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str | None = None
    # memory (docs/memory.md "Settings")
    memory_enabled: bool = True
    # "local" (all-MiniLM-L6-v2 on onnxruntime, fp32), "local-int8", or "provider:<model>" (a
    # model of the registry, embedded through its provider)
    memory_embedder: str = "local-int8"  # docs/memory.md: recall holds, the query embeds ~2x faster
    memory_model_dir: str | None = None  # the local model's directory; None = build/models/all-MiniLM-L6-v2
    memory_embedding_dimensions: int | None = None  # provider embedders: ask for this size (None = the model's)
    memory_vector_store: Literal["pgvector"] = "pgvector"
    memory_cache_seconds: int = 300  # the Redis read cache of vector queries (when redis_url is set)
    memory_summary_model: str = ""  # session summaries through this model; '' = extractive
    memory_extraction_model: str = ""  # consolidation's fact extraction through this model (JSON); '' = rules
    memory_consolidation_interval: float = 3600.0  # the worker's consolidation sweep; 0 = events only
    # in the chat path (docs/memory.md "In the chat path"): at most this many tokens of memories
    # per request, found within this time (else the request goes on without them)
    memory_chat_token_budget: int = 1000
    memory_chat_max_results: int = 8
    memory_chat_timeout_ms: int = 150
    memory_tenant_cache_seconds: float = 30.0  # how long a tenant's memory switch is cached
    # routing and resilience (docs/routing.md): the file's [routing] table, or LUMINA_ROUTING as JSON
    routing: RoutingSettings = RoutingSettings()

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port", "web_port", "sim_port", "smtp_port"):
            value = getattr(self, name)
            if not (1 <= value <= 65535):
                raise SettingsError(f"{env_name(name)}: expected a TCP port from 1 to 65535, got {value}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", self.tenant_id):  # domain.identity.validate_tenant_id
            raise SettingsError(f"{env_name('tenant_id')}: expected lower-case letters, digits or '-' (1 to 63)")
        if self.database_url and not self.database_url.startswith(("postgresql", "postgres")):
            raise SettingsError(f"{env_name('database_url')}: expected a postgresql:// URL")
        if self.outbox_poll_interval <= 0:
            raise SettingsError(f"{env_name('outbox_poll_interval')}: expected a positive number of seconds")
        if self.bootstrap_api_key is not None and not _BOOTSTRAP_KEY.fullmatch(self.bootstrap_api_key):
            # never echo the value: it is a secret
            raise SettingsError(f"{env_name('bootstrap_api_key')}: expected lum_<12 hex digits>_<at least 20 URL-safe characters>")
        if self.public_url and not re.fullmatch(r"https?://[^/\s]+/?", self.public_url):
            raise SettingsError(f"{env_name('public_url')}: expected an origin such as https://lumina.example.com")
        for entry in (e.strip() for e in self.trusted_proxies.split(",")):
            if entry and not _is_network(entry):
                raise SettingsError(f"{env_name('trusted_proxies')}: {entry!r} is not an IP address or CIDR network")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,63}", self.redis_namespace):
            raise SettingsError(f"{env_name('redis_namespace')}: expected 1 to 64 letters, digits, ':', '.', '_' or '-'")
        if not 1 <= self.backend_processes <= 64:
            raise SettingsError(f"{env_name('backend_processes')}: expected 1 to 64 processes")
        if self.api_key_cache_seconds < 0:
            raise SettingsError(f"{env_name('api_key_cache_seconds')}: expected 0 or more seconds")
        if self.memory_embedder not in ("local", "local-int8") and not re.fullmatch(r"provider:\S+", self.memory_embedder):
            raise SettingsError(f"{env_name('memory_embedder')}: expected local, local-int8 or provider:<model>")
        if self.memory_embedding_dimensions is not None and not 1 <= self.memory_embedding_dimensions <= 2000:
            raise SettingsError(f"{env_name('memory_embedding_dimensions')}: expected 1 to 2000")
        if self.memory_consolidation_interval < 0 or self.memory_cache_seconds < 0:
            raise SettingsError(f"{env_name('memory_consolidation_interval')}: expected 0 or more seconds")
        if not 50 <= self.memory_chat_token_budget <= 100_000:
            raise SettingsError(f"{env_name('memory_chat_token_budget')}: expected 50 to 100000 tokens")
        if not 1 <= self.memory_chat_max_results <= 100:
            raise SettingsError(f"{env_name('memory_chat_max_results')}: expected 1 to 100")
        if not 1 <= self.memory_chat_timeout_ms <= 60_000:
            raise SettingsError(f"{env_name('memory_chat_timeout_ms')}: expected 1 to 60000 milliseconds")
        if self.memory_tenant_cache_seconds < 0:
            raise SettingsError(f"{env_name('memory_tenant_cache_seconds')}: expected 0 or more seconds")

    @property
    def vendor_keys(self) -> dict[str, str]:
        """Provider kind -> API key, for the vendors whose key is set."""
        keys = {
            "openai": self.openai_api_key, "anthropic": self.anthropic_api_key, "gemini": self.gemini_api_key,
            "deepseek": self.deepseek_api_key, "xai": self.xai_api_key,
        }
        return {kind: key for kind, key in keys.items() if key}

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def backend_target(self) -> str:
        return self.backend or f"{self.host}:{self.grpc_port}"

    @property
    def console_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.web_port}").rstrip("/")

    @property
    def rp_id(self) -> str:
        if self.webauthn_rp_id:
            return self.webauthn_rp_id
        host = urlsplit(self.console_url).hostname or "localhost"
        return "localhost" if _is_address(host) else host

    @property
    def rp_origins(self) -> list[str]:
        if self.webauthn_origins:
            return [o.strip().rstrip("/") for o in self.webauthn_origins.split(",") if o.strip()]
        candidates = [self.console_url, f"http://localhost:{self.web_port}", f"http://127.0.0.1:{self.web_port}"]
        return list(dict.fromkeys(candidates))


_BOOTSTRAP_KEY = re.compile(r"lum_[0-9a-f]{12}_[A-Za-z0-9_-]{20,200}")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def env_name(field: str) -> str:
    return PREFIX + field.upper()


_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    env = os.environ if env is None else env
    raw: dict[str, object] = {}
    config = env.get(PREFIX + "CONFIG")
    path = Path(config) if config else Path("lumina.toml")
    if config or path.exists():
        try:
            raw.update(tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise SettingsError(f"{PREFIX}CONFIG: file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML ({exc})") from None
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise SettingsError(f"{path}: unknown setting {unknown[0]!r}")
    for key, value in env.items():
        if key.startswith(PREFIX) and key != PREFIX + "CONFIG":
            field = key[len(PREFIX):].lower()
            if field in _FIELDS:
                raw[field] = value
            elif not field.startswith(_IGNORED_PREFIXES):
                raise SettingsError(f"{key}: unknown setting (known: {', '.join(map(env_name, _FIELDS))})")
        elif key in VENDOR_ENV and value:
            raw.setdefault(VENDOR_ENV[key], value)
    raw.update(overrides)
    if isinstance(raw.get("routing"), str):  # LUMINA_ROUTING: the [routing] table as JSON
        try:
            raw["routing"] = msgspec.json.decode(str(raw["routing"]))
        except msgspec.DecodeError as exc:
            raise SettingsError(f"{env_name('routing')}: expected a JSON object ({exc})") from None
    for key, value in list(raw.items()):
        if value == "" and key in _FIELDS and _FIELDS[key].default is None:
            raw[key] = None
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc))) from None
    except InvalidRequest as exc:  # a routing value its own struct rejects
        where = "; ".join(f"{v.field}: {v.description}" for v in exc.violations)
        raise SettingsError(f"{env_name('routing')}: {where}") from None


# Variables with the prefix that belong to the test harness or tools, not to the platform.
_IGNORED_PREFIXES = ("test", "bench", "config")


def _explain(message: str) -> str:
    match = re.search(r"at `\$\.(\w+)`", message)
    if not match:
        return message
    field = match.group(1)
    expected = message.split(" - at ")[0]
    hint = {int: "an integer", float: "a number", str: "a string"}
    annotation = _FIELDS[field].type if field in _FIELDS else None
    choices = getattr(annotation, "__args__", None)
    if choices and all(isinstance(c, str) for c in choices):
        return f"{env_name(field)}: expected one of {', '.join(choices)}"
    form = hint.get(annotation, None) or expected.removeprefix("Expected ").lower()  # type: ignore[arg-type]
    return f"{env_name(field)}: expected {form} ({expected})"
