"""The reliability policy: what a caller does after a failed upstream call. One table.

=============================  ==============  ==================================
error code                     action          notes
=============================  ==============  ==================================
rate_limited                   retry           wait Retry-After (capped), else backoff;
                                               over the cap: fall back
provider_unavailable,          retry           exponential backoff, full jitter,
overloaded                                     bounded tries, then fall back
provider_timeout               fall back       a silent provider stays silent
malformed_response             fall back       garbage or a cut stream: attempt failed
context_length_exceeded        larger context  next candidate with a larger window
content_policy                 to client       the provider's reason; no retry or fallback
authentication_failed,         fall back       and mark the provider (key rejected)
free_tier_refused
model_not_found                fall back       and mark the model
bad_upstream_request, other    fall back       another provider may take it
=============================  ==============  ==================================

Every number is config (``reliability`` in the config file). Retries never put more
than two attempts on one provider within the first second, whatever the jitter draws.
Retrying is only ever considered before any token reached the client.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Final, Literal

from omnillm.bus.messages import HealthState
from omnillm.errors import AuthenticationFailed, FreeTierRefused, ModelNotFound, OmniLLMError

__all__ = ["POLICY", "Action", "Decision", "RetryPolicy", "decide", "health_state"]


class Action(enum.Enum):
    RETRY = "retry"
    FALLBACK = "fallback"
    LARGER_CONTEXT = "larger context"
    TO_CLIENT = "to client"


Mark = Literal["provider", "model"] | None


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    mark: Mark = None
    breaker: bool = False
    """Whether the outcome says something about the provider's health (counts as a
    breaker failure). A refused request (auth, policy, context) does not."""


POLICY: Final[dict[str, Rule]] = {
    "rate_limited": Rule(Action.RETRY, breaker=True),
    "provider_unavailable": Rule(Action.RETRY, breaker=True),
    "overloaded": Rule(Action.RETRY, breaker=True),
    "provider_timeout": Rule(Action.FALLBACK, breaker=True),
    "malformed_response": Rule(Action.FALLBACK, breaker=True),
    "context_length_exceeded": Rule(Action.LARGER_CONTEXT),
    "content_policy": Rule(Action.TO_CLIENT),
    "authentication_failed": Rule(Action.FALLBACK, mark="provider"),
    "free_tier_refused": Rule(Action.FALLBACK, mark="provider"),
    "model_not_found": Rule(Action.FALLBACK, mark="model"),
}
DEFAULT_RULE: Final = Rule(Action.FALLBACK)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_tries: int = 3
    """Calls to one candidate, the first included."""
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    retry_after_cap_s: float = 10.0
    first_second_tries: int = 2
    """At most this many calls to one provider start within one second of the first."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay_s: float = 0.0
    reason: str = ""
    mark: Mark = None
    breaker: bool = False


def rule_for(code: str) -> Rule:
    return POLICY.get(code, DEFAULT_RULE)


def backoff(tries: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**(tries-1))]."""
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** (tries - 1))
    return (rng or random).uniform(0.0, ceiling)


def decide(
    code: str,
    *,
    tries: int,
    since_first_s: float,
    retry_after: float | None,
    streamed: bool,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after the ``tries``-th call to a candidate failed with ``code``.

    ``streamed``: tokens already reached the client, so the call cannot be repeated.
    """
    rule = rule_for(code)

    def decision(action: Action, reason: str, delay_s: float = 0.0) -> Decision:
        return Decision(action, delay_s, reason, rule.mark, rule.breaker)

    if rule.action is not Action.RETRY:
        return decision(rule.action, code)
    if streamed:
        return decision(Action.FALLBACK, f"{code} after tokens went out")
    if tries >= policy.max_tries:
        return decision(Action.FALLBACK, f"{code} after {tries} tries")
    if retry_after is not None and retry_after > policy.retry_after_cap_s:
        cap = policy.retry_after_cap_s
        return decision(Action.FALLBACK, f"{code}: Retry-After {retry_after:g}s is over {cap:g}s")
    delay = retry_after if retry_after is not None else backoff(tries, policy, rng)
    if tries >= policy.first_second_tries:
        delay = max(delay, 1.0 - since_first_s)
    return decision(Action.RETRY, code, delay)


def health_state(error: OmniLLMError | None) -> HealthState | None:
    """What an outcome says about a provider (or model) for the health board; None: nothing
    lasting (transient failures belong to the circuit breaker)."""
    if error is None:
        return "ok"
    if isinstance(error, FreeTierRefused):
        return "free_tier_refused"
    if isinstance(error, AuthenticationFailed):
        return "auth_failed"
    if isinstance(error, ModelNotFound):
        return "model_not_found"
    return None
