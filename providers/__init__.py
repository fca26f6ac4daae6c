"""Providers: wire-format families (pure translation), the provider registry and the model catalog."""

__all__: list[str] = []
