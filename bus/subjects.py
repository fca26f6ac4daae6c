"""Subject and queue-group names, built by pure functions.

Every subject lives under ``omni.v1.``. Tokens that come from names (providers) are
checked, because NATS does not validate publishers: a ``.`` or ``*`` in a provider
name would silently misroute.
"""

from __future__ import annotations

import functools
import re
import string
from typing import Final

__all__ = [
    "ADMIN_PREFIX",
    "GATEWAY_REQUEST",
    "INBOX",
    "PLAN",
    "REQUEST",
    "admin",
    "call",
    "caller_queue",
    "check_token",
    "events",
    "from_key_token",
    "is_inbox",
    "key_token",
    "usage",
]

ROOT: Final = "omni.v1"
REQUEST: Final = f"{ROOT}.request"
GATEWAY_REQUEST: Final = f"{ROOT}.request.gateway"
"""Where the gateway publishes: only actors may, so the ``key:`` tag on a request that
arrives here names a gateway key the gateway checked; on ``REQUEST`` it is ignored."""
PLAN: Final = f"{ROOT}.plan"
ADMIN_PREFIX: Final = f"{ROOT}.admin"
CLASSIFIER_QUEUE: Final = "classifier"
PLANNER_QUEUE: Final = "planner"
INBOX: Final = "_INBOX"
"""Clients' inboxes live under ``_INBOX.``; each client user under its own prefix there."""

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PLAIN: Final = frozenset(string.ascii_letters + string.digits + "-")
_ESCAPED: Final = re.compile(r"_([0-9A-F]{2})")
_KEY_TOKEN: Final = re.compile(r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})+")
_INBOX_TOKEN: Final = re.compile(r"[^\s.*>]+")


def check_token(token: str) -> str:
    """Return ``token`` if it is safe as one subject token, else raise ``ValueError``."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{token!r} cannot be a subject token: use letters, digits, '-' or '_'")
    return token


def is_inbox(subject: str) -> bool:
    """Whether ``subject`` is a concrete subject under ``_INBOX.``, where answers may go.

    The router streams only there: a client naming any other reply subject would have
    actors publish frames, with their rights, wherever it pointed (the JetStream API,
    a KV bucket, another actor's queue).
    """
    root, _, rest = subject.partition(".")
    return root == INBOX and all(_INBOX_TOKEN.fullmatch(t) for t in rest.split("."))


def call(provider: str) -> str:
    return f"{ROOT}.call.{check_token(provider)}"


def caller_queue(provider: str) -> str:
    return f"caller.{check_token(provider)}"


def usage(provider: str) -> str:
    return f"{ROOT}.usage.{check_token(provider)}"


def events(kind: str) -> str:
    return f"{ROOT}.events.{check_token(kind)}"


def admin(name: str) -> str:
    return f"{ADMIN_PREFIX}.{check_token(name)}"


@functools.lru_cache(maxsize=4096)  # per request, for every breaker and health key
def key_token(text: str) -> str:
    """``text`` as one KV key token: ``[A-Za-z0-9-]`` kept, every other UTF-8 byte ``_XX``.

    ``openrouter/openai/gpt-5.2:free`` -> ``openrouter_2Fopenai_2Fgpt-5_2E2_3Afree``.
    """
    if not text:
        raise ValueError("an empty name has no key token")
    return "".join(c if c in _PLAIN else "".join(f"_{b:02X}" for b in c.encode()) for c in text)


def from_key_token(token: str) -> str:
    """The text ``key_token`` made ``token`` from; ValueError for anything it cannot make."""
    if not _KEY_TOKEN.fullmatch(token):
        raise ValueError(f"not a key token: {token!r}")
    raw = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), token)
    text = raw.encode("latin-1").decode()  # UnicodeDecodeError is a ValueError
    if key_token(text) != token:  # one spelling per name, or two keys could hold one breaker
        raise ValueError(f"not the key token of {text!r}: {token!r}")
    return text
