"""Subject and queue-group names, built by pure functions.

Every subject lives under ``omni.v1.``. Tokens that come from names (providers) are
checked, because NATS does not validate publishers: a ``.`` or ``*`` in a provider
name would silently misroute.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "ADMIN_PREFIX",
    "PLAN",
    "REQUEST",
    "admin",
    "call",
    "caller_queue",
    "check_token",
    "events",
    "usage",
]

ROOT: Final = "omni.v1"
REQUEST: Final = f"{ROOT}.request"
PLAN: Final = f"{ROOT}.plan"
ADMIN_PREFIX: Final = f"{ROOT}.admin"
CLASSIFIER_QUEUE: Final = "classifier"
PLANNER_QUEUE: Final = "planner"

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_token(token: str) -> str:
    """Return ``token`` if it is safe as one subject token, else raise ``ValueError``."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{token!r} cannot be a subject token: use letters, digits, '-' or '_'")
    return token


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
