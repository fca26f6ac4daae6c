"""Providers: wire-format families (pure translation), the provider registry, the catalog."""

__all__: list[str] = []
