"""Property tests of the stream decoders: the network may split the bytes anywhere, and an
upstream may send anything; the answer is the same events, or a provider error.

The SSE decoder (``providers/sse.py``) is fed random chunkings of random and of
well-formed streams; each wire family's stream parser is fed its recorded fixtures,
split at random points and mangled at random.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnillm.errors import ProviderError
from omnillm.providers import (
    anthropic_messages,
    cohere_chat,
    gemini,
    openai_chat,
    openai_responses,
)
from omnillm.providers.base import WireFamily
from omnillm.providers.sse import SSEDecoder, SSEEvent
from tests.unit._streams import Collected, collect

FIXTURES = Path(__file__).parent.parent / "fixtures"
FAMILIES: dict[str, WireFamily] = {
    "openai": openai_chat.FAMILY,
    "anthropic": anthropic_messages.FAMILY,
    "cohere": cohere_chat.FAMILY,
    "gemini": gemini.FAMILY,
    "responses": openai_responses.FAMILY,
}
STREAMS: list[tuple[str, bytes]] = [
    *sorted(
        (family, path.read_bytes())
        for family in FAMILIES
        for path in (FIXTURES / family).glob("stream_*.sse")
    ),
    ("openai", (FIXTURES / "opencode" / "stream_cost_tail.sse").read_bytes()),
    ("responses", (FIXTURES / "opencode" / "stream_responses_cost_tail.sse").read_bytes()),
]
BODIES: list[tuple[str, bytes]] = sorted(
    (family, path.read_bytes())
    for family in FAMILIES
    for path in (FIXTURES / family).glob("*.json")
    if path.name.startswith(("response_", "error_"))
)


# --- helpers ---------------------------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def sse_events(reads: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for data in reads for event in decoder.feed(data)]
    return events + decoder.close()


def parsed(family: str, reads: list[bytes]) -> Collected | tuple[str, str]:
    """Everything a caller gets from the stream, or the error's code and message."""
    parser = FAMILIES[family].stream_parser("some-model")
    try:
        updates = [parser.feed(data) for data in reads]
        updates.append(parser.close())
    except ProviderError as exc:
        return exc.code, exc.message
    return collect(updates)


@st.composite
def mangled(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with up to four random edits: a byte flipped, dropped or inserted, or the
    rest cut off."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        match draw(st.sampled_from(["flip", "drop", "insert", "cut"])):
            case "flip":
                out[at] ^= draw(st.integers(1, 255))
            case "drop":
                del out[at]
            case "insert":
                out[at:at] = draw(
                    st.sampled_from([b"\xff", b"\n", b"\r", b"\x00", b"[", b'"', b":"])
                )
            case "cut":
                del out[at:]
    return bytes(out)


cut_points = st.lists(st.integers(min_value=0), max_size=24)
sse_pieces = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"data:",
                b"data: ",
                b"event: ",
                b"id: 1",
                b"retry: 5",
                b": ping",
                b"\n",
                b"\r\n",
                b"\r",
            ]
        ),
        st.binary(max_size=8),
        st.text(max_size=8).map(str.encode),
    ),
    max_size=40,
).map(b"".join)
line_text = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
eols = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A stream written out from known events, with comments, in one of the three line
    endings (mixed, a ``\\r`` then a ``\\n`` would be one ending)."""
    out, events = [], []
    eol = draw(eols)
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.none() | st.text(alphabet="abcdefghij_.", min_size=1, max_size=8))
        lines = draw(st.lists(line_text, min_size=1, max_size=3))
        if draw(st.booleans()):
            out += [b": keep-alive", eol]
        if name is not None:
            out += [b"event: " + name.encode(), eol]
        for line in lines:
            out += [b"data: " + line, eol]
        out.append(eol)
        events.append(SSEEvent(name, b"\n".join(lines)))
    return b"".join(out), events


# --- the SSE decoder -------------------------------------------------------------------


@given(st.one_of(st.binary(max_size=300), sse_pieces), cut_points)
def test_any_bytes_decode_to_the_same_events_however_they_are_split(
    data: bytes, cuts: list[int]
) -> None:
    assert sse_events(split(data, cuts)) == sse_events([data])


@given(well_formed(), cut_points)
def test_a_written_stream_decodes_to_exactly_its_events(
    stream: tuple[bytes, list[SSEEvent]], cuts: list[int]
) -> None:
    data, events = stream
    assert sse_events(split(data, cuts)) == events


def test_a_long_line_in_small_reads_costs_its_length_not_length_times_reads() -> None:
    decoder = SSEDecoder()
    for _ in range(4096):  # 16 MiB in 4 KiB reads: quadratic copying took 12 s here
        assert decoder.feed(b"x" * 4096) == []
    assert decoder.feed(b"\n\n") == []  # a line of x is no field: no event


def test_an_event_that_never_ends_is_a_malformed_response() -> None:
    decoder = SSEDecoder()
    with pytest.raises(ProviderError, match="SSE event is over"):
        for _ in range(20_000):
            decoder.feed(b"data: " + b"y" * 1024 + b"\n")


# --- every wire family's stream parser -------------------------------------------------


@given(st.sampled_from(STREAMS), cut_points)
def test_a_recorded_stream_gives_the_same_answer_however_it_is_split(
    stream: tuple[str, bytes], cuts: list[int]
) -> None:
    family, data = stream
    assert parsed(family, split(data, cuts)) == parsed(family, [data])


@given(
    st.sampled_from(STREAMS).flatmap(lambda s: st.tuples(st.just(s[0]), mangled(s[1]))), cut_points
)
def test_a_mangled_stream_gives_updates_or_a_provider_error(
    stream: tuple[str, bytes], cuts: list[int]
) -> None:
    family, data = stream
    parsed(family, split(data, cuts))  # anything but a ProviderError propagates and fails


@given(st.sampled_from(sorted(FAMILIES)), st.binary(max_size=200), cut_points)
def test_random_bytes_give_updates_or_a_provider_error(
    family: str, data: bytes, cuts: list[int]
) -> None:
    parsed(family, split(data, cuts))


@given(
    st.sampled_from(BODIES).flatmap(lambda b: st.tuples(st.just(b[0]), mangled(b[1]))),
    st.sampled_from([200, 400, 401, 402, 404, 429, 500, 503, 529, 999]),
    st.dictionaries(
        st.sampled_from(["retry-after", "retry-after-ms", "Retry-After"]),
        st.sampled_from(["1", "nan", "inf", "-3", "1e400", "Wed, 21 Oct 2015 07:28:00 GMT", "?"]),
    ),
)
def test_a_mangled_body_is_a_response_or_a_provider_error(
    body: tuple[str, bytes], status: int, headers: dict[str, str]
) -> None:
    family, data = body
    wire = FAMILIES[family]
    with contextlib.suppress(ProviderError):
        wire.parse_response(data, "some-model")
    error = wire.parse_error(status, data, headers, provider="p")
    assert isinstance(error, ProviderError) and error.message
    assert error.retry_after is None or error.retry_after >= 0  # never NaN


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(
    "frame",
    [b"[" * 10_000 + b"]" * 10_000, b'{"x":"\xff"}', b'{"choices":"\xff\xfe"}'],
    ids=["deep", "bad-utf8", "bad-utf8-field"],
)
def test_deep_or_non_utf8_frames_are_malformed_responses(family: str, frame: bytes) -> None:
    result = parsed(family, [b"data: " + frame + b"\n\n"])
    assert not isinstance(result, Collected) or not result.text
    with pytest.raises(ProviderError):
        FAMILIES[family].parse_response(frame, "some-model")
    assert isinstance(FAMILIES[family].parse_error(500, frame, {}, provider="p"), ProviderError)
