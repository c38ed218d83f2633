"""One typed settings object, read from ``LUMINA_*`` environment variables and an optional TOML
file (``LUMINA_CONFIG``, else ``./lumina.toml`` when it exists). Environment wins over the file.

An invalid value raises ``SettingsError`` naming the setting and the expected form; the CLI prints
that one line and exits 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

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
    outbox_poll_interval: float = 0.5
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_api_key: str | None = None
    gemini_api_key: str | None = None
    deepseek_api_key: str | None = None
    xai_api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port", "web_port", "sim_port"):
            value = getattr(self, name)
            if not (1 <= value <= 65535):
                raise SettingsError(f"{env_name(name)}: expected a TCP port from 1 to 65535, got {value}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", self.tenant_id):
            raise SettingsError(f"{env_name('tenant_id')}: expected lower-case letters, digits, '-' or '_'")
        if self.database_url and not self.database_url.startswith(("postgresql", "postgres")):
            raise SettingsError(f"{env_name('database_url')}: expected a postgresql:// URL")
        if self.outbox_poll_interval <= 0:
            raise SettingsError(f"{env_name('outbox_poll_interval')}: expected a positive number of seconds")

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
    for key, value in list(raw.items()):
        if value == "" and key in _FIELDS and _FIELDS[key].default is None:
            raw[key] = None
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc))) from None


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
