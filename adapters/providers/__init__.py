"""Provider adapters: ``domain.ports.ProviderClient`` implementations over vendor SDKs."""

from adapters.providers.openai import PROVIDER_KINDS, OpenAIProvider, openai_compatible

__all__ = ["PROVIDER_KINDS", "OpenAIProvider", "openai_compatible"]
