"""Secret encryption adapters implementing ``application.registry.Kms``."""

from adapters.secrets.local import KmsError, LocalKeyfileKms

__all__ = ["KmsError", "LocalKeyfileKms"]
