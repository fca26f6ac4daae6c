"""The classifier: sorts a request into a tier and its hard needs, then hands it to a planner.

The tier comes from a transparent weighted score: named features of the
last user turn (see ``_features``), each contributing amount x weight, summed and cut
by three thresholds into simple | medium | complex | reasoning. The system prompt is
never read (agent frameworks send tens of thousands of keyword-heavy characters there)
and neither is the history, with one exception: a short follow-up ("and why?", "make it
faster") is lifted towards the score of the user turn before it, scored the same way,
one step back and no further. The three largest contributions are the ``reasons``.

Two rules sit on top of the sum. The reasoning tier needs evidence of reasoning (proof,
math and reasoning cues worth ``REASONING_EVIDENCE``): a long many-part engineering task
is complex however high it scores. And a score close to the simple|medium or
medium|complex threshold (confidence under ``low_confidence``) lands on medium, so an
uncertain call never goes to the weakest models. Weights, thresholds and the confidence
floor come from ``classifier:`` in the config.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Final, NamedTuple, Protocol

import msgspec
from nats.aio.msg import Msg

from omnillm.actors._dispatch import fail_request
from omnillm.actors.base import PoolActor
from omnillm.actors.classifier._features import (
    DEFAULT_WEIGHTS,
    FEATURES,
    evidence,
    label,
    measure,
    score,
)
from omnillm.bus import subjects
from omnillm.bus.connection import RID_HEADER, Bus
from omnillm.bus.dedup import DedupBoard
from omnillm.bus.events import Event, emit
from omnillm.bus.handoff import Outcome, hand_off
from omnillm.bus.messages import (
    TIERS,
    CallEnvelope,
    ChatRequest,
    Classified,
    Failure,
    Message,
    Need,
    TextPart,
    Tier,
    encode,
    read_request,
)
from omnillm.bus.stream import send_failure
from omnillm.config import ClassifierConfig
from omnillm.errors import RequestError

__all__ = ["DEFAULT", "ClassifierActor", "check_config", "classify", "estimate_tokens"]

log = logging.getLogger("omnillm.classifier")

DEFAULT: Final = ClassifierConfig()
CHARS_PER_TOKEN: Final = 4.0
MESSAGE_OVERHEAD_CHARS: Final = 16
"""Role markers and separators a chat template adds to every message."""
CONFIDENCE_SPAN: Final = 1.0
"""A score this far from every threshold is classified with confidence 1."""
TOP_REASONS: Final = 3
MIN_REASON: Final = 0.05
"""A contribution smaller than this is no reason."""
REASONING_EVIDENCE: Final = 3.5
"""Score from proof, math and reasoning cues a turn needs before it can be reasoning."""
OUTPUT_TOKENS: Final[dict[Tier, int]] = {
    "simple": 150,
    "medium": 500,
    "complex": 1200,
    "reasoning": 3000,
}

_PREVIOUS: Final = FEATURES.index("previous_turn")
_RID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def estimate_tokens(request: ChatRequest) -> int:
    """A tokenizer-free estimate of the prompt's size (about four characters a token)."""
    chars = MESSAGE_OVERHEAD_CHARS * len(request.messages)
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        elif content:
            chars += sum(len(part.text) for part in content if isinstance(part, TextPart))
    return int(chars / CHARS_PER_TOKEN) + 1


def check_config(config: ClassifierConfig) -> None:
    """Raise ``ValueError`` naming any weight that is not a feature (a typo would be ignored)."""
    _weights(config)


_compiled: dict[int, tuple[ClassifierConfig, tuple[float, ...]]] = {}


def _weights(config: ClassifierConfig) -> tuple[float, ...]:
    """The weights in feature order, compiled once per config object."""
    entry = _compiled.get(id(config))
    if entry is not None and entry[0] is config:
        return entry[1]
    if unknown := sorted(set(config.weights) - set(FEATURES)):
        raise ValueError(
            f"classifier.weights: unknown feature {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(FEATURES)})"
        )
    weights = tuple(config.weights.get(name, DEFAULT_WEIGHTS[name]) for name in FEATURES)
    if len(_compiled) >= 16:
        _compiled.clear()
    _compiled[id(config)] = (config, weights)
    return weights


def _user_turns(messages: list[Message]) -> tuple[Message | None, Message | None]:
    """The last user turn and the one before it, found from the end."""
    last: Message | None = None
    for message in reversed(messages):
        if message.role != "user":
            continue
        if last is not None:
            return last, message
        last = message
    return last, None


def _tier(total: float, bounds: tuple[float, ...]) -> Tier:
    """The tier whose band holds ``total``; two bounds make complex the highest."""
    for tier, bound in zip(TIERS, bounds, strict=False):
        if total < bound:
            return tier
    return TIERS[len(bounds)]


def _confidence(total: float, bounds: tuple[float, ...]) -> tuple[float, int]:
    """Distance to the nearest threshold scaled to 0..1, and which threshold that is."""
    nearest = min(range(len(bounds)), key=lambda i: abs(total - bounds[i]))
    return min(1.0, abs(total - bounds[nearest]) / CONFIDENCE_SPAN), nearest


def _reasons(amounts: list[float], weights: tuple[float, ...], words: int) -> list[str]:
    """The largest contributions, largest first: ``contains code (+0.8)``."""
    ranked = sorted(
        (-abs(a * w), i) for i, (a, w) in enumerate(zip(amounts, weights, strict=True)) if a
    )
    return [
        f"{label(FEATURES[i], amounts[i], words)} ({amounts[i] * weights[i]:+.1f})"
        for size, i in ranked[:TOP_REASONS]
        if size <= -MIN_REASON
    ]


def _needs(request: ChatRequest, input_tokens: int, config: ClassifierConfig) -> list[Need]:
    needs: list[Need] = []
    if any(isinstance(m.content, list) and m.has_image() for m in request.messages):
        needs.append("vision")
    if request.tools:
        needs.append("tools")
    if input_tokens > config.long_context_tokens:
        needs.append("long_context")
    return needs


class _Scored(NamedTuple):
    amounts: list[float]
    words: int
    total: float
    reasoned: bool
    """Enough :data:`REASONING_EVIDENCE` for the reasoning tier."""


def _grade(text: str, weights: tuple[float, ...]) -> tuple[_Scored, bool]:
    """One turn's score, and whether it is a follow-up."""
    amounts, words, follow_up = measure(text)
    reasoned = evidence(amounts, weights) >= REASONING_EVIDENCE
    return _Scored(amounts, words, score(amounts, weights), reasoned), follow_up


def _score(
    request: ChatRequest, weights: tuple[float, ...], thresholds: tuple[float, float, float]
) -> _Scored:
    """The last user turn's grade, lifted towards the turn before when it follows up.

    The turn before is graded alone (no further back). Without reasoning evidence its
    score counts as at most half a unit under the reasoning threshold, so the follow-up
    of a big engineering task stays complex.
    """
    last, previous = _user_turns(request.messages)
    graded, follow_up = _grade(last.text() if last else "", weights)
    if not follow_up or previous is None or not weights[_PREVIOUS]:
        return graded
    earlier, _ = _grade(previous.text(), weights)
    ceiling = earlier.total if earlier.reasoned else thresholds[2] - CONFIDENCE_SPAN / 2
    target = min(earlier.total, ceiling)
    if target <= graded.total:
        return graded
    amounts = graded.amounts
    amounts[_PREVIOUS] = target - graded.total
    total = graded.total + amounts[_PREVIOUS] * weights[_PREVIOUS]
    return _Scored(amounts, graded.words, total, graded.reasoned or earlier.reasoned)


def classify(request: ChatRequest, config: ClassifierConfig = DEFAULT) -> Classified:
    """Tier, needs, size estimates, confidence and the reasons, from the request alone.

    Raises ``ValueError`` if ``config.weights`` names an unknown feature.
    """
    weights = _weights(config)
    amounts, words, total, reasoned = _score(request, weights, config.thresholds)
    bounds = config.thresholds if reasoned else config.thresholds[:2]
    tier = _tier(total, bounds)
    confidence, nearest = _confidence(total, bounds)
    reasons = _reasons(amounts, weights, words) or ["no strong signal"]
    if not reasoned and total >= config.thresholds[2]:
        reasons.append("too little proof, math or reasoning for the reasoning tier: complex")
    if confidence < config.low_confidence and nearest < 2 and tier != "medium":
        tier = "medium"  # unsure between simple and medium, or medium and complex
        reasons.append(f"low confidence ({confidence:.2f}): medium")
    input_tokens = estimate_tokens(request)
    output = OUTPUT_TOKENS[tier]
    if isinstance(request.max_tokens, int):
        output = min(output, request.max_tokens)
    return Classified(
        tier=tier,
        needs=_needs(request, input_tokens, config),
        input_tokens=input_tokens,
        output_tokens=output,
        confidence=round(confidence, 2),
        reasons=reasons,
    )


def _key_of(request: ChatRequest, subject: str) -> str:
    """The gateway key's name the gateway tagged the request with (``key:<name>``), for
    the ledger and budgets: trusted only on the gateway's subject, which NATS permissions
    keep clients from publishing to (a client's own ``key:`` tag bills nobody's key)."""
    metadata = request.metadata
    if subject != subjects.GATEWAY_REQUEST or isinstance(metadata, msgspec.UnsetType):
        return ""
    return next((tag[4:] for tag in metadata.tags if tag.startswith("key:")), "")


def request_id(msg: Msg) -> str:
    """The client's request id when it sent a usable one, else a new one."""
    rid = (msg.headers or {}).get(RID_HEADER, "")
    return rid if _RID.fullmatch(rid) else os.urandom(16).hex()


class Planner(Protocol):
    """A planner in this process (``PlannerActor``)."""

    async def take(self, envelope: CallEnvelope) -> None: ...


class ClassifierActor(PoolActor):
    """Subscribes to ``omni.v1.request``; hands envelopes to the planner of its process
    when there is one, else to ``omni.v1.plan``."""

    name = "classifier"

    def __init__(
        self,
        bus: Bus,
        *,
        request_timeout_s: float = 120.0,
        max_request_bytes: int = 4 * 1024 * 1024,
        handoff_timeout_s: float = 0.5,
        concurrency: int = 64,
        backlog: int = 1024,
        dedup: DedupBoard | None = None,
        config: ClassifierConfig = DEFAULT,
        planner: Planner | None = None,
    ) -> None:
        check_config(config)  # a bad weight name fails at start-up, not on a request
        super().__init__(
            bus,
            subject=subjects.REQUEST,
            also=(subjects.GATEWAY_REQUEST,),
            queue=subjects.CLASSIFIER_QUEUE,
            concurrency=concurrency,
            backlog=backlog,
        )
        self.request_timeout_s = request_timeout_s
        self.max_request_bytes = max_request_bytes
        self.handoff_timeout_s = handoff_timeout_s
        self.dedup = dedup
        self.config = config
        self.planner = planner
        """The planner of this process, if it runs one: envelopes go to it directly
        instead of through ``omni.v1.plan``."""

    async def refuse(self, msg: Msg) -> None:
        failure = Failure(
            code="busy",
            message=f"the router is at capacity ({self.concurrency} requests in classification "
            "and its backlog full)",
            retryable=True,
        )
        if subjects.is_inbox(msg.reply):  # else nobody to answer (see handle)
            await send_failure(self.bus, msg.reply, request_id(msg), 0, failure)

    async def handle(self, msg: Msg) -> None:
        rid = request_id(msg)
        if not msg.reply:
            log.warning("request %s has no reply subject: nobody to answer", rid)
            return
        if not subjects.is_inbox(msg.reply):
            # Answers go only under _INBOX.: frames published with the actors' rights
            # to a subject the client chose could hit the JetStream API or a KV bucket.
            reason = f"reply subject {msg.reply[:80]!r} is not under {subjects.INBOX}."
            log.warning("request %s not answered: %s", rid, reason)
            await emit(self.bus, Event(kind="reject", rid=rid, reason=reason))
            return
        result = self._read(msg.data)
        if isinstance(result, Failure):
            await send_failure(self.bus, msg.reply, rid, 0, result)
            reason = f"{result.code}: {result.message}"
            await emit(self.bus, Event(kind="reject", rid=rid, reason=reason[:500]))
            return
        envelope = self._envelope(rid, msg, result)
        if await self._is_duplicate(envelope):
            return
        await self._forward(envelope)

    async def _is_duplicate(self, envelope: CallEnvelope) -> bool:
        """A repeat of a keyed request is served the first one's frames, never called again."""
        key = envelope.request.idempotency_key
        if self.dedup is None or not isinstance(key, str):
            return False
        claim = await self.dedup.claim(key, envelope.rid)
        if not claim.duplicate:
            return False
        event = Event(kind="dedup", rid=envelope.rid, reason=f"duplicate of {claim.rid}")
        await emit(self.bus, event)
        await self.dedup.replay(
            claim.rid, envelope.reply, new_rid=envelope.rid, deadline=envelope.deadline
        )
        return True

    def _read(self, data: bytes) -> ChatRequest | Failure:
        try:
            return read_request(data, max_bytes=self.max_request_bytes)
        except RequestError as exc:
            return Failure(code=exc.code, message=exc.message)

    async def crashed(self, msg: Msg, exc: Exception) -> None:
        """A bug answers the client at once, not at its first-frame timeout."""
        if subjects.is_inbox(msg.reply):
            failure = Failure(code="internal", message=f"the classifier failed: {exc!r}")
            await send_failure(self.bus, msg.reply, request_id(msg), 0, failure)

    def _envelope(self, rid: str, msg: Msg, request: ChatRequest) -> CallEnvelope:
        now = time.time()
        timeout = request.timeout_s if isinstance(request.timeout_s, float) else None
        return CallEnvelope(
            rid=rid,
            request=request,
            reply=msg.reply,
            deadline=now + min(timeout or self.request_timeout_s, self.request_timeout_s),
            classified=classify(request, self.config),
            created_at=now,
            key=_key_of(request, msg.subject),
        )

    async def _forward(self, envelope: CallEnvelope) -> None:
        if self.planner is not None:
            await self.planner.take(envelope)
            return
        payload = encode(envelope)
        outcome = Outcome.NO_RESPONDERS
        for _ in range(3):  # a busy or silent planner instance: another may take it
            outcome = await hand_off(
                self.bus, subjects.PLAN, payload, rid=envelope.rid, wait_s=self.handoff_timeout_s
            )
            if outcome is Outcome.ACCEPTED or outcome is Outcome.NO_RESPONDERS:
                break
        if outcome is not Outcome.ACCEPTED:
            failure = Failure(
                code="no_router",
                message=f"no planner took the request ({subjects.PLAN}: {outcome.value})",
                retryable=True,
            )
            await fail_request(self.bus, envelope, failure, dedup=self.dedup)
