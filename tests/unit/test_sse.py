from __future__ import annotations

import pytest

from omnillm.providers.sse import SSEDecoder, SSEEvent


def decode(*reads: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for data in reads for event in decoder.feed(data)]
    return events + decoder.close()


def data_of(*reads: bytes) -> list[bytes]:
    return [event.data for event in decode(*reads)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_a_blank_line_ends_an_event_whatever_the_line_ending(eol):
    stream = b"data: one" + eol + eol + b"data: two" + eol + eol

    decoder = SSEDecoder()

    assert decoder.feed(stream) == [SSEEvent(None, b"one"), SSEEvent(None, b"two")]


def test_an_event_is_held_back_until_its_blank_line_arrives():
    decoder = SSEDecoder()

    assert decoder.feed(b"data: hel") == []
    assert decoder.feed(b"lo\n") == []
    assert decoder.feed(b"\n") == [SSEEvent(None, b"hello")]


def test_a_crlf_split_across_reads_is_one_line_ending():
    # If the "\n" were read as a second line ending, it would end the event after "a".
    assert data_of(b"data: a\r", b"\ndata: b\r\n\r\n") == [b"a\nb"]


def test_an_empty_read_between_cr_and_lf_does_not_lose_the_pairing():
    assert data_of(b"data: a\r", b"", b"\ndata: b\r\n\r\n") == [b"a\nb"]


def test_a_cr_at_the_end_of_a_read_followed_by_cr_is_a_blank_line():
    decoder = SSEDecoder()

    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [SSEEvent(None, b"a")]


def test_comment_lines_are_skipped():
    stream = b": OPENROUTER PROCESSING\n\ndata: a\n: ping\ndata: b\n\n:\n\n"

    assert data_of(stream) == [b"a\nb"]


@pytest.mark.parametrize(
    ("line", "data"),
    [(b"data:x", b"x"), (b"data: x", b"x"), (b"data:  x", b" x"), (b"data", b"")],
    ids=["no-space", "one-space", "two-spaces", "no-colon"],
)
def test_data_drops_exactly_one_space_after_the_colon(line, data):
    assert data_of(line + b"\n\n") == [data]


def test_several_data_lines_join_with_newlines():
    assert data_of(b'data: {\ndata:  "a": 1\ndata: }\n\n') == [b'{\n "a": 1\n}']


def test_colons_inside_data_are_kept():
    assert data_of(b'data: {"url":"https://x"}\n\n') == [b'{"url":"https://x"}']


def test_event_name_is_kept_and_id_and_retry_are_ignored():
    stream = b"event: message_start\nid: 7\nretry: 1000\ndata: {}\n\ndata: {}\n\n"

    assert decode(stream) == [SSEEvent("message_start", b"{}"), SSEEvent(None, b"{}")]


def test_an_event_without_data_lines_is_not_emitted():
    assert decode(b"event: ping\n\nid: 3\n\nretry: 5\n\n") == []


def test_an_empty_data_line_is_an_event_with_empty_data():
    assert decode(b"data:\n\n") == [SSEEvent(None, b"")]


def test_data_stays_bytes_even_when_not_utf8():
    assert data_of(b"data: \xff\xfe\n\n") == [b"\xff\xfe"]


def test_close_emits_an_event_that_had_no_trailing_blank_line():
    decoder = SSEDecoder()

    assert decoder.feed(b"event: last\ndata: tail") == []
    assert decoder.close() == [SSEEvent("last", b"tail")]


def test_close_emits_an_event_whose_last_line_ended_but_no_blank_line_came():
    decoder = SSEDecoder()

    assert decoder.feed(b"data: tail\r\n") == []
    assert decoder.close() == [SSEEvent(None, b"tail")]


def test_close_with_nothing_pending_emits_nothing():
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\n: trailing comment\n")

    assert decoder.close() == []


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_one_byte_at_a_time_gives_the_same_events_as_one_read(eol):
    stream = eol.join(
        [b": hi", b"event: a", b"data: 1", b"data:2", b"", b"id: 9", b"", b"data: [DONE]", b""]
    )
    stream += eol

    whole = decode(stream)
    bytewise = decode(*(stream[i : i + 1] for i in range(len(stream))))

    assert whole == [SSEEvent("a", b"1\n2"), SSEEvent(None, b"[DONE]")]
    assert bytewise == whole
