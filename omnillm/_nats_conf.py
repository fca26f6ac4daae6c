"""The NATS server's config, rendered in one place: who may publish and subscribe where.

``nats.conf`` (production, at the repository root) and the file ``omni up`` writes for
its embedded server carry the same permission blocks, rendered by
:func:`render_permissions` from one table (:data:`ACTOR`, :data:`AUDIT`,
:data:`CLIENT_PUBLISH`); a test checks that ``nats.conf`` holds them verbatim. All
users live in one account. Three roles:

- **actor** (``omnillm-actor``): every OmniLLM process. Its publish list names the
  client inboxes (``_INBOX.>``) because a caller streams to the reply subject carried
  in the envelope, not to a reply it received, so response permissions cannot cover it.
- **client**: publishes requests and the read-only admin asks, and subscribes to its
  own inbox prefix only (``_INBOX.<name>`` unless configured): it cannot read another
  client's tokens. The router streams only to subjects under ``_INBOX.``.
- **audit**: subscribes to everything and publishes nothing (``omni tap``; not
  ``omni tap --replay``, which asks the JetStream API).

No role has ``allow_responses``. The actor already may publish to every inbox; on a
user that takes clients' requests it would let the server pass a reply to whatever
subject the client named, past the publish lists; and the server keeps a record of
every reply subject delivered, for the whole expiry. ``true`` would even cut a token
stream after one message (1 reply within 2 minutes). A user split off to answer only
replies it is handed needs ``allow_responses: {max: -1, expires: "5m"}``, the expiry at
least ``reliability.request_timeout_s``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Final, Protocol

from omnillm.bus import subjects

__all__ = [
    "ACTOR",
    "ACTOR_PASSWORD_ENV",
    "ACTOR_USER",
    "AUDIT",
    "CLIENT_PUBLISH",
    "LOCAL_PASSWORD_ENV",
    "LOCAL_USER",
    "ROLES",
    "Permissions",
    "Rule",
    "UserSpec",
    "client_subscribe",
    "inbox_prefix_of",
    "render_embedded",
    "render_permissions",
    "render_user",
    "user_problems",
]

ACTOR_USER: Final = "omnillm-actor"
ACTOR_PASSWORD_ENV: Final = "OMNI_ACTOR_PASSWORD"
LOCAL_USER: Final = "omnillm-local"
"""The embedded server's user for connections without credentials (loopback only)."""
LOCAL_PASSWORD_ENV: Final = "OMNI_LOCAL_PASSWORD"
RESERVED: Final = frozenset({ACTOR_USER, LOCAL_USER})
ROLES: Final = ("actor", "audit", "client")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Rule:
    """One subject in a permission list, with the reason it is there."""

    subject: str
    why: str


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: tuple[Rule, ...]
    """Empty: publishes nothing."""
    subscribe: tuple[Rule, ...]


_ADMIN: Final = subjects.ADMIN_PREFIX

ACTOR: Final = Permissions(
    publish=(
        Rule(f"{subjects.ROOT}.>", "plan, call handoffs, events, usage, admin asks, replays"),
        Rule(f"{subjects.INBOX}.>", "frames to any client inbox; handoff and admin answers"),
        Rule("$JS.API.>", "streams, consumers and KV buckets"),
        Rule("$JS.ACK.>", "the ledger acks usage events"),
        Rule("$JS.FC.>", "flow control of KV watchers"),
        Rule("$KV.>", "KV writes: health, breakers, switch, dedup"),
    ),
    subscribe=(
        Rule(f"{subjects.ROOT}.>", "requests, handoffs, admin asks, events, usage"),
        Rule(f"{subjects.INBOX}.>", "its own inboxes: answers and JetStream deliveries"),
    ),
)

CLIENT_PUBLISH: Final = (
    Rule(subjects.REQUEST, "chat requests"),
    Rule(f"{_ADMIN}.providers", "omni providers"),
    Rule(f"{_ADMIN}.models", "omni models"),
    Rule(f"{_ADMIN}.cost", "omni cost: every key's spend; drop for tenants"),
    Rule(f"{_ADMIN}.stats", "omni stats: every key's spend; drop for tenants"),
    Rule(f"{_ADMIN}.estimates", "omni stats: estimate accuracy"),
)
"""Not ``omni.v1.admin.switch``: a switch changes routing for everyone."""

AUDIT: Final = Permissions(
    publish=(),
    subscribe=(Rule(">", "everything, client token streams included"),),
)


def client_subscribe(inbox_prefix: str) -> tuple[Rule, ...]:
    return (Rule(f"{inbox_prefix}.>", "its own inbox: answers and token streams"),)


class UserSpec(Protocol):
    """A user of ``nats.users`` in the product config."""

    @property
    def name(self) -> str: ...

    @property
    def password_env(self) -> str: ...

    @property
    def inbox_prefix(self) -> str | None: ...

    @property
    def role(self) -> str: ...


def inbox_prefix_of(user: UserSpec) -> str:
    return user.inbox_prefix or f"{subjects.INBOX}.{user.name}"


# --- rendering -----------------------------------------------------------------------


def _list(rules: Sequence[Rule], indent: str) -> str:
    """A list one subject a line, its reason beside it."""
    width = max(len(r.subject) for r in rules) + 2
    lines = [f"{indent}  {_quoted(r.subject):<{width}}  # {r.why}" for r in rules]
    return "[\n" + "\n".join(lines) + f"\n{indent}]"


def _quoted(subject: str) -> str:
    return f'"{subject}"'


def _block(name: str, permissions: Permissions) -> str:
    publish = _list(permissions.publish, "  ") if permissions.publish else '{deny: ">"}'
    note = "" if permissions.publish else "  # publishes nothing"
    return (
        f"{name} = {{\n"
        f"  publish: {publish}{note}\n"
        f"  subscribe: {_list(permissions.subscribe, '  ')}\n"
        "}\n"
    )


def render_permissions(roles: Collection[str] = ROLES) -> str:
    """The permission blocks of ``roles``, as ``nats.conf`` (every role) and the embedded
    config (the roles it has users for: the server refuses a variable nobody uses) carry
    them."""
    blocks = {
        "actor": _block("OMNI_ACTOR", ACTOR),
        "audit": _block("OMNI_AUDIT", AUDIT),
        "client": f"OMNI_CLIENT_PUBLISH = {_list(CLIENT_PUBLISH, '')}\n",
    }
    return "".join(block for role, block in blocks.items() if role in roles)


def render_user(name: str, password_env: str, role: str, inbox_prefix: str = "") -> str:
    """One entry of ``authorization.users``; the password is a variable, never a value."""
    head = f'{{user: "{name}", password: ${password_env}'
    if role == "actor":
        return f"{head}, permissions: $OMNI_ACTOR}}"
    if role == "audit":
        return f"{head}, permissions: $OMNI_AUDIT}}"
    if role == "client":
        inbox = client_subscribe(inbox_prefix)[0].subject
        return f'{head}, permissions: {{publish: $OMNI_CLIENT_PUBLISH, subscribe: "{inbox}"}}}}'
    return f"{head}}}"  # no permissions: everything


def render_embedded(
    *,
    host: str,
    port: int,
    store_dir: Path,
    max_payload: int,
    users: Sequence[UserSpec] = (),
    anonymous: bool = True,
) -> str:
    """The embedded server's config: ``nats.conf``'s permissions and roles, plus (with
    ``anonymous``) a user without limits for connections that bring no credentials.

    The JetStream block comes last, so a test may cut it off and keep a valid file.
    """
    entries = [render_user(ACTOR_USER, ACTOR_PASSWORD_ENV, "actor")]
    entries += [render_user(u.name, u.password_env, u.role, inbox_prefix_of(u)) for u in users]
    if anonymous:
        entries.append(render_user(LOCAL_USER, LOCAL_PASSWORD_ENV, "local"))
    text = (
        "# Written by `omni up` (omnillm/_nats_conf.py) at every start; nats.conf has the\n"
        "# same permissions, with comments.\n"
        f'host: "{host}"\n'
        f"port: {port if port else -1}\n"
        f"max_payload: {max_payload}\n"
        f"max_pending: {max(64 * 1024 * 1024, max_payload * 2)}\n"
        + render_permissions({"actor", *(u.role for u in users)})
        + "authorization {\n  users = [\n"
        + "".join(f"    {entry}\n" for entry in entries)
        + "  ]\n}\n"
    )
    if anonymous:
        text += f'no_auth_user: "{LOCAL_USER}"\n'
    return text + f'jetstream {{\n  store_dir: "{store_dir}"\n}}\n'


# --- checks --------------------------------------------------------------------------


def check_inbox_prefix(prefix: str) -> str | None:
    """What is wrong with ``prefix`` as a client's inbox prefix, or None."""
    if not subjects.is_inbox(prefix):
        example = f"{subjects.INBOX}.acme"
        return f"expected a subject under {subjects.INBOX}. such as {example}, got {prefix!r}"
    return None


def user_problems(users: Sequence[UserSpec]) -> Iterator[tuple[str, str]]:
    """Key paths under ``nats.users`` and what is wrong there."""
    seen: dict[str, int] = {}
    prefixes: list[tuple[int, str]] = []
    for i, user in enumerate(users):
        where = f"nats.users[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", user.name):
            yield f"{where}.name", "expected letters, digits, '-' or '_' (it names an inbox)"
        elif user.name in RESERVED:
            yield f"{where}.name", f"{user.name!r} is OmniLLM's own user"
        elif user.name in seen:
            yield f"{where}.name", f"{user.name!r} is already nats.users[{seen[user.name]}]"
        seen.setdefault(user.name, i)
        if not _ENV_NAME.fullmatch(user.password_env):
            yield f"{where}.password_env", f"expected a variable name, got {user.password_env!r}"
        if user.role == "client":
            prefix = inbox_prefix_of(user)
            if (problem := check_inbox_prefix(prefix)) is not None:
                yield f"{where}.inbox_prefix", problem
            prefixes.append((i, prefix))
    yield from _overlaps(prefixes)


def _overlaps(prefixes: list[tuple[int, str]]) -> Iterator[tuple[str, str]]:
    """A client whose inbox prefix holds another's could read that one's token streams;
    one over OmniLLM's own users' inboxes, what the actors receive."""
    for i, prefix in prefixes:
        for own in sorted(RESERVED):
            if _nested(prefix, f"{subjects.INBOX}.{own}"):
                yield f"nats.users[{i}].inbox_prefix", f"{prefix!r} overlaps {own}'s inboxes"
    for (i, outer), (j, inner) in combinations(prefixes, 2):
        if _nested(inner, outer):
            yield (
                f"nats.users[{j}].inbox_prefix",
                f"{inner!r} overlaps nats.users[{i}]'s {outer!r}: one could read the other's inbox",
            )


def _nested(a: str, b: str) -> bool:
    """Whether the subjects under ``a`` and under ``b`` meet."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")
