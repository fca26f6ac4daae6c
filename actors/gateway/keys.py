"""Gateway API keys (``gateway.keys``): who may call, and which models, without I/O.

With no key configured the gateway is open (and ``omni up`` binds it to loopback).
With any key configured, every request needs ``Authorization: Bearer <key>``. Keys are
compared in constant time against every configured key, and never logged or echoed:
errors name the key's configured ``name`` at most.

A key's ``models`` are ``fnmatch`` patterns over the requested model (``auto``,
``openai/*``, ``fast``). Patterns naming models (with a ``/``) also become the
request's ``route.allow``, so ``auto`` and aliases stay within them.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import msgspec

from omnillm.bus.messages import ChatRequest, RouteConstraints
from omnillm.config import GatewayKey
from omnillm.errors import InvalidApiKey, ModelNotAllowed

__all__ = ["KeyRing"]


class KeyRing:
    def __init__(self, keys: Sequence[GatewayKey], env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.required = bool(keys)
        self._keys = [(k, secret.encode()) for k in keys if (secret := _secret(k, env))]

    def identify(self, authorization: str | None) -> GatewayKey | None:
        """The key the header carries (None when no key is required)."""
        if not self.required:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode()
        found: GatewayKey | None = None
        for key, secret in self._keys:  # every key, every time: no timing hint
            if hmac.compare_digest(given, secret) and scheme.lower() == "bearer":
                found = key
        if found is None:
            raise InvalidApiKey("a valid 'Authorization: Bearer <key>' is required")
        return found

    @staticmethod
    def allows(key: GatewayKey, model: str) -> bool:
        return not key.models or any(fnmatchcase(model, pattern) for pattern in key.models)

    @staticmethod
    def admit(key: GatewayKey | None, request: ChatRequest) -> ChatRequest:
        """The request as this key may send it; ``model_not_allowed`` if it may not."""
        if key is None or not key.models:
            return request
        if not KeyRing.allows(key, request.model):
            raise ModelNotAllowed(
                f"model {request.model!r} is not allowed for key {key.name!r}; "
                f"allowed: {', '.join(key.models)}",
            )
        named = [pattern for pattern in key.models if "/" in pattern]
        if named:
            route = (
                request.route if isinstance(request.route, RouteConstraints) else RouteConstraints()
            )
            return msgspec.structs.replace(
                request, route=msgspec.structs.replace(route, allow=named)
            )
        return request


def _secret(key: GatewayKey, env: Mapping[str, str]) -> str | None:
    if key.key:
        return key.key
    return env.get(key.key_env) if key.key_env else None
