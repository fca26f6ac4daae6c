"""The classifier's features: what one user turn says about its difficulty, as numbers.

Each feature has a name, an *amount* measured from the text (a count, a 0/1 flag or a
log-scaled length) and a *weight*; its contribution to the score is amount x weight, and
the score is the sum. The weights below are the defaults; ``classifier.weights`` in the
config overrides them by name.

Length counts every word of the turn. The vocabulary features (everything but length
and code) read only the words that ask: fenced code and pasted material (an article or
an e-mail after "Summarise this:") are left out, since their words describe the
material, not the request.

Speed is a contract (under 100 microseconds a request), so the text is
lower-cased and split into words once and most features are set intersections over those
words; only structure (code, lists, formulas) takes a regular expression. A turn longer
than ``SCAN_HEAD + SCAN_TAIL`` characters is read at both ends only: the ask is nearly
always at the start or the end of what was pasted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final, NamedTuple

__all__ = [
    "DEFAULT_WEIGHTS",
    "EVIDENCE",
    "FEATURES",
    "Measure",
    "evidence",
    "label",
    "measure",
    "score",
]

FEATURES: Final = (
    "length",
    "code",
    "math",
    "proof",
    "steps",
    "task",
    "explain",
    "reasoning",
    "questions",
    "constraints",
    "domain",
    "lookup",
    "small_talk",
    "previous_turn",
)
"""Every feature, by the name ``classifier.weights`` uses. ``previous_turn`` is measured
by the classifier (it needs the conversation), the others by :func:`measure`."""

DEFAULT_WEIGHTS: Final[Mapping[str, float]] = {
    "length": 0.55,
    "code": 0.8,
    "math": 0.85,
    "proof": 4.6,
    "steps": 0.45,
    "task": 0.45,
    "explain": 1.3,
    "reasoning": 0.65,
    "questions": 0.3,
    "constraints": 0.2,
    "domain": 0.5,
    "lookup": -0.6,
    "small_talk": -1.5,
    "previous_turn": 0.9,
}

EVIDENCE: Final = ("proof", "math", "reasoning")
"""The features that show reasoning itself; see :func:`evidence`."""

SCAN_HEAD: Final = 1_500
SCAN_TAIL: Final = 500
FOLLOW_UP_WORDS: Final = 15
"""A follow-up is at most this long: longer turns stand on their own."""
_CAPS: Final = {
    "math": 4,
    "steps": 8,
    "task": 4,
    "reasoning": 3,
    "questions": 3,
    "constraints": 4,
    "domain": 4,
}
"""Counted features stop counting here: the tenth math term says little the fourth did not."""
_CAPPED: Final = tuple((FEATURES.index(name), float(cap)) for name, cap in _CAPS.items())
_WORK: Final = tuple(
    FEATURES.index(name) for name in ("code", "math", "proof", "task", "explain", "reasoning")
)
_EVIDENCE_AT: Final = tuple(FEATURES.index(name) for name in EVIDENCE)
_SMALL_TALK_AT: Final = FEATURES.index("small_talk")


_WORD: Final = re.compile(r"[a-z0-9]+(?:['\u2019-][a-z0-9]+)*")
"""A word as the features see it: "it's", "trade-offs" and "p99" are one word each."""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _phrases(*phrases: str) -> tuple[tuple[str, str], ...]:
    """Each phrase with its first word: a phrase is looked for only when that word is seen."""
    return tuple((_WORD.findall(phrase)[0], phrase) for phrase in phrases)


# --- vocabularies ----------------------------------------------------------------------

_MATH: Final = _words(
    "integral integrals integrate integration derivative derivatives differentiate "
    "differentiable equation equations polynomial polynomials eigenvalue eigenvalues "
    "eigenvector eigenvectors matrix matrices determinant vectors probability probabilities "
    "expectation variance distribution theorem lemma corollary prime primes irrational "
    "rational integer integers converge converges convergent convergence diverge diverges "
    "series sequence sequences limit continuous bounded countable uncountable infinitely "
    "modulo divisible gcd factorial combinatorics permutations logarithm ln sin cos tan "
    "exponential median deviation regression maximise maximize minimise minimize "
    "bipartite vertices ellipse triangle angle radius taylor fourier laplace lagrange "
    "multipliers differential solve quadratic parabola asymptote inequality inequalities "
    "algebra calculus bound bounds fibonacci recurrence induction uniformly"
)
_PROOF: Final = _words(
    "prove proves proving proof proofs disprove derive derivation rigorous rigorously "
    "counterexample qed iff"
)
_PROOF_PHRASES: Final = _phrases("show that", "if and only if")
_TASK: Final = _words(
    "write implement build create draft generate compose develop refactor migrate rewrite "
    "edit summarise summarize paraphrase translate review fix debug add extract transcribe "
    "convert design plan outline configure deploy find check investigate identify propose "
    "research analyse analyze update open group flag bisect wire tighten include support "
    "handle compare model define"
)
_EXPLAIN: Final = _words(
    "explain explaining describe why difference differences differ mechanism interpret consider"
)
_EXPLAIN_PHRASES: Final = _phrases(
    "how does",
    "how can",
    "how should",
    "what should",
    "what happens",
    "what would happen",
    "what causes",
    "what caused",
    "what's wrong",
    "what is wrong",
    "what are the main",
)
_REASONING: Final = _words(
    "analyse analyze analysis reason reasoning justify justification trade-offs tradeoffs "
    "trade-off tradeoff evaluate assess critique implications weigh diagnose diagnosing "
    "investigate recommend recommendation strategy pros cons optimal optimise optimize "
    "correct correctness consequences scenarios risks prioritised prioritized intuition "
    "paradox rational correlate guarantees"
)
_REASONING_PHRASES: Final = _phrases(
    "step by step",
    "think through",
    "walk through",
    "walk me through",
    "root cause",
    "are you sure",
    "check again",
    "what if",
)
_DOMAIN: Final = _words(
    "distributed concurrency concurrent concurrently deadlock lock-free atomic mutex "
    "threads consensus raft paxos replication replicas sharding shards partition partitions "
    "scalability scaling throughput latency p99 idempotent idempotency exactly-once kafka "
    "kubernetes microservice microservices monolith cryptography cryptographic encryption "
    "compiler kernel quantum algorithm algorithms complexity asymptotic np-hard amortized "
    "amortised heuristic approximation multi-tenant tenant tenants migration architecture "
    "security vulnerability vulnerabilities goroutine goroutines leak leaks profiling pprof "
    "bottleneck bottlenecks failover outage redundancy schema indexes transactions "
    "isolation bayesian statistically significance significant molecular genome liability "
    "indemnification jurisdiction compliance hipaa gdpr regulatory makespan scheduling "
    "invariant interleavings thermodynamics entropy slo slos caching cache websocket "
    "horizontally availability consistency backoff retries multipart timeout timeouts "
    "analytics spreadsheet dashboards incident"
)
_DOMAIN_PHRASES: Final = _phrases(
    "per second",
    "at scale",
    "race condition",
    "memory leak",
    "n+1",
    "load balancer",
    "single point",
    "zero-downtime",
    "data model",
    "confidence interval",
    "root cause",
)
_CONSTRAINTS: Final = _words(
    "must without exactly only never cannot can't don't guarantee strictly within "
    "preserving preserve avoid avoids budget unless"
)
_CONSTRAINT_PHRASES: Final = _phrases(
    "at most",
    "at least",
    "no more than",
    "less than",
    "in-place",
    "in place",
    "constant space",
    "o(",
)
_SMALL_TALK: Final = _words(
    "hi hello hey yo hiya thanks thank thx ty ok okay cool great nice awesome lol haha hmm "
    "morning night evening bye goodbye cheers sorry happy wow perfect sweet yay congrats "
    "you're"
)
_SMALL_TALK_PHRASES: Final = (
    "how are you",
    "what's up",
    "whats up",
    "tell me a joke",
    "fun fact",
    "your name",
    "are you",
    "can you speak",
    "what can you",
    "do you",
    "i'm bored",
    "got it",
    "talking to",
)
_LOOKUP_OPENERS: Final = _words(
    "what what's whats who who's whom whose when where which is are was were does did "
    "define translate convert spell roughly"
)
_LOOKUP_PHRASES: Final = (
    "how many",
    "how much",
    "how tall",
    "how old",
    "how far",
    "how long",
    "how do i",
    "how do you",
    "how to",
)
_HOW_TO: Final = ("how do i ", "how do you ", "how do we ")
_FOLLOW_OPENERS: Final = (
    "and ",
    "but ",
    "so ",
    "now ",
    "then ",
    "ok now",
    "okay now",
    "what about",
    "how about",
    "what if",
    "why",
    "how would",
    "are you sure",
)
_ANAPHORA: Final = _words(
    "it its it's that this those these them they instead again also too same shorter "
    "longer simpler faster slower formal more less above previous"
)

# --- structure -------------------------------------------------------------------------

_LIST_ITEM: Final = re.compile(r"^[ \t]*(?:\d{1,2}[.)]|[-*•])[ \t]+\S", re.M)
_CODE_STARTS: Final = (
    "def ",
    "class ",
    "fn ",
    "func ",
    "function ",
    "import ",
    "from ",
    "#include",
    "package ",
    "public ",
    "private ",
    "return",
    "const ",
    "let ",
    "var ",
    'resource "',
    "SELECT ",
    "if (",
    "for (",
)
_CODE_ENDS: Final = (";", "{", "}", "):")
_CODE_CHARS: Final = frozenset(";{}()=>:")
_CLAUSE: Final = re.compile(r"[,;] [a-z]")
"""A comma or semicolon before a word: one more part of an enumeration (not "1, 2, 3")."""
_FORMULA: Final = re.compile(
    r"[\^∫∑√∞≤≥]|\\frac|\\sum|\b[a-z]'+(?=[\s(=+-])|\b\d*[a-z]\s*[-+=<>]\s*\(?\d"
)
_FORMULA_SPAN: Final = 400
_FORMULA_CHARS: Final = frozenset("=^+<>/∫∑√≤≥\\")
"""A formula has one of these; prose without any is not searched."""
_MATERIAL: Final = re.compile(r":[ \t]*(?:\n|['\"\u201c\u2018])")
"""Where an instruction hands over pasted material ("Summarise this:\n\n...")."""
_MATERIAL_SEARCH: Final = 600


class Measure(NamedTuple):
    amounts: list[float]
    """In :data:`FEATURES` order, ``previous_turn`` left at 0."""
    words: int
    follow_up: bool
    """Short and leaning on what came before ("and why?", "make it faster")."""


def measure(text: str) -> Measure:
    """The amount of every feature but ``previous_turn`` in one user turn."""
    scanned = _scanned(text)
    prose = _prose(scanned)
    low = prose.lower().lstrip()
    tokens = _WORD.findall(low)
    words = _word_count(text, scanned, prose, len(tokens))
    seen = frozenset(tokens)
    first = tokens[0] if tokens else ""
    explain = _explains(low, seen)
    amounts = [
        _length(words),
        1.0 if _has_code(scanned) else 0.0,
        len(seen & _MATH) + (1.0 if _has_formula(low) else 0.0),
        1.0 if not seen.isdisjoint(_PROOF) or _any_in(_PROOF_PHRASES, seen, low) else 0.0,
        _steps(prose, low),
        len(seen & _TASK),
        1.0 if explain else 0.0,
        _count(seen, _REASONING, low, _REASONING_PHRASES),
        max(0, low.count("?") - 1),
        _count(seen, _CONSTRAINTS, low, _CONSTRAINT_PHRASES),
        _count(seen, _DOMAIN, low, _DOMAIN_PHRASES),
        1.0 if not explain and _lookup(low, first, words) else 0.0,
        0.0,
        0.0,
    ]
    for i, cap in _CAPPED:
        amounts[i] = min(amounts[i], cap)
    social = _small_talk(low, first, words) and not any(amounts[i] for i in _WORK)
    amounts[_SMALL_TALK_AT] = 1.0 if social else 0.0
    return Measure(amounts, words, not social and _follow_up(low, seen, words))


def score(amounts: list[float], weights: tuple[float, ...]) -> float:
    return sum(a * w for a, w in zip(amounts, weights, strict=True))


def evidence(amounts: list[float], weights: tuple[float, ...]) -> float:
    """How much of the score comes from reasoning itself (:data:`EVIDENCE`).

    The reasoning tier needs some: a long, many-part engineering task scores high on
    volume alone, yet it wants a strong model, not a reasoning one.
    """
    return sum(amounts[i] * weights[i] for i in _EVIDENCE_AT)


def label(name: str, amount: float, words: int) -> str:
    """What a feature's amount means, in words (the caller adds its contribution)."""
    if name == "length":
        return f"{'short' if amount < 0 else 'long'} request ({words} words)"
    how_many = round(amount)
    return _LABELS[name].format(n=how_many, s="" if how_many == 1 else "s")


_LABELS: Final = {
    "code": "contains code",
    "math": "math ({n} term{s})",
    "proof": "asks for a proof or derivation",
    "steps": "multi-step instructions ({n} part{s})",
    "task": "asks for work ({n} action{s})",
    "explain": "asks for an explanation",
    "reasoning": "asks for reasoning or analysis ({n} cue{s})",
    "questions": "several questions ({n} more)",
    "constraints": "constraints ({n})",
    "domain": "hard domain ({n} term{s})",
    "lookup": "a quick lookup",
    "small_talk": "small talk",
    "previous_turn": "follows up a harder turn",
}


# --- helpers ---------------------------------------------------------------------------


def _scanned(text: str) -> str:
    if len(text) <= SCAN_HEAD + SCAN_TAIL:
        return text
    return f"{text[:SCAN_HEAD]}\n{text[-SCAN_TAIL:]}"


def _prose(text: str) -> str:
    """The words that ask: fenced code and long pasted material left out.

    Material is what follows the first ``:`` and a newline or quote in the opening lines,
    when it is at least twice as long as the instruction and is not itself a list.
    """
    if "```" in text:
        text = " ".join(text.split("```")[::2])
    match = _MATERIAL.search(text, 0, _MATERIAL_SEARCH)
    if match is None:
        return text
    ask, material = text[: match.start()], text[match.end() :]
    if len(material) < 2 * len(ask) or _LIST_ITEM.match(material.lstrip()):
        return text
    return ask


def _word_count(text: str, scanned: str, prose: str, prose_words: int) -> int:
    if scanned is not text:
        return len(text) // 6
    if prose is not text:
        return max(prose_words, len(text) // 6)
    return max(prose_words, len(text) // 7)  # // 7: scripts written without spaces


def _length(words: int) -> float:
    """log2(words / 20), within [-1, 2.5]: 20 words is neutral, each doubling adds one."""
    return max(-1.0, min(2.5, math.log2(max(words, 1) / 20)))


def _has_code(text: str) -> bool:
    """A fenced block, or two lines that read as code."""
    if "```" in text:
        return True
    if "\n" not in text or _CODE_CHARS.isdisjoint(text):
        return False
    lines = 0
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(_CODE_STARTS) or line.endswith(_CODE_ENDS) or "=>" in line:
            lines += 1
            if lines == 2:
                return True
    return False


def _has_formula(low: str) -> bool:
    return not _FORMULA_CHARS.isdisjoint(low) and _FORMULA.search(low, 0, _FORMULA_SPAN) is not None


def _steps(prose: str, low: str) -> int:
    """List items (two or more) plus the parts of inline enumerations ("a, b and c")."""
    items = len(_LIST_ITEM.findall(prose)) if "\n" in prose else 0
    return (items if items >= 2 else 0) + len(_CLAUSE.findall(low))


def _any_in(phrases: tuple[tuple[str, str], ...], seen: frozenset[str], low: str) -> bool:
    return any(first in seen and phrase in low for first, phrase in phrases)


def _count(
    seen: frozenset[str], vocabulary: frozenset[str], low: str, phrases: tuple[tuple[str, str], ...]
) -> int:
    return len(seen & vocabulary) + sum(
        1 for first, phrase in phrases if first in seen and phrase in low
    )


def _explains(low: str, seen: frozenset[str]) -> bool:
    """Asks how or why something is so; "how do I ..." asks for a recipe, a lookup."""
    if not seen.isdisjoint(_EXPLAIN) or _any_in(_EXPLAIN_PHRASES, seen, low):
        return True
    return low.startswith("how do ") and not low.startswith(_HOW_TO)


def _lookup(low: str, first: str, words: int) -> bool:
    return words <= 14 and (first in _LOOKUP_OPENERS or low.startswith(_LOOKUP_PHRASES))


def _small_talk(low: str, first: str, words: int) -> bool:
    if words > 12:
        return False
    return first.rstrip("!,.:)") in _SMALL_TALK or any(p in low for p in _SMALL_TALK_PHRASES)


def _follow_up(low: str, seen: frozenset[str], words: int) -> bool:
    if words > FOLLOW_UP_WORDS:
        return False
    return low.startswith(_FOLLOW_OPENERS) or not seen.isdisjoint(_ANAPHORA)
