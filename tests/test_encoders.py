from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.encoders import NDJSONEncoder, SSEEncoder, TextEncoder, _json, _utf8, choose_encoder
from streaming.events import AgentStarted, Done, Error, TextDelta, ToolCall, ToolResult
from tests.support import parse_sse

EVENTS = [
    AgentStarted("weather"),
    TextDelta("Hello\nworld", "weather"),
    ToolCall("weather", "c1", "get_weather", {"location": "Zürich"}),
    ToolResult("weather", "c1", "get_weather", {"ok": True}),
    Done("offline", "offline-demo", {"total_tokens": 3}, 12),
]


def test_sse_text_is_unnamed_and_the_rest_named() -> None:
    wire = b"".join(SSEEncoder().encode(i, e) for i, e in enumerate(EVENTS, 1)).decode()
    assert wire.startswith('id: 1\nevent: agent_started\ndata: {"agent":"weather"}\n\n')
    assert 'id: 2\ndata: {"text":"Hello\\nworld","agent":"weather"}\n\n' in wire
    parsed = parse_sse(wire.split("\n"))
    assert [e.event for e in parsed] == ["agent_started", "message", "tool_call", "tool_result", "done"]
    assert parsed[2].data["arguments"] == {"location": "Zürich"}  # UTF-8, not \u escapes
    assert "Zürich" in wire


def test_sse_error_payload_shape() -> None:
    wire = SSEEncoder().encode(7, Error("timeout", "too slow")).decode()
    assert wire == 'id: 7\nevent: error\ndata: {"error":{"code":"timeout","message":"too slow"}}\n\n'


def test_ndjson_one_object_per_line() -> None:
    lines = [json.loads(NDJSONEncoder().encode(i, e)) for i, e in enumerate(EVENTS, 1)]
    assert lines[1] == {"id": 2, "event": "text", "text": "Hello\nworld", "agent": "weather"}
    assert lines[-1]["event"] == "done" and lines[-1]["usage"] == {"total_tokens": 3}
    assert NDJSONEncoder.heartbeat is None


def test_text_separates_agents_and_shows_errors() -> None:
    encoder = TextEncoder()
    out = b"".join(
        encoder.encode(i, e)
        for i, e in enumerate(
            [
                AgentStarted("researcher"),
                TextDelta("a", "researcher"),
                TextDelta("b", "researcher"),
                ToolCall("researcher", "c", "t", {}),
                TextDelta("c", "writer"),
                Error("upstream_error", "boom"),
            ],
            1,
        )
    )
    assert out.decode() == "ab\n\nc\n[error] upstream_error: boom\n"


@pytest.mark.parametrize(
    ("finish_reason", "ending"), [("stop", "\n"), ("length", "\n[cut short: the model reached its length limit]\n")]
)
def test_text_says_when_the_answer_was_cut_at_the_length_limit(finish_reason: str, ending: str) -> None:
    encoder = TextEncoder()
    done = Done("openai", "gpt", finish_reason=finish_reason)
    out = encoder.encode(1, TextDelta("The weather in Oslo is", "weather")) + encoder.encode(2, done)
    assert out.decode() == "The weather in Oslo is" + ending


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, SSEEncoder),
        ("", SSEEncoder),
        ("*/*", SSEEncoder),
        ("text/event-stream", SSEEncoder),
        ("text/plain", TextEncoder),
        ("application/x-ndjson", NDJSONEncoder),
        ("application/json", SSEEncoder),
        ("text/plain;q=0.5, application/x-ndjson", NDJSONEncoder),
        ("text/plain, application/x-ndjson;q=0.9", TextEncoder),
        ("Text/Plain; charset=utf-8", TextEncoder),
        ("text/plain;q=0", SSEEncoder),
        ("text/plain;q=abc", SSEEncoder),
    ],
)
def test_choose_encoder_from_accept(accept, expected) -> None:
    assert type(choose_encoder(accept)) is expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/x-ndjson, text/plain", NDJSONEncoder),  # a tie: the first listed wins
        ("text/plain, application/x-ndjson", TextEncoder),
        ("text/plain;Q=0.2, application/x-ndjson; q = 0.3", NDJSONEncoder),
        ("text/plain;level=1;q=0.9, text/event-stream;q=0.8", TextEncoder),
        (" APPLICATION/X-NDJSON ", NDJSONEncoder),
        ("application/json, text/plain", TextEncoder),  # a format we do not speak does not end the search
        ("text/plain;q=1, application/x-ndjson", TextEncoder),  # no q is q=1
        ("text/plain;level=1;q=0.1, application/x-ndjson;q=0.5", NDJSONEncoder),
        ("text/plain;q=0.5=x", SSEEncoder),  # an unreadable weight is q=0
    ],
)
def test_accept_ties_case_and_spacing(accept, expected) -> None:
    assert type(choose_encoder(accept)) is expected


def test_media_types_and_heartbeats() -> None:
    assert (SSEEncoder.media_type, SSEEncoder.heartbeat) == ("text/event-stream", b": ping\n\n")
    assert (NDJSONEncoder.media_type, NDJSONEncoder.heartbeat) == ("application/x-ndjson", None)
    assert (TextEncoder.media_type, TextEncoder.heartbeat) == ("text/plain; charset=utf-8", None)


def test_text_ends_a_finished_answer_with_a_newline_and_keeps_one_agent_together() -> None:
    encoder = TextEncoder()
    parts = [encoder.encode(i, e) for i, e in enumerate([TextDelta("a", "w"), TextDelta("b", "w"), *EVENTS[-1:]], 1)]
    assert parts == [b"a", b"b", b"\n"]
    assert encoder.encode(9, AgentStarted("w")) == b""


def test_ndjson_and_sse_write_compact_utf8_json() -> None:
    event = ToolCall("weather", "c1", "get_weather", {"location": "Zürich", "n": [1, 2]})
    assert (
        NDJSONEncoder().encode(3, event)
        == (
            '{"id":3,"event":"tool_call","agent":"weather","call_id":"c1","name":"get_weather",'
            '"arguments":{"location":"Zürich","n":[1,2]}}\n'
        ).encode()
    )
    assert SSEEncoder().encode(4, event).endswith('"arguments":{"location":"Zürich","n":[1,2]}}\n\n'.encode())


def test_every_event_s_payload_on_the_wire() -> None:
    from streaming.events import AgentCompleted

    events = [
        AgentStarted("researcher"),
        TextDelta("Hi", "researcher"),
        ToolCall("researcher", "c1", "get_weather", {"location": "Oslo"}),
        ToolResult("researcher", "c1", "get_weather", {"location": "Oslo"}, True),
        AgentCompleted("researcher"),
        Done("openai", "gpt", {"total_tokens": 3}, 42),
        Error("timeout", "Too slow."),
    ]
    assert [json.loads(NDJSONEncoder().encode(i, e)) for i, e in enumerate(events, 1)] == [
        {"id": 1, "event": "agent_started", "agent": "researcher"},
        {"id": 2, "event": "text", "text": "Hi", "agent": "researcher"},
        {"id": 3, "event": "tool_call", "agent": "researcher", "call_id": "c1", "name": "get_weather",
         "arguments": {"location": "Oslo"}},
        {"id": 4, "event": "tool_result", "agent": "researcher", "call_id": "c1", "name": "get_weather",
         "result": {"location": "Oslo"}, "is_error": True},
        {"id": 5, "event": "agent_completed", "agent": "researcher"},
        {"id": 6, "event": "done", "provider": "openai", "model": "gpt", "usage": {"total_tokens": 3},
         "elapsed_ms": 42, "finish_reason": "stop"},
        {"id": 7, "event": "error", "error": {"code": "timeout", "message": "Too slow."}},
    ]  # fmt: skip
    assert ToolResult("a", "c", "t", None).is_error is False and Done("p", "m").usage is None


TRICKY = st.sampled_from(["\u2028", "\u2029", "\x85", "\ud800", "\udfff", '"', "\\", "\n", "\x00", "é", "😀"])


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.one_of(st.text(), TRICKY)).map("".join), agent=st.one_of(st.text(), TRICKY))
def test_text_events_are_written_as_the_json_of_their_payload(text: str, agent: str) -> None:
    """Text has a hand-written fast path: it must be byte for byte what the
    general path writes (line breaks escaped, lone surrogates replaced), and
    read back as the text."""
    event = TextDelta(text, agent)
    wire = SSEEncoder().encode(4, event)
    assert wire == _utf8(f"id: 4\ndata: {_json(event.payload())}\n\n")
    data = wire.decode().removeprefix("id: 4\ndata: ")
    assert data.count("\n") == 2 and data.endswith("\n\n"), "one data line, whatever the text"
    fix = lambda s: re.sub("[\ud800-\udfff]", "\ufffd", s)  # noqa: E731
    assert json.loads(data) == {"text": fix(text), "agent": fix(agent)}
