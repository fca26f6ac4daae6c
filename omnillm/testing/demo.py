"""A config that routes to the mock provider: for ``omni demo``, the tests and the benchmark."""

from __future__ import annotations

from typing import Any

import msgspec

from omnillm.config import Config

__all__ = ["MOCK_MODELS", "mock_config"]

MOCK_MODELS: list[tuple[str, str, float, float]] = [
    ("mock/mock-small", "simple", 0.05, 0.20),
    ("mock/mock-medium", "medium", 0.40, 1.60),
    ("mock/mock-large", "reasoning", 2.50, 15.0),
]
"""(id, tier, input price, output price) in USD per million tokens."""


def _model(model_id: str, tier: str, price_in: float, price_out: float) -> dict[str, Any]:
    return {
        "id": model_id,
        "context_window": 128000,
        "max_output": 4096,
        "price": {"input": price_in, "output": price_out},
        "capabilities": ["tools"],
        "tier": tier,
    }


def mock_config(base_url: str, base: Config | None = None, **overrides: Any) -> Config:
    """``base`` (default: built-in defaults) with the mock as its only provider.

    The mock is declared the way a user declares any OpenAI-compatible endpoint:
    ``family``, ``base_url``, ``api_key`` and models with prices. ``overrides``
    replace top-level sections (``reliability={...}``, ``routing={...}``).
    """
    raw = msgspec.to_builtins(base or Config())
    raw["providers"] = {"mock": {"family": "openai", "base_url": base_url, "api_key": "none"}}
    raw["models"] = [_model(*row) for row in MOCK_MODELS]
    raw["nats"]["url"] = None
    raw["routing"] = {"strategy": "cost"}
    for section, value in overrides.items():
        raw[section] = {**raw.get(section, {}), **value} if isinstance(value, dict) else value
    return msgspec.convert(raw, Config)
