"""What a client is told for each bad request, word for word: a message
says what to fix, names the field, and gives the limit it broke."""

from __future__ import annotations

import json

import pytest

from settings import StreamSettings
from streaming.request import RequestError, parse_body, parse_query, read_body

LIMITS = StreamSettings(max_message_chars=10, max_body_bytes=2048, max_history_messages=2)
JSON = "application/json"


def body(data: object) -> bytes:
    return json.dumps(data).encode()


CASES = [
    (
        b"x",
        "text/html",
        415,
        "unsupported_media_type",
        "Send the request as JSON with 'Content-Type: application/json'.",
    ),
    (b"x" * 2049, JSON, 413, "body_too_large", "The request body is larger than 2048 bytes."),
    (b"\xff", JSON, 400, "invalid_encoding", "The request body must be UTF-8."),
    (b"{", JSON, 400, "invalid_json", "The request body is not valid JSON."),
    (b"[]", JSON, 400, "invalid_body", 'The request body must be a JSON object like {"message": "..."}.'),
    (b"{}", JSON, 400, "missing_message", "The request body needs a 'message' string."),
    (body({"message": 1}), JSON, 400, "invalid_message", "'message' must be a string."),
    (body({"message": " "}), JSON, 400, "empty_message", "'message' must not be empty."),
    (body({"message": "x" * 11}), JSON, 413, "message_too_long", "'message' is longer than 10 characters."),
    (body({"message": "a\x00"}), JSON, 400, "invalid_message", "'message' must not contain NUL characters."),
    (
        body({"message": "hi", "messages": "no"}),
        JSON,
        400,
        "invalid_messages",
        '\'messages\' must be a list of {"role", "content"} objects.',
    ),
    (
        body({"message": "hi", "messages": [{"role": "user", "content": "a"}] * 3}),
        JSON,
        413,
        "too_many_messages",
        "'messages' has more than 2 earlier turns.",
    ),
    (
        body({"message": "hi", "messages": [{"role": "user", "content": "a"}, 5]}),
        JSON,
        400,
        "invalid_messages",
        "'messages[1]' must be an object with 'role' and 'content'.",
    ),
    (
        body({"message": "hi", "messages": [{"role": "system", "content": "a"}]}),
        JSON,
        400,
        "invalid_role",
        "'messages[0].role' must be 'user' or 'assistant'.",
    ),
    (
        body({"message": "hi", "messages": [{"role": "user", "content": "x" * 11}]}),
        JSON,
        413,
        "message_too_long",
        "'messages[0].content' is longer than 10 characters.",
    ),
]


@pytest.mark.parametrize(("data", "content_type", "status", "code", "message"), CASES)
def test_each_bad_body_is_told_what_to_fix(data, content_type, status, code, message) -> None:
    with pytest.raises(RequestError) as err:
        parse_body(data, content_type, LIMITS)
    assert (err.value.status, err.value.code, err.value.message) == (status, code, message)
    assert err.value.body() == {"error": {"code": code, "message": message}}
    assert str(err.value) == message


def test_a_query_without_a_message_says_how_to_send_one() -> None:
    with pytest.raises(RequestError) as err:
        parse_query({"msg": "hi"}, LIMITS)
    assert err.value.message == "Add the message as a query parameter: ?message=..."
    assert parse_query({"message": "hi"}, LIMITS).history == ()


def test_the_content_type_may_carry_parameters_and_any_case() -> None:
    assert parse_body(body({"message": "hi"}), " Application/JSON ; charset=utf-8", LIMITS).message == "hi"


def test_a_body_exactly_at_the_limit_is_read() -> None:
    padded = body({"message": "hi", "pad": "x" * (2048 - 28)})
    assert len(padded) == 2048
    assert parse_body(padded, JSON, LIMITS).message == "hi"


async def test_read_body_reads_up_to_the_limit_and_refuses_past_it() -> None:
    async def chunks(*parts: bytes):
        for part in parts:
            yield part

    assert await read_body(chunks(b"a" * 1024, b"b" * 1024), "2048", LIMITS) == b"a" * 1024 + b"b" * 1024
    assert await read_body(chunks(b"{}"), None, LIMITS) == b"{}"
    with pytest.raises(RequestError) as err:
        await read_body(chunks(b"a" * 2048, b"b"), None, LIMITS)
    assert (err.value.status, err.value.message) == (413, "The request body is larger than 2048 bytes.")
    with pytest.raises(RequestError) as err:
        await read_body(chunks(), "2049", LIMITS)
    assert (err.value.status, err.value.message) == (413, "The request body is larger than 2048 bytes.")
    with pytest.raises(RequestError) as err:
        await read_body(chunks(), "1e3", LIMITS)
    assert (err.value.status, err.value.code, err.value.message) == (
        400,
        "invalid_content_length",
        "The Content-Length header is not a number.",
    )


def test_a_query_message_is_checked_and_named_like_a_body_s() -> None:
    with pytest.raises(RequestError) as err:
        parse_query({"message": "x" * 11}, LIMITS)
    assert (err.value.status, err.value.message) == (413, "'message' is longer than 10 characters.")
    with pytest.raises(RequestError) as err:
        parse_query({"message": " "}, LIMITS)
    assert err.value.message == "'message' must not be empty."


def test_only_the_media_type_before_the_first_parameter_counts() -> None:
    assert parse_body(body({"message": "hi"}), "application/json; charset=utf-8; profile=x", LIMITS).message == "hi"
    with pytest.raises(RequestError) as err:
        parse_body(body({"message": "hi"}), "text/plain; type=application/json", LIMITS)
    assert err.value.code == "unsupported_media_type"
