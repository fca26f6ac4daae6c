"""Wire-format families by name: the only place a family name becomes code."""

from __future__ import annotations

from omnillm.errors import ConfigError
from omnillm.providers import (
    anthropic_messages,
    cohere_chat,
    gemini,
    openai_chat,
    openai_responses,
    opencode,
)
from omnillm.providers.base import WireFamily

__all__ = ["IMPLEMENTED", "family_for"]

_FAMILIES: dict[str, WireFamily] = {
    "openai": openai_chat.FAMILY,
    "anthropic": anthropic_messages.FAMILY,
    "cohere": cohere_chat.FAMILY,
    "gemini": gemini.FAMILY,
    "opencode": opencode.FAMILY,
    "responses": openai_responses.FAMILY,
}
IMPLEMENTED = frozenset(_FAMILIES)


def family_for(name: str) -> WireFamily:
    family = _FAMILIES.get(name)
    if family is None:
        available = ", ".join(sorted(_FAMILIES))
        raise ConfigError(f"wire family {name!r} is not implemented yet (available: {available})")
    return family
