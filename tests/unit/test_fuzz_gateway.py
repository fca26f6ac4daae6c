"""Property tests of the HTTP gateway's edge: any body, any headers, and the answer is a
chat completion or OpenAI's error JSON with the right status, never a 500, and the
gateway keeps serving.

The gateway's Starlette app runs in process (Starlette's ``TestClient``). Nothing here
reaches NATS: a request that passes the edge is answered by a stand-in for the bus
client that echoes the request's model, so what is tested is the edge alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from omnillm.actors.gateway.actor import ADMIN_MAX_BYTES, GatewayActor
from omnillm.bus.connection import Bus
from omnillm.bus.messages import ChatRequest, Delta, Done, Frame, Start
from omnillm.client import Client
from omnillm.config import resolve
from omnillm.testing.demo import mock_config

LIMIT = 64 * 1024
ERROR_STATUS = {400, 413, 415}
CHAT = "/v1/chat/completions"
VALID = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'


class EchoClient:
    """Answers every request with one token: the model it asked for."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Frame, None]:
        self.requests.append(request)
        yield Start("rid1", 1, 0, "mock", "mock-small")
        yield Delta("rid1", 1, 1, text=request.model)
        yield Done("rid1", 1, 2, "stop", "mock", "mock-small")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = resolve(
        mock_config("http://127.0.0.1:9/v1", reliability={"max_request_bytes": LIMIT}), env={}
    )
    gateway = GatewayActor(cast(Bus, None), settings, env={})
    gateway._client = cast(Client, EchoClient())
    with TestClient(gateway.app(), raise_server_exceptions=True) as test_client:
        yield test_client


def assert_openai_answer(response: Any) -> None:
    """A completion (200) or OpenAI's error JSON with a 4xx status: never a 500."""
    body = response.json()
    if response.status_code == 200:
        assert body["object"] == "chat.completion"
        return
    assert response.status_code in ERROR_STATUS, (response.status_code, body)
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["code"], str)


def still_serving(client: TestClient) -> None:
    response = client.post(CHAT, content=VALID, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "auto"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
openai_bodies = st.fixed_dictionaries(
    {
        "messages": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "system", "bot"]), "content": json_values}
                ),
                max_size=2,
            ),
            json_values,
        )
    },
    optional={
        "model": json_values,
        "stream": json_values,
        "n": json_values,
        "max_tokens": json_values,
        "max_completion_tokens": json_values,
        "tools": json_values,
        "stream_options": json_values,
    },
).map(msgspec.json.encode)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=300,
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.api+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ]
    ),
    header_text,
)


@given(st.one_of(st.binary(max_size=300), openai_bodies))
def test_any_body_is_a_completion_or_an_openai_error(client: TestClient, body: bytes) -> None:
    response = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert_openai_answer(response)


@given(content_types, header_text, header_text)
def test_any_headers_are_a_completion_or_an_openai_error(
    client: TestClient, content_type: str, idempotency_key: str, authorization: str
) -> None:
    headers = {  # as bytes: HTTP header values are Latin-1 on the wire
        b"content-type": content_type.encode("latin-1"),
        b"idempotency-key": idempotency_key.encode("latin-1"),
        b"authorization": authorization.encode("latin-1"),
    }
    response = client.post(CHAT, content=VALID, headers=headers)
    assert_openai_answer(response)
    if response.status_code == 415:
        assert response.json()["error"]["code"] == "unsupported_media_type"


def test_a_declared_size_over_the_limit_is_413_before_the_body_is_read(
    client: TestClient,
) -> None:
    for declared in (str(LIMIT + 1), "9" * 40):
        response = client.post(
            CHAT,
            content=VALID,
            headers={"content-length": declared, "content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
    still_serving(client)


def test_a_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(LIMIT // 512 + 1):
            yield b"x" * 512
        yield b'"}]}'

    response = client.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    still_serving(client)


def test_a_content_length_that_is_not_a_number_is_400(client: TestClient) -> None:
    response = client.post(
        CHAT, content=VALID, headers={"content-length": "12abc", "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "Content-Length" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"messages": [{"role": "user", "content": "\xff"}]}', 400, "UTF-8"),
        (b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400, "nests too deeply"),
        (b'{"model": "a\\u0000b", "messages": [{"role": "user", "content": "x"}]}', 400, "control"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', 400, "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "x"}], "n": 1000}', 400, "n:"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}', 400, "range"),
    ],
)
def test_bad_bodies_get_openai_errors_that_say_what_is_wrong(
    client: TestClient, body: bytes, status: int, says: str
) -> None:
    response = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert says in response.json()["error"]["message"]
    still_serving(client)


def test_a_form_post_is_415_naming_the_content_type(client: TestClient) -> None:
    response = client.post(
        CHAT, content=VALID, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415
    assert "application/x-www-form-urlencoded" in response.json()["error"]["message"]


def test_an_admin_body_over_its_limit_is_413(client: TestClient) -> None:
    body = json.dumps({"provider": "x" * ADMIN_MAX_BYTES}).encode()
    response = client.post(
        "/v1/admin/switch", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


class BrokenClient:
    """A bus client with a bug."""

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Frame, None]:
        raise RuntimeError("a bug")
        yield  # pragma: no cover


def test_a_bug_is_a_json_500_and_a_get_on_the_chat_route_a_json_405() -> None:
    settings = resolve(mock_config("http://127.0.0.1:9/v1"), env={})
    gateway = GatewayActor(cast(Bus, None), settings, env={})
    gateway._client = cast(Client, BrokenClient())
    with TestClient(gateway.app(), raise_server_exceptions=False) as broken:
        failed = broken.post(CHAT, content=VALID, headers={"content-type": "application/json"})
        wrong = broken.get(CHAT)
        still = broken.get("/v1/models")
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal"
    assert failed.json()["error"]["message"] == "the gateway failed: RuntimeError"
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "invalid_request")
    assert still.status_code == 200
