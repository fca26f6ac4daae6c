"""The sections of the file that tune the running router: the bus (``nats:``), the HTTP
gateway, reliability and its breakers, limits, dedup, audit, the ledger, logging and the
classifier.

:mod:`omnillm.config.schema` re-exports all of them; import them from there or from
:mod:`omnillm.config`.
"""

from __future__ import annotations

from typing import Final, Literal

from msgspec import Struct

LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_MiB: Final = 1024 * 1024
MAX_REPLICAS: Final = 5
"""JetStream's limit on copies of a stream."""


class _Section(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shared options: a typo in a key is an error, not a silently ignored setting.

    Subclasses repeat ``frozen=True``: msgspec inherits it, but type checkers do not.
    """


class EmbeddedNats(_Section, frozen=True):
    port: int = 4222
    """0 picks a free port."""
    host: str = "127.0.0.1"
    data_dir: str = ".omnillm/nats"


class NatsUser(_Section, frozen=True):
    """A user of the embedded server (``nats.conf`` has the same roles)."""

    name: str
    password_env: str
    """The variable holding the password; the password itself is never in the file."""
    inbox_prefix: str | None = None
    """Where a client may subscribe, its inbox prefix (default ``_INBOX.<name>``)."""
    role: Literal["client", "audit"] = "client"


class NatsConfig(_Section, frozen=True):
    url: str | None = None
    """Omitted: ``omni up`` starts the embedded server."""
    embedded: EmbeddedNats = EmbeddedNats()
    max_payload: int = 8 * _MiB
    replicas: int | Literal["auto"] = "auto"
    """Copies JetStream keeps of each stream and KV bucket (1 to 5). ``auto``: one per
    node of the cluster the process connects to, at most 3 (1 on a lone server)."""
    users: list[NatsUser] = []
    """Client and audit users of the embedded server; none: only OmniLLM's own."""


class GatewayKey(_Section, frozen=True):
    name: str
    key_env: str | None = None
    key: str | None = None
    models: list[str] = []
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None

    def __repr__(self) -> str:
        key = "<set>" if self.key else None
        return f"GatewayKey(name={self.name!r}, key_env={self.key_env!r}, key={key})"


class GatewayConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: int = 4000
    keys: list[GatewayKey] = []
    """None: loopback only, no auth."""
    workers: int | Literal["auto"] = 1
    """``omni up``: processes. 1: the gateway runs in the one process with every other
    actor; N: the main process runs the other actors and N-1 serve the gateway on this host
    and port; ``auto``: one per CPU this process may use, at most 4. ``omni actor gateway``
    is always one process."""


MAX_WORKERS: Final = 64
"""``gateway.workers`` above this is surely a typo."""


class BreakerConfig(_Section, frozen=True):
    """Open after ``failures`` in a row, or a ``failure_rate`` over ``min_requests`` outcomes,
    within ``window_s``; one probe request after ``cooldown_s``."""

    failures: int = 5
    window_s: float = 30.0
    failure_rate: float = 0.5
    min_requests: int = 10
    cooldown_s: float = 15.0
    probe_timeout_s: float = 30.0


class ReliabilityConfig(_Section, frozen=True):
    max_attempts: int = 3
    """Calls to one candidate (the first included) before falling back."""
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 8.0
    finish_grace_s: float = 0.5
    """After a finish reason, how long to wait for the usage before finalising."""
    probe_interval_s: float = 60.0
    """A one-token request to each provider this often (0: never); an open circuit is
    probed as soon as its cooldown ends."""
    mark_ttl_s: float = 300.0
    """How long a rejected key or an unknown model keeps its provider or model out of plans."""
    connect_timeout_s: float = 5.0
    ttft_timeout_s: float = 10.0
    stall_timeout_s: float = 10.0
    request_timeout_s: float = 120.0
    retry_after_cap_s: float = 10.0
    handoff_timeout_s: float = 0.5
    heartbeat_s: float = 5.0
    max_request_bytes: int = 4 * _MiB
    """The old name of ``limits.max_request_bytes``, still read (see :class:`Config`)."""
    workers: int = 64
    """The old name of ``limits.concurrency``, still read (see :class:`Config`)."""
    breaker: BreakerConfig = BreakerConfig()


class LimitsConfig(_Section, frozen=True):
    """How much one process takes on."""

    concurrency: int = 64
    """The size of each actor's bounded worker pool (the classifier's, the planner's):
    the requests it works on at once."""
    max_request_bytes: int = 4 * _MiB
    """The largest request accepted, on the gateway and on the bus."""


class DedupConfig(_Section, frozen=True):
    ttl_s: float = 600.0
    """How long an idempotency key and its recorded answer are kept (past the longest request)."""


class AuditConfig(_Section, frozen=True):
    stream: bool = False
    """Keep requests and audit events in the JetStream stream ``OMNI_AUDIT`` for replay
    (``omni tap --replay``). Clients then get no immediate "no router" answer."""
    max_age_s: float = 7 * 86400.0


class LedgerConfig(_Section, frozen=True):
    path: str = ".omnillm/ledger.sqlite"
    reference_model: str | None = None
    """``omni stats`` shows savings against always using this model (a catalog id)."""
    linger_s: float = 0.05
    """After a batch smaller than a full one, wait this long so that the next holds more
    events: one pull, one transaction and one round of acks for all of them. The longest
    an event waits for the ledger, besides the write itself; 0 records each at once."""


class LogConfig(_Section, frozen=True):
    level: str = "info"


class ClassifierConfig(_Section, frozen=True):
    """How the classifier scores a request (docs/architecture.md, routing).

    ``weights`` overrides the built-in feature weights by name (``length``, ``code``,
    ``math``, ``proof``, ``steps``, ``task``, ``explain``, ``reasoning``, ``questions``,
    ``constraints``, ``domain``, ``lookup``, ``small_talk``, ``previous_turn``); a
    contribution is the feature's amount times its weight and the score is their sum.
    ``thresholds`` are the score boundaries simple | medium | complex | reasoning. A score
    closer than ``low_confidence`` to the simple|medium or medium|complex boundary is
    sent to medium, never to simple.
    """

    weights: dict[str, float] = {}
    thresholds: tuple[float, float, float] = (0.0, 2.4, 4.0)
    low_confidence: float = 0.2
    """Confidence (0..1: the distance to the nearest boundary, one score unit being sure)
    below which the tier is medium."""
    long_context_tokens: int = 100_000
    """Estimated input tokens above which a request needs a long-context model."""

    def __post_init__(self) -> None:
        low, mid, high = self.thresholds
        if not low < mid < high:
            raise ValueError(
                f"thresholds: expected three ascending numbers, got {list(self.thresholds)}"
            )
        if not 0.0 <= self.low_confidence <= 1.0:
            raise ValueError(f"low_confidence: expected 0 to 1, got {self.low_confidence:g}")
        if self.long_context_tokens < 1:
            raise ValueError(
                f"long_context_tokens: expected 1 or more, got {self.long_context_tokens}"
            )
