"""``build_provider``: the ``ProviderClient`` for a registry ``ProviderSpec``, and
``ProviderClientFactory`` (the ``application.registry.ProviderFactory`` port) which also lists a
provider's models through the vendor's SDK (discovery and active probes). Vendor adapters and SDKs
are imported lazily, so a deployment pays only for the kinds it uses."""

from __future__ import annotations

from domain.errors import ProviderError, UpstreamInvalidRequest, UpstreamUnavailable
from domain.ports import ProviderClient
from domain.registry import ProviderKind, ProviderSpec

__all__ = ["OPENAI_WIRE_KINDS", "ProviderClientFactory", "build_provider", "default_base_url"]

OPENAI_WIRE_KINDS: dict[ProviderKind, str] = {
    ProviderKind.OPENAI: "openai",
    ProviderKind.DEEPSEEK: "deepseek",
    ProviderKind.XAI: "xai",
    ProviderKind.OPENAI_COMPATIBLE: "local",
}
"""Registry kinds served by ``adapters.providers.openai.openai_compatible`` -> its kind name; the
vendors' default base URLs live there only (``PROVIDER_KINDS``)."""


def default_base_url(kind: ProviderKind) -> str | None:
    """The vendor's base URL for an OpenAI-wire kind (None for local servers and other kinds)."""
    if kind not in OPENAI_WIRE_KINDS:
        return None
    from adapters.providers.openai import PROVIDER_KINDS

    return PROVIDER_KINDS[OPENAI_WIRE_KINDS[kind]]


def build_provider(
    spec: ProviderSpec, api_key: str, *, timeout: float = 60.0, connect_timeout: float | None = None
) -> ProviderClient:
    """The client for ``spec``: ``timeout`` for the SDK's request, connecting capped at
    ``connect_timeout`` seconds (the routing settings' ``timeouts.connect_s``)."""
    base_url = spec.base_url
    key = api_key or "unused"  # local servers take any key; the SDKs insist on one
    match spec.kind:
        case kind if kind in OPENAI_WIRE_KINDS:
            from adapters.providers.openai import openai_compatible

            try:
                return openai_compatible(
                    OPENAI_WIRE_KINDS[kind], spec.name, api_key=key, base_url=base_url, timeout=timeout,
                    connect_timeout=connect_timeout,
                )
            except ValueError as exc:
                raise UpstreamInvalidRequest(f"provider {spec.name}: {exc}") from exc
        case ProviderKind.ANTHROPIC:
            from adapters.providers.anthropic import AnthropicProvider  # type: ignore[import-not-found]

            return AnthropicProvider(spec.name, api_key=key, base_url=base_url, timeout=timeout, connect_timeout=connect_timeout)  # type: ignore[no-any-return]
        case ProviderKind.GEMINI:
            from adapters.providers.gemini import GeminiProvider  # type: ignore[import-not-found]

            return GeminiProvider(spec.name, api_key=key, base_url=base_url, timeout=timeout, connect_timeout=connect_timeout)  # type: ignore[no-any-return]
    raise UpstreamInvalidRequest(f"provider {spec.name}: unsupported kind {spec.kind}")  # pragma: no cover


class ProviderClientFactory:
    def __init__(self, *, timeout: float = 60.0, list_timeout: float = 10.0, connect_timeout: float | None = None) -> None:
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._list_timeout = list_timeout

    def build(self, spec: ProviderSpec, api_key: str) -> ProviderClient:
        return build_provider(spec, api_key, timeout=self._timeout, connect_timeout=self._connect_timeout)

    async def list_models(self, spec: ProviderSpec, api_key: str) -> list[str]:
        base_url = spec.base_url or default_base_url(spec.kind)
        key = api_key or "unused"
        try:
            if spec.kind is ProviderKind.ANTHROPIC:
                import anthropic

                async with anthropic.AsyncAnthropic(api_key=key, base_url=base_url, timeout=self._list_timeout, max_retries=0) as client:
                    return [m.id async for m in client.models.list(limit=1000)]
            if spec.kind is ProviderKind.GEMINI:
                from google import genai
                from google.genai import types

                from adapters.providers.transport import aiohttp_client_args

                options = types.HttpOptions(  # the transport keeps google-genai on httpx2, as in GeminiProvider
                    base_url=_gemini_root(base_url), timeout=int(self._list_timeout * 1000),
                    async_client_args=aiohttp_client_args(),
                )
                gclient = genai.Client(api_key=key, http_options=options)
                try:
                    pager = await gclient.aio.models.list()
                    return [(m.name or "").removeprefix("models/") async for m in pager if m.name]
                finally:
                    await gclient.aio.aclose()
            import openai

            async with openai.AsyncOpenAI(api_key=key, base_url=base_url, timeout=self._list_timeout, max_retries=0) as oclient:
                return [m.id async for m in oclient.models.list()]
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - any SDK failure is "the listing is unavailable"
            raise UpstreamUnavailable(f"provider {spec.name}: model listing failed ({type(exc).__name__})") from exc


def _gemini_root(base_url: str | None) -> str | None:
    """google-genai wants the API root (it adds /v1beta itself)."""
    if base_url is None:
        return None
    return base_url.rstrip("/").removesuffix("/v1beta").removesuffix("/v1")
