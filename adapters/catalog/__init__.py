"""The shipped model catalogue (``models.toml``) as ``application.registry.Catalogue``."""

from adapters.catalog.loader import CatalogueError, ShippedCatalogue

__all__ = ["CatalogueError", "ShippedCatalogue"]
