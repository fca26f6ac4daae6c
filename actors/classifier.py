"""The classifier: sorts a request into a tier and its hard needs, then hands it to a planner.

The score looks at the last user turn only: agent frameworks put thousands of
keyword-heavy tokens in the system prompt, and the history is what was, not what is
asked now. Every feature that moved the score is named in ``reasons``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Final

import msgspec
from nats.aio.msg import Msg

from omnillm.actors._base import Actor
from omnillm.actors._dispatch import fail_request
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
    Need,
    Tier,
    decode_request,
    encode,
)
from omnillm.bus.stream import send_failure

__all__ = ["ClassifierActor", "classify", "estimate_tokens"]

log = logging.getLogger("omnillm.classifier")

LONG_CONTEXT_TOKENS: Final = 100_000
CHARS_PER_TOKEN: Final = 4.0
THRESHOLDS: Final = (0.5, 1.5, 3.0)
"""Score boundaries between simple | medium | complex | reasoning."""
OUTPUT_TOKENS: Final[dict[Tier, int]] = {
    "simple": 150,
    "medium": 500,
    "complex": 1200,
    "reasoning": 3000,
}

_CODE = re.compile(r"```|\bdef \w+\(|\bclass \w+|\bfunction\b|=>|#include|\bimport \w+|;\s*$", re.M)
_PROOF = re.compile(r"\b(prove|proof|rigorous(ly)?|derive)\b", re.I)
_MATH = re.compile(
    r"\b(integral|derivative|equation|theorem|lemma|matrix|probability|irrational|primes?)\b"
    r"|\d+\s*[-+*/^=]\s*\d+|\\frac|\\sum|∫",
    re.I,
)
_REASONING = re.compile(
    r"\b(step by step|reason|why|analy[sz]e|trade-?offs?|compare|design|architect\w*"
    r"|optimi[sz]e|debug|plan|evaluate|derive|justify)\b",
    re.I,
)
_STEPS = re.compile(r"^\s*(\d+[.)]|[-*])\s+\S", re.M)
_SMALL_TALK = re.compile(
    r"^\W*(hi|hello|hey|thanks|thank you|ok(ay)?|cool|great|good (morning|night)|bye)\b", re.I
)
_RID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def estimate_tokens(request: ChatRequest) -> int:
    """A tokenizer-free estimate of the prompt's size (about four characters a token)."""
    chars = sum(len(m.text()) + 16 for m in request.messages)
    return int(chars / CHARS_PER_TOKEN) + 1


def _features(text: str) -> list[tuple[float, str]]:
    words = len(text.split())
    found: list[tuple[float, str]] = []
    if words > 300:
        found.append((1.5, f"long request ({words} words)"))
    elif words > 60:
        found.append((0.8, f"substantial request ({words} words)"))
    elif words < 12:
        found.append((-0.6, f"short request ({words} words)"))
    if _CODE.search(text):
        found.append((1.2, "contains code"))
    if _PROOF.search(text):
        found.append((2.4, "asks for a proof or derivation"))
    if hits := len(_MATH.findall(text)):
        found.append((min(hits, 3) * 0.9, "math"))
    if hits := len(_REASONING.findall(text)):
        found.append((min(hits, 3) * 0.7, "asks for reasoning or analysis"))
    if len(_STEPS.findall(text)) >= 3:
        found.append((0.8, "multi-step instructions"))
    if text.count("?") >= 3:
        found.append((0.5, "several questions"))
    if _SMALL_TALK.match(text) and words < 12:
        found.append((-1.5, "small talk"))
    if any(weight > 0 for weight, _ in found):  # a short hard question is still hard
        found = [f for f in found if not f[1].startswith("short request")]
    return found


def _tier(score: float) -> Tier:
    for tier, bound in zip(TIERS, THRESHOLDS, strict=False):
        if score < bound:
            return tier
    return "reasoning"


def _confidence(score: float) -> float:
    distance = min(abs(score - bound) for bound in THRESHOLDS)
    return round(min(1.0, 0.5 + distance), 2)


def _needs(request: ChatRequest, input_tokens: int) -> list[Need]:
    needs: list[Need] = []
    if any(m.has_image() for m in request.messages):
        needs.append("vision")
    if request.tools:
        needs.append("tools")
    if input_tokens > LONG_CONTEXT_TOKENS:
        needs.append("long_context")
    return needs


def classify(request: ChatRequest) -> Classified:
    """Tier, needs, size estimates, confidence and the reasons, from the request alone."""
    features = _features(request.last_user_text())
    score = sum(weight for weight, _ in features)
    tier = _tier(score)
    confidence = _confidence(score)
    reasons = [why for _, why in sorted(features, key=lambda f: -abs(f[0]))[:3]]
    if confidence < 0.55 and tier == "simple":
        tier = "medium"
        reasons.append("low confidence: medium")
    input_tokens = estimate_tokens(request)
    output = OUTPUT_TOKENS[tier]
    if isinstance(request.max_tokens, int):
        output = min(output, request.max_tokens)
    return Classified(
        tier=tier,
        needs=_needs(request, input_tokens),
        input_tokens=input_tokens,
        output_tokens=output,
        confidence=confidence,
        reasons=reasons or ["no strong signal"],
    )


def request_id(msg: Msg) -> str:
    """The client's request id when it sent a usable one, else a new one."""
    rid = (msg.headers or {}).get(RID_HEADER, "")
    return rid if _RID.fullmatch(rid) else uuid.uuid4().hex


class ClassifierActor(Actor):
    """Subscribes to ``omni.v1.request``; publishes envelopes to ``omni.v1.plan``."""

    name = "classifier"

    def __init__(
        self,
        bus: Bus,
        *,
        request_timeout_s: float = 120.0,
        max_request_bytes: int = 4 * 1024 * 1024,
        handoff_timeout_s: float = 0.5,
        workers: int = 64,
        backlog: int = 1024,
        dedup: DedupBoard | None = None,
    ) -> None:
        super().__init__(
            bus,
            subject=subjects.REQUEST,
            queue=subjects.CLASSIFIER_QUEUE,
            workers=workers,
            backlog=backlog,
        )
        self.request_timeout_s = request_timeout_s
        self.max_request_bytes = max_request_bytes
        self.handoff_timeout_s = handoff_timeout_s
        self.dedup = dedup

    async def refuse(self, msg: Msg) -> None:
        failure = Failure(
            code="busy",
            message=f"the router is at capacity ({self.workers} requests in classification "
            "and its backlog full)",
            retryable=True,
        )
        await send_failure(self.bus, msg.reply, request_id(msg), 0, failure)

    async def handle(self, msg: Msg) -> None:
        rid = request_id(msg)
        if not msg.reply:
            log.warning("request %s has no reply subject: nobody to answer", rid)
            return
        result = self._read(msg.data)
        if isinstance(result, Failure):
            await send_failure(self.bus, msg.reply, rid, 0, result)
            reason = f"{result.code}: {result.message}"
            await emit(self.bus, Event(kind="reject", rid=rid, reason=reason[:500]))
            return
        envelope = self._envelope(rid, msg.reply, result)
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
        if len(data) > self.max_request_bytes:
            return Failure(
                code="request_too_large",
                message=f"request of {len(data)} bytes is over the limit of "
                f"{self.max_request_bytes} bytes (reliability.max_request_bytes)",
            )
        try:
            return decode_request(data)
        except msgspec.ValidationError as exc:
            return Failure(code="invalid_request", message=f"invalid chat request: {exc}")
        except msgspec.DecodeError as exc:
            return Failure(code="invalid_request", message=f"request is not valid JSON: {exc}")

    def _envelope(self, rid: str, reply: str, request: ChatRequest) -> CallEnvelope:
        now = time.time()
        timeout = request.timeout_s if isinstance(request.timeout_s, float) else None
        return CallEnvelope(
            rid=rid,
            request=request,
            reply=reply,
            deadline=now + min(timeout or self.request_timeout_s, self.request_timeout_s),
            classified=classify(request),
            created_at=now,
        )

    async def _forward(self, envelope: CallEnvelope) -> None:
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
