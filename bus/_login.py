"""Who a connection logs in as, and URLs with their secrets hidden.

A connection's user and password are the arguments, else those in the URL
(``nats://user:password@host:4222``), else ``OMNI_NATS_USER`` and
``OMNI_NATS_PASSWORD``: so a docker-compose service, or any ``omni`` command, logs in
from its environment, and a password never has to be on a command line. The inbox
prefix is the argument, else ``OMNI_NATS_INBOX_PREFIX``, else ``_INBOX.<user>`` (what
``nats.conf`` lets a client user subscribe to), else ``_INBOX``.

Passwords never reach a log line, an error or a ``repr``: URLs are shown through
:func:`redact`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from omnillm.bus import subjects
from omnillm.errors import OmniLLMError

__all__ = [
    "INBOX_PREFIX_ENV",
    "PASSWORD_ENV",
    "USER_ENV",
    "Login",
    "NatsAuthFailed",
    "NatsPermissionDenied",
    "login",
    "redact",
]

USER_ENV: Final = "OMNI_NATS_USER"
PASSWORD_ENV: Final = "OMNI_NATS_PASSWORD"
INBOX_PREFIX_ENV: Final = "OMNI_NATS_INBOX_PREFIX"

_USERINFO: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<info>[^@/]+)@")
_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class NatsAuthFailed(OmniLLMError):
    """The server refused the login, or a user came without its password."""

    code = "nats_unauthorized"


class NatsPermissionDenied(OmniLLMError):
    """The server refused a subscription (or publish) this connection's user may not make."""

    code = "nats_permission_denied"


@dataclass(frozen=True, slots=True)
class Login:
    user: str | None
    """Given to nats-py; None when the URL carries the credentials, or there are none."""
    password: str | None = field(repr=False)
    inbox_prefix: str
    shown_user: str | None
    """The user to name in messages, wherever it came from."""


def login(
    url: str,
    *,
    user: str | None,
    password: str | None,
    inbox_prefix: str | None,
    env: Mapping[str, str],
) -> Login:
    """The credentials and inbox prefix for ``url`` (see the module for the order)."""
    in_url = url_user(url)
    if user is None and in_url is None:
        user = env.get(USER_ENV) or None
    if user is not None and password is None:
        password = env.get(PASSWORD_ENV) or None
        if password is None:
            raise NatsAuthFailed(f"NATS user {user!r} has no password: set {PASSWORD_ENV}")
    who = user or in_url
    default = f"{subjects.INBOX}.{who}" if who and _NAME.fullmatch(who) else subjects.INBOX
    prefix = inbox_prefix or env.get(INBOX_PREFIX_ENV) or default
    return Login(user=user, password=password, inbox_prefix=prefix, shown_user=who)


def url_user(url: str) -> str | None:
    """The user of the first URL in ``url`` that has ``user:password@``; a bare
    ``token@`` is a secret, not a user."""
    for one in url.split(","):
        match = _USERINFO.match(one.strip())
        if match is not None:
            name, colon, _ = match["info"].partition(":")
            return name if colon else None
    return None


def redact(url: str) -> str:
    """``url`` (a comma-separated list too) with every password and token as ``***``."""
    return ",".join(_redact_one(one.strip()) for one in url.split(","))


def _redact_one(url: str) -> str:
    match = _USERINFO.match(url)
    if match is None:
        return url
    name, colon, _ = match["info"].partition(":")
    shown = f"{name}:***" if colon else "***"
    return f"{match['scheme'] or ''}{shown}@{url[match.end() :]}"
