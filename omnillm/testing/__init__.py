"""Test helpers shipped with the package: a mock provider server."""

__all__: list[str] = []
