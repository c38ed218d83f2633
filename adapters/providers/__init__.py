"""Provider adapters: ``domain.ports.ProviderClient`` implementations over vendor SDKs."""

from adapters.providers.openai import OpenAIProvider

__all__ = ["OpenAIProvider"]
