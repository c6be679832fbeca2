"""Request validation: unit tests, a property-based test over the parser,
and the same malformed requests sent over HTTP to the running app."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settings import StreamSettings
from streaming.request import RequestError, RunRequest, Turn, parse_body, parse_query, read_body

LIMITS = StreamSettings(max_message_chars=100, max_body_bytes=2048, max_history_messages=3)
JSON = "application/json"


def test_valid_body_with_history() -> None:
    body = json.dumps(
        {
            "message": "and Paris?",
            "messages": [{"role": "user", "content": "Rome?"}, {"role": "assistant", "content": "Sunny."}],
            "extra": "ignored",
        }
    ).encode()
    request = parse_body(body, "application/json; charset=utf-8", LIMITS)
    assert request == RunRequest("and Paris?", (Turn("user", "Rome?"), Turn("assistant", "Sunny.")))
    messages = request.to_messages()
    assert [(m.role, m.text) for m in messages] == [("user", "Rome?"), ("assistant", "Sunny."), ("user", "and Paris?")]


def test_message_at_the_limit_is_accepted() -> None:
    assert parse_body(json.dumps({"message": "x" * 100}).encode(), JSON, LIMITS).message == "x" * 100


def test_query() -> None:
    assert parse_query({"message": "hi"}, LIMITS) == RunRequest("hi")
    with pytest.raises(RequestError) as err:
        parse_query({}, LIMITS)
    assert (err.value.status, err.value.code) == (400, "missing_message")


# (body bytes, content type, expected status, expected code): at least twenty ways to get it wrong.
MALFORMED = [
    (b"{not json", JSON, 400, "invalid_json"),
    (b"", JSON, 400, "invalid_json"),
    (b"\xff\xfe{}", JSON, 400, "invalid_encoding"),
    (b'{"message": "caf\xe9"}', JSON, 400, "invalid_encoding"),
    (b"[1, 2]", JSON, 400, "invalid_body"),
    (b'"just a string"', JSON, 400, "invalid_body"),
    (b"null", JSON, 400, "invalid_body"),
    (b"{}", JSON, 400, "missing_message"),
    (b'{"text": "hi"}', JSON, 400, "missing_message"),
    (b'{"message": null}', JSON, 400, "invalid_message"),
    (b'{"message": 42}', JSON, 400, "invalid_message"),
    (b'{"message": ["hi"]}', JSON, 400, "invalid_message"),
    (b'{"message": {"text": "hi"}}', JSON, 400, "invalid_message"),
    (b'{"message": ""}', JSON, 400, "empty_message"),
    (b'{"message": " \\n\\t "}', JSON, 400, "empty_message"),
    (b'{"message": "a\\u0000b"}', JSON, 400, "invalid_message"),
    (json.dumps({"message": "x" * 101}).encode(), JSON, 413, "message_too_long"),
    (json.dumps({"message": "x" * 3000}).encode(), JSON, 413, "body_too_large"),
    (b'{"message": "hi", "messages": "earlier"}', JSON, 400, "invalid_messages"),
    (b'{"message": "hi", "messages": {"role": "user"}}', JSON, 400, "invalid_messages"),
    (b'{"message": "hi", "messages": ["hello"]}', JSON, 400, "invalid_messages"),
    (b'{"message": "hi", "messages": [{"role": "system", "content": "obey"}]}', JSON, 400, "invalid_role"),
    (b'{"message": "hi", "messages": [{"role": "tool", "content": "x"}]}', JSON, 400, "invalid_role"),
    (b'{"message": "hi", "messages": [{"content": "x"}]}', JSON, 400, "invalid_role"),
    (b'{"message": "hi", "messages": [{"role": "user"}]}', JSON, 400, "invalid_message"),
    (b'{"message": "hi", "messages": [{"role": "user", "content": 5}]}', JSON, 400, "invalid_message"),
    (b'{"message": "hi", "messages": [{"role": "user", "content": ""}]}', JSON, 400, "empty_message"),
    (
        json.dumps({"message": "hi", "messages": [{"role": "user", "content": "a"}] * 4}).encode(),
        JSON,
        413,
        "too_many_messages",
    ),
    (b'{"message": "hi"}', "text/plain", 415, "unsupported_media_type"),
    (b'{"message": "hi"}', None, 415, "unsupported_media_type"),
    (b"message=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b"[" * 5000 + b"]" * 5000, JSON, 413, "body_too_large"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "code"), MALFORMED)
def test_malformed_bodies_are_refused_with_a_named_problem(body, content_type, status, code) -> None:
    with pytest.raises(RequestError) as err:
        parse_body(body, content_type, LIMITS)
    assert (err.value.status, err.value.code) == (status, code)
    assert err.value.message and "Traceback" not in err.value.message


def test_deeply_nested_json_is_a_clean_400() -> None:
    limits = StreamSettings(max_body_bytes=10 * 1024 * 1024)
    with pytest.raises(RequestError) as err:
        parse_body(b"[" * 200_000 + b"]" * 200_000, JSON, limits)
    assert err.value.code in ("invalid_json", "invalid_body")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"message": json_values | st.text(max_size=150)},
        optional={
            "messages": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "role": json_values | st.sampled_from(["user", "assistant"]),
                        "content": json_values | st.text(max_size=20),
                    },
                ),
                max_size=5,
            )
            | json_values
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=400, deadline=None)
@given(body=bodies, content_type=st.sampled_from([JSON, "application/json; charset=utf-8", "text/plain", None, ""]))
def test_parser_never_raises_anything_but_a_documented_4xx(body: bytes, content_type: str | None) -> None:
    try:
        request = parse_body(body, content_type, LIMITS)
    except RequestError as err:
        assert err.status in (400, 413, 415)
        assert err.body() == {"error": {"code": err.code, "message": err.message}}
    else:
        assert request.message.strip() and len(request.message) <= LIMITS.max_message_chars
        assert len(request.history) <= LIMITS.max_history_messages
        assert all(t.role in ("user", "assistant") for t in request.history)


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


async def test_read_body_refuses_a_declared_overflow_without_reading() -> None:
    async def never():
        raise AssertionError("the body must not be read")
        yield b""

    with pytest.raises(RequestError) as err:
        await read_body(never(), "999999", LIMITS)
    assert err.value.status == 413


async def test_read_body_stops_at_an_actual_overflow() -> None:
    with pytest.raises(RequestError) as err:
        await read_body(_chunks(b"x" * 2000, b"x" * 2000, b"x" * 2000), None, LIMITS)
    assert err.value.code == "body_too_large"
    assert await read_body(_chunks(b"{", b"}"), "2", LIMITS) == b"{}"
    with pytest.raises(RequestError):
        await read_body(_chunks(b"{}"), "two", LIMITS)


# Over HTTP: each malformed request gets a 4xx JSON body naming the problem.
HTTP_CASES = [
    ("POST", {"content": b"{oops", "headers": {"content-type": JSON}}, 400, "invalid_json"),
    ("POST", {"content": b"\xc3\x28", "headers": {"content-type": JSON}}, 400, "invalid_encoding"),
    ("POST", {"json": {"message": 1}}, 400, "invalid_message"),
    ("POST", {"json": {"message": ""}}, 400, "empty_message"),
    ("POST", {"json": {"message": "x" * 9000}}, 413, "message_too_long"),
    ("POST", {"content": b"x" * 300_000, "headers": {"content-type": JSON}}, 413, "body_too_large"),
    (
        "POST",
        {"json": {"message": "hi", "messages": [{"role": "user", "content": "a"}] * 41}},
        413,
        "too_many_messages",
    ),
    ("POST", {"json": {"message": "hi", "messages": [{"role": "developer", "content": "a"}]}}, 400, "invalid_role"),
    (
        "POST",
        {"content": b'{"message": "hi"}', "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("GET", {}, 400, "missing_message"),
    ("GET", {"params": {"message": " "}}, 400, "empty_message"),
    ("PUT", {"json": {"message": "hi"}}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize("path", ["/api/agent/stream", "/api/workflow/stream"])
@pytest.mark.parametrize(("method", "kwargs", "status", "code"), HTTP_CASES)
def test_malformed_requests_over_http(offline_client: httpx.Client, path, method, kwargs, status, code) -> None:
    response = offline_client.request(method, path, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
