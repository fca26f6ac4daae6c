"""OmniLLM: a multi-provider LLM router on NATS.

``omnillm.Client`` is the Python entry point; the rest of the shell (config, supervisor,
CLI) wires the actors in ``omnillm.actors`` to the bus in ``omnillm.bus``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Client", "Completion", "OmniLLMError"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from omnillm.client import Client, Completion
    from omnillm.errors import OmniLLMError


def __getattr__(name: str) -> Any:
    # Lazy, so that `omnillm.bus` and `omnillm.providers` can import `omnillm.errors`
    # without pulling in the client and its imports first.
    if name in ("Client", "Completion"):
        from omnillm import client

        return getattr(client, name)
    if name == "OmniLLMError":
        from omnillm.errors import OmniLLMError

        return OmniLLMError
    raise AttributeError(name)
