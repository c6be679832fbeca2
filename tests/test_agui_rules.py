"""AG-UI's parser and encoder rule by rule, in-process: each limit at its
edge, each 4xx's message, each field of a conversation the model gets, and
the encoder's less common paths (``tests/test_agui.py`` has the protocol's
own encoder and validator, and the routes over HTTP)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from settings import StreamSettings
from streaming.agui import (
    AGENT_PROTOCOL,
    MAX_CLIENT_TOOLS,
    PROTOCOL_VERSION,
    UNANSWERED,
    WORKFLOW_PROTOCOL,
    AGUIEncoder,
    AGUIRunRequest,
    _validation_message,
    parse_run_input,
)
from streaming.events import AgentCompleted, AgentStarted, Done, Error, TextDelta, ToolCall, ToolResult
from streaming.request import RequestError
from tests.agui_support import data_frames, run_input, user

LIMITS = StreamSettings(max_message_chars=200, max_body_bytes=16384, max_history_messages=6)
NOTICE_TOOL = {
    "name": "show_notice",
    "description": "Shows a notice in the app.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


def parse(body: dict[str, Any], **kw: Any) -> AGUIRunRequest:
    return parse_run_input(json.dumps(body).encode(), "application/json", LIMITS, **kw)


def refused(body: dict[str, Any]) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(body)
    return caught.value


IMAGE = {"type": "image", "source": {"type": "url", "value": "https://example.invalid/y.png"}}


def call(call_id: str, name: str = "show_notice", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# ------------------------------------------------------------------------------ limits, at their edge


def test_each_limit_admits_exactly_its_value() -> None:
    at_limit = run_input(
        [user("x" * 200)] * 7,  # the new message and MAX_HISTORY_MESSAGES earlier ones, each MAX_MESSAGE_CHARS long
        context=[{"description": "d", "value": "v" * 200}] * 6,
        tools=[{"name": f"t{i}", "description": ""} for i in range(MAX_CLIENT_TOOLS)],
    )
    request = parse(at_limit)
    assert len(request.messages) == 8 and len(request.client_tools) == MAX_CLIENT_TOOLS == 64
    assert request.history == request.messages[:-1]

    over = [
        ({"messages": [user("x" * 201)]}, "message_too_long", "'messages[0].content' is longer than 200 characters."),
        ({"messages": [user("x")] * 8}, "too_many_messages", "'messages' has more than 6 earlier messages."),
        (
            {"context": [{"description": "d", "value": "v"}] * 7},
            "too_many_messages",
            "'context' has more than 6 entries.",
        ),
        (
            {"tools": [{"name": f"t{i}", "description": ""} for i in range(65)]},
            "too_many_tools",
            "'tools' has more than 64 tools.",
        ),
    ]
    for change, code, message in over:
        error = refused({**at_limit, **change})
        assert (error.status, error.code, error.message) == (413, code, message)


@pytest.mark.parametrize(
    ("messages", "extra", "code", "message"),
    [
        (
            [user("a"), {"id": "a", "role": "assistant", "toolCalls": [call("c1", arguments="{" + "x" * 200 + "}")]}],
            {},
            "message_too_long",
            "'messages[1].toolCalls[0].function.arguments' is longer than 200 characters.",
        ),
        (
            [user("a"), {"id": "a", "role": "assistant", "toolCalls": [call("c1")]}],
            {},
            None,
            None,
        ),
        (
            [
                user("a"),
                {"id": "a", "role": "assistant", "toolCalls": [call("c1")]},
                {"id": "t", "role": "tool", "toolCallId": "c1", "content": "ok", "error": "e" * 201},
            ],
            {},
            "message_too_long",
            "'messages[2].error' is longer than 200 characters.",
        ),
        (
            [{"id": "u", "role": "user", "content": [{"type": "text", "text": "x" * 150}] * 2}],
            {},
            "message_too_long",
            "'messages[0].content' is longer than 200 characters.",
        ),
        (
            [user("look"), {"id": "i", "role": "user", "content": [{"type": "text", "text": "a"}, IMAGE]}],
            {},
            "unsupported_content",
            "'messages[1].content[1]': only text content is supported, not image.",
        ),
        ([user("a\x00b")], {}, "invalid_message", "'messages[0].content' must not contain NUL characters."),
        (
            [user("a"), {"id": "a", "role": "assistant", "content": "x" * 201}, user("b")],
            {},
            "message_too_long",
            "'messages[1].content' is longer than 200 characters.",
        ),
        (
            [{"id": "s", "role": "system", "content": "x" * 201}, user("a")],
            {},
            "message_too_long",
            "'messages[0].content' is longer than 200 characters.",
        ),
        (
            [
                user("a"),
                {"id": "a", "role": "assistant", "toolCalls": [call("c1")]},
                {"id": "t", "role": "tool", "toolCallId": "c1", "content": "x" * 201},
            ],
            {},
            "message_too_long",
            "'messages[2].content' is longer than 200 characters.",
        ),
        (
            [user("a")],
            {"context": [{"description": "d" * 201, "value": "v"}]},
            "message_too_long",
            "'context[0].description' is longer than 200 characters.",
        ),
        (
            [user("a")],
            {"context": [{"description": "d", "value": "v"}, {"description": "d", "value": "v" * 201}]},
            "message_too_long",
            "'context[1].value' is longer than 200 characters.",
        ),
        (
            [user("a")],
            {"tools": [{"name": "ok", "description": "d" * 201}]},
            "message_too_long",
            "'tools[0].description' is longer than 200 characters.",
        ),
        (
            [user("a")],
            {"tools": [NOTICE_TOOL, {**NOTICE_TOOL, "name": "x" * 65}]},
            "invalid_tool",
            "'tools[1].name' must be 1 to 64 letters, digits, '_' or '-'.",
        ),
        (
            [user("a")],
            {"tools": [NOTICE_TOOL, NOTICE_TOOL]},
            "invalid_tool",
            "'tools[1].name' is already taken by the server's or an earlier tool.",
        ),
        (
            [user("a")],
            {"tools": [NOTICE_TOOL, {**NOTICE_TOOL, "name": "n2", "parameters": "object"}]},
            "invalid_tool",
            "'tools[1].parameters' must be a JSON schema object.",
        ),
        ([user("  \n\t")], {}, "missing_message", "'messages' needs a user message."),
    ],
)
def test_each_refusal_names_where_and_what(messages, extra, code, message) -> None:
    body = run_input(messages, **extra)
    if code is None:
        parse(body)
        return
    error = refused(body)
    assert (error.code, error.message) == (code, message)
    assert error.status == (413 if code == "message_too_long" else 400)


def test_a_body_that_is_not_an_object_is_told_what_to_send() -> None:
    with pytest.raises(RequestError) as caught:
        parse_run_input(b"[1, 2]", "application/json", LIMITS)
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        400,
        "invalid_body",
        "The request body must be a JSON object: an AG-UI RunAgentInput.",
    )


def test_a_tool_name_of_64_characters_is_a_name() -> None:
    (tool,) = parse(run_input([user("a")], tools=[{"name": "x" * 64, "description": ""}])).client_tools
    assert tool.name == "x" * 64


# ------------------------------------------------------------------------------ what the model gets


def test_system_and_developer_messages_reach_the_model_as_system_messages() -> None:
    body = run_input(
        [
            {"id": "s", "role": "system", "content": "Be brief."},
            {"id": "d", "role": "developer", "content": "Use metric units."},
            user("Oslo?"),
        ]
    )
    messages = parse(body).to_messages()
    assert [(m.role, m.text) for m in messages] == [
        ("system", "Be brief."),
        ("system", "Use metric units."),
        ("user", "Oslo?"),
    ]


def test_context_reaches_the_model_as_one_system_message_an_entry_a_line() -> None:
    context = [{"description": "The user's city", "value": "Bergen"}, {"description": "Units", "value": "metric"}]
    first, *rest = parse(run_input([user("hi")], context=context)).to_messages()
    assert first.role == "system"
    assert first.text == "Context from the application:\n- The user's city: Bergen\n- Units: metric"
    assert [m.role for m in rest] == ["user"]
    assert [m.role for m in parse(run_input([user("hi")], context=[])).to_messages()] == ["user"]


def test_a_tool_result_reaches_the_model_with_its_error_if_it_has_one() -> None:
    body = run_input(
        [
            user("show two notices"),
            {"id": "a", "role": "assistant", "toolCalls": [call("c1"), call("c2", arguments='{"text":"x"}')]},
            {"id": "t1", "role": "tool", "toolCallId": "c1", "content": "", "error": "The user dismissed it."},
            {"id": "t2", "role": "tool", "toolCallId": "c2", "content": "shown"},
        ]
    )
    messages = parse(body).to_messages()
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool"]
    calls = messages[1].contents
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("c1", "show_notice", "{}"),
        ("c2", "show_notice", '{"text":"x"}'),
    ]
    (failed,), (shown,) = messages[2].contents, messages[3].contents
    assert (failed.call_id, failed.result, failed.exception) == ("c1", "", "The user dismissed it.")
    assert (shown.call_id, shown.result, shown.exception) == ("c2", "shown", None)


def test_an_unanswered_call_is_answered_with_a_failure_the_model_can_read() -> None:
    body = run_input([user("a"), {"id": "a", "role": "assistant", "toolCalls": [call("c1")]}, user("b")])
    messages = parse(body).to_messages()
    (result,) = messages[2].contents
    assert (messages[2].role, result.call_id, result.result, result.exception) == ("tool", "c1", UNANSWERED, UNANSWERED)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "user"]


def test_an_empty_assistant_message_is_not_sent_and_text_alone_is() -> None:
    body = run_input(
        [
            user("a"),
            {"id": "e", "role": "assistant"},
            {"id": "r", "role": "reasoning", "content": "thinking"},
            {"id": "t", "role": "assistant", "content": "Hello."},
            user("b"),
        ]
    )
    messages = parse(body).to_messages()
    assert [(m.role, m.text) for m in messages] == [("user", "a"), ("assistant", "Hello."), ("user", "b")]


def test_a_blank_user_message_is_sent_when_another_one_says_something() -> None:
    messages = parse(run_input([user(" "), user("Weather in Oslo?")])).to_messages()
    assert [(m.role, m.text) for m in messages] == [("user", " "), ("user", "Weather in Oslo?")]
    assert [m.text for m in parse(run_input([user("Oslo?"), user(" ")])).to_messages()] == ["Oslo?", " "]


def test_a_tool_is_built_once_for_its_schema_in_any_key_order() -> None:
    reordered = {**NOTICE_TOOL, "parameters": dict(reversed(list(NOTICE_TOOL["parameters"].items())))}
    (one,) = parse(run_input([user("a")], tools=[NOTICE_TOOL])).client_tools
    (two,) = parse(run_input([user("a")], tools=[reordered])).client_tools
    assert one is two


@pytest.mark.parametrize("parameters", [None, {}])
def test_a_tool_without_parameters_takes_an_empty_object(parameters) -> None:
    tool: dict[str, Any] = {"name": "ping", "description": "Pings."}
    if parameters is not None:
        tool["parameters"] = parameters
    (built,) = parse(run_input([user("a")], tools=[tool])).client_tools
    assert built.parameters() == {"type": "object", "properties": {}}


def test_a_problem_of_a_kind_or_at_a_place_the_protocol_has_no_name_for_is_still_told() -> None:
    """A later protocol package may bring constraints the table does not
    name, or an error on the whole model: the message still says where and
    what, in words."""
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(Annotated[int, Field(gt=0)]).validate_python(0)
    assert _validation_message(caught.value) == "The request body is not an AG-UI RunAgentInput: 'the body' is invalid."


def test_a_validation_message_names_three_problems_at_most() -> None:
    body = {"threadId": 1, "runId": 2, "messages": [{"id": 3, "role": "user", "content": "x", "name": 4}]}
    error = refused(body)
    assert error.message == (
        "The request body is not an AG-UI RunAgentInput: 'threadId' must be a string; 'runId' must be a string; "
        "'messages[0].user.id' must be a string."
    )


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"role": "system", "content": 7}, "'messages[0].system.content' must be a string"),
        ({"role": "developer", "content": 7}, "'messages[0].developer.content' must be a string"),
        ({"role": "assistant", "content": 7}, "'messages[0].assistant.content' must be a string"),
        ({"role": "reasoning", "content": 7}, "'messages[0].reasoning.content' must be a string"),
        ({"role": "tool", "content": "x"}, "'messages[0].tool.toolCallId' is missing"),
        ({"role": "activity", "activityType": "a", "content": 7}, "'messages[0].activity.content' must be an object"),
        (
            {"role": "assistant", "toolCalls": [{**call("c"), "type": "nope"}]},
            "'messages[0].assistant.toolCalls[0].type' has an unsupported value",
        ),
        ({"content": "x"}, "'messages[0]' needs a 'role' or 'type'"),
    ],
)
def test_a_validation_message_names_the_role_a_problem_is_under(message, problem) -> None:
    error = refused({"threadId": "t", "runId": "r", "messages": [{"id": "1", **message}]})
    assert error.message == f"The request body is not an AG-UI RunAgentInput: {problem}."


# ------------------------------------------------------------------------------ the routes' protocols


def test_the_agent_route_offers_client_tools_and_the_workflow_route_does_not() -> None:
    body = json.dumps(run_input([user("a")], tools=[NOTICE_TOOL], threadId="t-9", runId="r-9")).encode()
    agent = AGENT_PROTOCOL.parse(body, "application/json", LIMITS)
    assert [t.name for t in agent.client_tools] == ["show_notice"]
    assert WORKFLOW_PROTOCOL.parse(body, "application/json", LIMITS).client_tools == ()
    encoder = AGENT_PROTOCOL.encoder(agent)
    assert (encoder.thread_id, encoder.run_id) == ("t-9", "r-9")
    assert not AGENT_PROTOCOL.resumable and not WORKFLOW_PROTOCOL.resumable


# ------------------------------------------------------------------------------ the encoder's other paths


def events_of(*stream: Any) -> list[dict[str, Any]]:
    encoder = AGUIEncoder(thread_id="t", run_id="r")
    return [json.loads(f) for f in data_frames(b"".join(encoder.encode(i, e) for i, e in enumerate(stream, 1)))]


def test_text_from_another_agent_with_no_step_between_is_another_message() -> None:
    events = events_of(TextDelta("a", "one"), TextDelta("b", "one"), TextDelta("c", "two"), TextDelta("d", "two"))
    assert [(e["type"], e.get("name"), e.get("delta")) for e in events] == [
        ("RUN_STARTED", None, None),
        ("TEXT_MESSAGE_START", "one", None),
        ("TEXT_MESSAGE_CONTENT", None, "a"),
        ("TEXT_MESSAGE_CONTENT", None, "b"),
        ("TEXT_MESSAGE_END", None, None),
        ("TEXT_MESSAGE_START", "two", None),
        ("TEXT_MESSAGE_CONTENT", None, "c"),
        ("TEXT_MESSAGE_CONTENT", None, "d"),
    ]
    ids = [e["messageId"] for e in events[1:]]
    assert ids[:4] == [ids[0]] * 4 and ids[4:] == [ids[4]] * 3 and ids[0] != ids[4]


def test_message_ids_count_up_under_one_prefix_per_stream() -> None:
    events = events_of(TextDelta("a", "w"), ToolResult("w", "c", "t", "r"), TextDelta("b", "w"))
    ids = [e["messageId"] for e in events if "messageId" in e]
    prefix = ids[0].rpartition("-")[0]
    assert len(prefix) == 16 and ids == [f"{prefix}-{n}" for n in (1, 1, 1, 2, 3, 3)]


def test_a_call_with_empty_arguments_has_no_args_event_and_string_arguments_go_as_they_are() -> None:
    events = events_of(ToolCall("w", "c1", "ping", ""), ToolCall("w", "c2", "echo", '{"a": 1}'))
    assert [e["type"] for e in events] == [
        "RUN_STARTED",
        *["TOOL_CALL_START", "TOOL_CALL_END"],
        *["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"],
    ]
    assert events[4]["delta"] == '{"a": 1}'
    parents = {e["parentMessageId"] for e in events if e["type"] == "TOOL_CALL_START"}
    assert len(parents) == 1, "calls in a row belong to one assistant message"


def test_a_step_its_end_or_a_result_ends_the_message_tool_calls_belong_to() -> None:
    for between in (AgentStarted("w"), AgentCompleted("w"), ToolResult("w", "c1", "ping", "pong")):
        events = events_of(ToolCall("w", "c1", "ping", {}), between, ToolCall("w", "c2", "ping", {}))
        first, second = (e["parentMessageId"] for e in events if e["type"] == "TOOL_CALL_START")
        prefix = first.rpartition("-")[0]
        assert first == f"{prefix}-1" and second.startswith(f"{prefix}-") and second != first, between


@pytest.mark.parametrize(
    ("end", "last"),
    [
        (AgentStarted("writer"), "STEP_STARTED"),
        (AgentCompleted("w"), "STEP_FINISHED"),
        (Done("offline", "m"), "RUN_FINISHED"),
        (Error("timeout", "Late."), "RUN_ERROR"),
        (ToolResult("w", "c", "t", "r"), "TOOL_CALL_RESULT"),
    ],
)
def test_an_open_message_is_closed_before_a_step_change_a_result_and_the_end(end: Any, last: str) -> None:
    events = events_of(TextDelta("Par", "w"), end)
    assert [e["type"] for e in events] == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        last,
    ]


def test_the_run_starts_with_the_protocol_version_the_spec_requires() -> None:
    assert events_of(Done("offline", "m"))[0] == {
        "type": "RUN_STARTED",
        "threadId": "t",
        "runId": "r",
        "protocolVersion": PROTOCOL_VERSION,
    }


def test_usage_names_only_the_counts_the_model_reported() -> None:
    (finished,) = [e for e in events_of(Done("openai", "m", {"total_tokens": 7})) if e["type"] == "RUN_FINISHED"]
    assert finished["usage"] == [{"provider": "openai", "model": "m", "totalTokens": 7}]
    (finished,) = [e for e in events_of(Done("openai", "m", {})) if e["type"] == "RUN_FINISHED"]
    assert "usage" not in finished


def test_a_result_settles_its_call_and_only_that_one() -> None:
    events = events_of(
        ToolCall("w", "c1", "ping", {}),
        ToolCall("w", "c2", "notice", {}),
        ToolResult("w", "c1", "ping", {"ok": True}),
        ToolResult("w", "c9", "other", "stray"),
        Done("offline", "m"),
    )
    assert events[-1]["outcome"] == {"type": "success", "pendingToolCallIds": ["c2"]}
    results = [e for e in events if e["type"] == "TOOL_CALL_RESULT"]
    assert [(r["toolCallId"], r["content"], r["role"]) for r in results] == [
        ("c1", '{"ok":true}', "tool"),
        ("c9", "stray", "tool"),
    ]
