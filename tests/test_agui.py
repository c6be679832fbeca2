"""AG-UI: the parser, the encoder, and both endpoints over real loopback
HTTP (offline model, and the fake OpenAI-compatible model), every stream
held to ``ag-ui-validate`` with 0 errors and 0 warnings."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from ag_ui.core import PROTOCOL_VERSION, Event
from ag_ui.encoder import EventEncoder
from ag_ui_validate.pytest_plugin import assert_valid_agui
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from settings import StreamSettings
from streaming.agui import PROTOCOL_VERSION as OUR_VERSION
from streaming.agui import (
    AGUIEncoder,
    declaration_tool,
    parse_run_input,
)
from streaming.events import AgentCompleted, AgentStarted, Done, Error, TextDelta, ToolCall, ToolResult
from streaming.request import RequestError
from tests.agui_support import (
    assert_well_formed,
    assistant_turn,
    data_frames,
    post_agui,
    run_input,
    user,
)
from tests.fake_openai import (
    FakeOpenAI,
    ResponseWriter,
    ScriptedResponse,
    error_response,
    hang,
    text_response,
    tool_call_response,
)
from tests.support import AppServer

LIMITS = StreamSettings(max_message_chars=200, max_body_bytes=4096, max_history_messages=6)
NOTICE_TOOL = {
    "name": "show_notice",
    "description": "Shows a notice in the app.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}
EVENTS = TypeAdapter(Event)


def parse(body: dict, limits: StreamSettings = LIMITS, **kw):
    return parse_run_input(json.dumps(body).encode(), "application/json", limits, **kw)


def refused(body: bytes | dict, content_type: str = "application/json") -> RequestError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(RequestError) as caught:
        parse_run_input(raw, content_type, LIMITS)
    return caught.value


# ------------------------------------------------------------------------------------------ the encoder


def encode_all(events, thread_id: str = "t-1", run_id: str = "r-1") -> bytes:
    encoder = AGUIEncoder(thread_id=thread_id, run_id=run_id)
    return b"".join(encoder.encode(i, e) for i, e in enumerate(events, 1))


RUN = [
    AgentStarted("weather"),
    TextDelta("Let me check ", "weather"),
    TextDelta('"quoted" ü 雪 \u2028 \n\t\x01 ', "weather"),
    TextDelta("", "weather"),
    ToolCall("weather", "call_1", "get_weather", {"location": "Oslo"}),
    ToolCall("weather", "call_2", "show_notice", {"text": "Hi"}),
    ToolResult("weather", "call_1", "get_weather", {"location": "Oslo", "temperature_c": -2}),
    TextDelta("Oslo: snow.", "weather"),
    AgentCompleted("weather"),
    Done("openai", "gpt-x", {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}),
]


def test_our_protocol_version_is_the_pinned_packages() -> None:
    assert OUR_VERSION == PROTOCOL_VERSION


@pytest.mark.parametrize("end", [RUN[-1], Error("upstream_error", "The model service failed to answer.")])
def test_each_event_is_byte_for_byte_what_the_protocols_encoder_writes(end) -> None:
    raw = encode_all([*RUN[:-1], end]).decode()
    # The one difference: like our other encoders, the line breaks that line
    # readers (httpx, str.splitlines) split on are escaped; the JSON is the same.
    assert "\u2028" not in raw and "\\u2028" in raw
    frames = raw.split("\n\n")
    assert frames.pop() == ""
    for frame in frames:
        assert frame.startswith("data: ")
        event = EVENTS.validate_json(frame[6:])  # the protocol's own model accepts it...
        theirs = EventEncoder().encode(event).translate({0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\u0085"})
        assert theirs == frame + "\n\n"  # ...and writes the same bytes


def test_a_lone_surrogate_from_the_model_does_not_break_the_stream() -> None:
    events = [json.loads(f) for f in data_frames(encode_all([TextDelta("a\ud800b", "w"), TextDelta("\udfff", "w")]))]
    assert [e.get("delta") for e in events if e["type"] == "TEXT_MESSAGE_CONTENT"] == ["a\ufffdb", "\ufffd"]


def test_the_encoder_opens_closes_and_names_what_clients_need() -> None:
    events = [json.loads(f) for f in data_frames(encode_all(RUN))]
    assert_valid_agui(events, max_warnings=0)
    types = [e["type"] for e in events]
    assert types == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",  # the empty delta is not sent
        "TEXT_MESSAGE_END",  # closed before the tool call
        *["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"] * 2,
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",  # closed before the step ends
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    first_text, second_text = (e["messageId"] for e in events if e["type"] == "TEXT_MESSAGE_START")
    assert first_text != second_text
    starts = [e for e in events if e["type"] == "TOOL_CALL_START"]
    assert {e["parentMessageId"] for e in starts} == {first_text}  # both calls belong to the message before
    assert json.loads(next(e for e in events if e["type"] == "TOOL_CALL_ARGS")["delta"]) == {"location": "Oslo"}
    (result,) = [e for e in events if e["type"] == "TOOL_CALL_RESULT"]
    assert json.loads(result["content"]) == {"location": "Oslo", "temperature_c": -2}
    assert result["messageId"] not in (first_text, second_text)
    assert events[-1] == {
        "type": "RUN_FINISHED",
        "threadId": "t-1",
        "runId": "r-1",
        "outcome": {"type": "success", "pendingToolCallIds": ["call_2"]},  # no result: the client's to run
        "usage": [{"provider": "openai", "model": "gpt-x", "inputTokens": 10, "outputTokens": 5, "totalTokens": 15}],
    }


def test_an_error_closes_the_open_message_and_is_the_last_event() -> None:
    events = [
        json.loads(f)
        for f in data_frames(
            encode_all([AgentStarted("weather"), TextDelta("Par", "weather"), Error("timeout", "Late.")])
        )
    ]
    assert_valid_agui(events, max_warnings=0)
    assert [e["type"] for e in events][-2:] == ["TEXT_MESSAGE_END", "RUN_ERROR"]
    assert events[-1] == {"type": "RUN_ERROR", "message": "Late.", "code": "timeout"}


def test_an_error_before_anything_else_still_starts_the_run() -> None:
    events = [json.loads(f) for f in data_frames(encode_all([Error("internal_error", "The run failed.")]))]
    assert [e["type"] for e in events] == ["RUN_STARTED", "RUN_ERROR"]
    assert_valid_agui(events, max_warnings=0)


def test_two_agents_text_are_separate_messages_and_a_result_starts_a_new_one() -> None:
    run = [
        AgentStarted("researcher"),
        ToolCall("researcher", "c1", "get_weather", {}),
        ToolResult("researcher", "c1", "get_weather", "plain text", is_error=True),
        TextDelta("found", "researcher"),
        AgentCompleted("researcher"),
        AgentStarted("writer"),
        TextDelta("wrote", "writer"),
        AgentCompleted("writer"),
        Done("offline", "offline-demo"),
    ]
    events = [json.loads(f) for f in data_frames(encode_all(run))]
    assert_valid_agui(events, max_warnings=0)
    starts = [e for e in events if e["type"] == "TEXT_MESSAGE_START"]
    assert [s["name"] for s in starts] == ["researcher", "writer"]
    call = next(e for e in events if e["type"] == "TOOL_CALL_START")
    assert call["parentMessageId"] not in {s["messageId"] for s in starts}  # a call with no text gets its own
    assert next(e for e in events if e["type"] == "TOOL_CALL_RESULT")["content"] == "plain text"
    assert events[-1] == {"type": "RUN_FINISHED", "threadId": "t-1", "runId": "r-1"}  # no usage, none pending


def test_message_ids_differ_between_streams() -> None:
    one, two = (encode_all([TextDelta("a", "weather")]) for _ in range(2))
    assert json.loads(data_frames(one)[1])["messageId"] != json.loads(data_frames(two)[1])["messageId"]


# ------------------------------------------------------------------------------------------ the parser


def test_a_whole_conversation_maps_to_agent_framework_messages() -> None:
    body = run_input(
        [
            {"id": "s", "role": "system", "content": "Be brief."},
            {"id": "d", "role": "developer", "content": "Use metric units."},
            {
                "id": "u1",
                "role": "user",
                "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}],
            },
            {
                "id": "a1",
                "role": "assistant",
                "content": "Checking.",
                "toolCalls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Oslo"}'},
                    }
                ],
            },
            {"id": "t1", "role": "tool", "toolCallId": "c1", "content": '{"location":"Oslo"}'},
            {"id": "x", "role": "activity", "activityType": "progress", "content": {"done": 1}},
            {"id": "u2", "role": "user", "content": "And Paris?"},
        ],
        context=[{"description": "The user's city", "value": "Bergen"}],
    )
    request = parse(body)
    assert (request.thread_id, request.run_id) == (body["threadId"], body["runId"])
    messages = request.to_messages()
    assert [m.role for m in messages] == ["system", "system", "system", "user", "assistant", "tool", "user"]
    assert "The user's city: Bergen" in messages[0].text  # context reaches the model
    assert messages[3].text == "Weather in Oslo?"
    text, call = messages[4].contents
    assert (text.text, call.type, call.call_id, call.name) == ("Checking.", "function_call", "c1", "get_weather")
    assert call.parse_arguments() == {"location": "Oslo"}
    (result,) = messages[5].contents
    assert (result.type, result.call_id, result.result) == ("function_result", "c1", '{"location":"Oslo"}')
    assert request.client_tools == ()


def test_calls_left_unanswered_get_a_failed_result_and_stray_results_are_dropped() -> None:
    """The model services refuse a call without a result and a result
    without a call: a thread where the user typed on past a client tool,
    or whose stream was cut, must still go on."""
    call = {"id": "c1", "type": "function", "function": {"name": "show_notice", "arguments": "{}"}}
    body = run_input(
        [
            user("show a notice"),
            {"id": "a1", "role": "assistant", "toolCalls": [call]},
            user("never mind, weather in Oslo?"),
            {"id": "t1", "role": "tool", "toolCallId": "c1", "content": "late"},  # the conversation went on
            {"id": "t2", "role": "tool", "toolCallId": "nope", "content": "stray"},
            {"id": "a2", "role": "assistant", "toolCalls": [{**call, "id": "c2"}]},
        ]
    )
    messages = parse(body).to_messages()
    assert [m.role for m in messages] == ["user", "assistant", "tool", "user", "assistant", "tool"]
    for message, call_id in ((messages[2], "c1"), (messages[5], "c2")):
        (result,) = message.contents
        assert result.call_id == call_id and result.exception and "not answered" in result.result
    kept = str([c.result for m in messages for c in m.contents if c.type == "function_result"])
    assert "late" not in kept and "stray" not in kept


def test_client_tools_become_cached_declaration_only_tools() -> None:
    body = run_input([user("hi")], tools=[NOTICE_TOOL])
    (tool,) = parse(body).client_tools
    assert (tool.name, tool.description, tool.func) == ("show_notice", "Shows a notice in the app.", None)
    assert tool.parameters() == NOTICE_TOOL["parameters"]
    (again,) = parse(run_input([user("hello")], tools=[NOTICE_TOOL])).client_tools
    assert again is tool  # not rebuilt per request
    assert declaration_tool.cache_info().currsize >= 1
    assert parse(body, client_tools=False).client_tools == ()  # the workflow ignores them


SECRET = "SECRET-do-not-echo-41"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_encoding"),
        (b"[1, 2]", 400, "invalid_body"),
        ({"threadId": [SECRET], "runId": "r", "messages": []}, 400, "invalid_run_input"),
        (
            {"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": SECRET, "content": "x"}]},
            400,
            "invalid_run_input",
        ),
        (
            {"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "user", "content": 7}]},
            400,
            "invalid_run_input",
        ),
        (run_input([{"id": "1", "role": "user", "content": [{"type": SECRET}]}]), 400, "invalid_run_input"),
        (run_input([]), 400, "missing_message"),
        (run_input([{"id": "s", "role": "system", "content": "only a system message"}]), 400, "missing_message"),
        (run_input([user("x" * 201)]), 413, "message_too_long"),
        (run_input([user("x")] * 8), 413, "too_many_messages"),
        (run_input([user("a\x00b")]), 400, "invalid_message"),
        (
            run_input(
                [
                    user("look"),
                    {
                        "id": "i",
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "value": "http://x/y.png"}}],
                    },
                ]
            ),
            400,
            "unsupported_content",
        ),
        (run_input([user("x")], tools=[{**NOTICE_TOOL, "name": "get_weather"}]), 400, "invalid_tool"),
        (run_input([user("x")], tools=[NOTICE_TOOL, NOTICE_TOOL]), 400, "invalid_tool"),
        (run_input([user("x")], tools=[{**NOTICE_TOOL, "name": "has space"}]), 400, "invalid_tool"),
        (run_input([user("x")], tools=[{**NOTICE_TOOL, "parameters": [1]}]), 400, "invalid_tool"),
        (
            run_input([user("x")], tools=[{"name": f"t{i}", "description": ""} for i in range(65)]),
            413,
            "too_many_tools",
        ),
        (run_input([user("x")], context=[{"description": "d", "value": "v" * 201}]), 413, "message_too_long"),
        ({"thread_id": "t", "run_id": "r", "messages": [{"id": "1", "role": "user", "content": "hi"}]}, None, None),
    ],
)
def test_bad_input_is_a_clear_4xx_that_never_echoes_it(body, status, code) -> None:
    if status is None:  # snake_case (Agent Framework's AGUIChatClient sends it) is a RunAgentInput too
        assert parse(body).to_messages()[-1].text == "hi"
        return
    error = refused(body)
    assert (error.status, error.code) == (status, code)
    assert SECRET not in error.message and "http://x" not in error.message
    assert error.message.endswith(".") and "Traceback" not in error.message


def test_not_json_media_type_and_oversized_bodies_are_refused() -> None:
    assert refused(run_input([user("hi")]), "text/plain").status == 415
    big = json.dumps(run_input([user("x" * 150)] * 5)).encode() + b" " * 4096
    assert (refused(big).status, refused(big).code) == (413, "body_too_large")


def test_a_validation_message_names_where_and_what() -> None:
    error = refused({"threadId": "t", "messages": [{"id": "1", "role": "user"}]})
    assert error.message == (
        "The request body is not an AG-UI RunAgentInput: 'runId' is missing; 'messages[0].user.content' is missing."
    )


# ------------------------------------------------------------------------------------------ offline, end to end

WEATHER = "What is the weather in Oslo?"


def test_agent_weather_question_streams_a_valid_run(offline_app: AppServer) -> None:
    body = run_input([user(WEATHER)])
    result = post_agui(f"{offline_app.url}/api/agent/ag-ui", body)
    assert_well_formed(result, body)
    (start,) = result.of("TOOL_CALL_START")
    assert start["toolCallName"] == "get_weather" and start["parentMessageId"]
    (args,) = result.of("TOOL_CALL_ARGS")
    assert json.loads(args["delta"]) == {"location": "Oslo"}
    (tool_result,) = result.of("TOOL_CALL_RESULT")
    assert tool_result["toolCallId"] == start["toolCallId"] and json.loads(tool_result["content"])["location"] == "Oslo"
    assert "Oslo:" in result.text() and len(result.of("TEXT_MESSAGE_CONTENT")) > 5  # word by word
    assert [e["stepName"] for e in result.of("STEP_STARTED")] == ["weather"]
    finished = result.events[-1]
    assert finished["type"] == "RUN_FINISHED" and "outcome" not in finished
    assert finished["usage"][0]["provider"] == "offline" and finished["usage"][0]["totalTokens"] > 0


def test_a_second_turn_built_from_the_first_ones_events(offline_app: AppServer) -> None:
    url = f"{offline_app.url}/api/agent/ag-ui"
    first_body = run_input([user(WEATHER)])
    first = post_agui(url, first_body)
    history = [*first_body["messages"], *assistant_turn(first), user("And in Paris?")]
    second_body = run_input(history, threadId=first_body["threadId"])
    second = post_agui(url, second_body)
    assert_well_formed(second, second_body)
    (call,) = second.of("TOOL_CALL_ARGS")
    assert json.loads(call["delta"]) == {"location": "Paris"}
    assert "Paris:" in second.text() and "Oslo" not in second.text()


def test_workflow_steps_wrap_each_agent(offline_app: AppServer) -> None:
    body = run_input([user("Research the weather in Oslo and write a poem")], tools=[NOTICE_TOOL])
    result = post_agui(f"{offline_app.url}/api/workflow/ag-ui", body)
    assert_well_formed(result, body)
    steps = [(e["type"], e["stepName"]) for e in result.events if e["type"].startswith("STEP_")]
    assert steps == [
        ("STEP_STARTED", "researcher"),
        ("STEP_FINISHED", "researcher"),
        ("STEP_STARTED", "writer"),
        ("STEP_FINISHED", "writer"),
    ]
    starts = result.of("TEXT_MESSAGE_START")
    assert [s["name"] for s in starts] == ["researcher", "writer"]
    assert "Oslo" in result.text(starts[1]["messageId"])  # the writer wrote from the research
    writer_step = result.types.index("STEP_STARTED", 2)
    assert result.types.index("TEXT_MESSAGE_START", writer_step) > writer_step
    assert [e["toolCallName"] for e in result.of("TOOL_CALL_START")] == ["get_weather"]  # client tools ignored
    assert "outcome" not in result.events[-1]


def test_client_tool_round_trip_beside_a_server_tool(offline_app: AppServer) -> None:
    url = f"{offline_app.url}/api/agent/ag-ui"
    ask = user('What is the weather in Oslo? Then please show_notice {"text": "Pack a coat"}')
    first_body = run_input([ask], tools=[NOTICE_TOOL])
    first = post_agui(url, first_body)
    assert_well_formed(first, first_body)
    weather, notice = first.of("TOOL_CALL_START")
    assert (weather["toolCallName"], notice["toolCallName"]) == ("get_weather", "show_notice")
    assert json.loads(first.of("TOOL_CALL_ARGS")[1]["delta"]) == {"text": "Pack a coat"}
    assert [r["toolCallId"] for r in first.of("TOOL_CALL_RESULT")] == [weather["toolCallId"]]  # server tool only
    assert first.events[-1]["outcome"] == {"type": "success", "pendingToolCallIds": [notice["toolCallId"]]}

    # The front end runs its tool and sends the conversation on, with the result.
    answer = {"id": "t-notice", "role": "tool", "toolCallId": notice["toolCallId"], "content": "shown"}
    second_body = run_input([ask, *assistant_turn(first), answer], tools=[NOTICE_TOOL])
    second = post_agui(url, second_body)
    assert_well_formed(second, second_body)
    assert second.of("TOOL_CALL_START") == []
    assert "Oslo:" in second.text() and "show_notice tool answered: shown" in second.text()
    assert "outcome" not in second.events[-1]


def test_bad_requests_over_http(offline_client: httpx.Client) -> None:
    post = offline_client.post
    response = post("/api/agent/ag-ui", content=b"{", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_json")
    response = post("/api/workflow/ag-ui", content=b"hi", headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_media_type")
    response = post("/api/agent/ag-ui", json={"threadId": "t"})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_run_input")
    response = post("/api/agent/ag-ui", content=b"x" * 300_000, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")
    assert offline_client.get("/api/agent/ag-ui").status_code in (404, 405)


# ------------------------------------------------------------------------------------------ over the model's wire

KEY = "test-key-agui"


class EndlessAnswer(ScriptedResponse):
    """A model that keeps writing, one word every ``delay``, until its caller
    hangs up: it is still writing when the first word reaches the client
    however slow the machine is (a finite answer can be over by then)."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.words_sent = 0

    async def play(self, writer: ResponseWriter) -> None:
        role, word = text_response(["word0"]).chunks(writer)[:2]
        await writer.start(200)
        await writer.send_event(role)
        while True:
            await writer.sleep(self.delay)
            word["choices"][0]["delta"]["content"] = f" word{self.words_sent}"
            await writer.send_event(word)
            self.words_sent += 1


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(request) -> Iterator[None]:
    if "fake" not in request.fixturenames:
        yield
        return
    with request.getfixturevalue("fake").fresh():
        yield


@pytest.fixture(scope="module")
def model_app(fake: FakeOpenAI) -> Iterator[AppServer]:
    values = {
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": KEY,
        "OPENAI_MODEL": "fake-model",
        "MODEL_MAX_RETRIES": "0",
    }
    with AppServer(values) as server:
        yield server


def test_over_the_model_wire_client_tools_context_and_history_reach_the_model(fake: FakeOpenAI, model_app) -> None:
    fake.enqueue(
        tool_call_response(
            [("get_weather", {"location": "Oslo"}, "call_w"), ("show_notice", {"text": "Coat"}, "call_n")], fragments=3
        )
    )
    ask = user("Weather in Oslo, and show a notice")
    body = run_input([ask], tools=[NOTICE_TOOL], context=[{"description": "Units", "value": "metric"}])
    first = post_agui(f"{model_app.url}/api/agent/ag-ui", body)
    assert_well_formed(first, body)
    assert [json.loads(a["delta"]) for a in first.of("TOOL_CALL_ARGS")] == [{"location": "Oslo"}, {"text": "Coat"}]
    assert first.events[-1]["outcome"]["pendingToolCallIds"] == ["call_n"]
    (offered,) = fake.requests
    tools = {t["function"]["name"]: t["function"] for t in offered.tools}
    assert tools["show_notice"]["parameters"] == NOTICE_TOOL["parameters"]
    assert tools["show_notice"]["description"] == NOTICE_TOOL["description"]
    assert any("Units: metric" in str(m.get("content")) for m in offered.messages if m["role"] == "system")
    assert len(fake.requests) == 1, "the pending client call ends the run: no second model call"

    fake.enqueue(text_response(["Oslo", " is", " cold", "."], usage={"prompt_tokens": 30, "completion_tokens": 4}))
    answer = {"id": "t-n", "role": "tool", "toolCallId": "call_n", "content": "shown"}
    second_body = run_input([ask, *assistant_turn(first), answer], tools=[NOTICE_TOOL])
    second = post_agui(f"{model_app.url}/api/agent/ag-ui", second_body)
    assert_well_formed(second, second_body)
    assert second.text() == "Oslo is cold."
    assert [c["delta"] for c in second.of("TEXT_MESSAGE_CONTENT")] == ["Oslo", " is", " cold", "."]
    assert second.events[-1]["usage"][0]["inputTokens"] == 30
    sent = fake.requests[-1].messages
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_w", "call_n"]
    results = {m["tool_call_id"]: m["content"] for m in sent if m["role"] == "tool"}
    assert results["call_n"] == "shown" and json.loads(results["call_w"])["location"] == "Oslo"


@pytest.mark.parametrize("path", ["/api/agent/ag-ui", "/api/workflow/ag-ui"])
def test_a_model_failure_is_one_run_error_and_nothing_after(fake: FakeOpenAI, model_app, path: str) -> None:
    fake.enqueue(error_response(500))
    body = run_input([user("Weather in Oslo?")])
    result = post_agui(f"{model_app.url}{path}", body)
    assert_well_formed(result, body)
    assert result.events[-1] == {
        "type": "RUN_ERROR",
        "message": "The model service failed to answer.",
        "code": "upstream_error",
    }
    assert result.types.count("RUN_ERROR") == 1 and "RUN_FINISHED" not in result.types
    # Client tools are per request: an earlier request's never stay on the shared agent.
    assert [t["function"]["name"] for t in fake.requests[0].tools] == ["get_weather"]


def test_bad_input_never_reaches_the_model(fake: FakeOpenAI, model_app) -> None:
    url = f"{model_app.url}/api/agent/ag-ui"
    for body in (b"{", json.dumps({"threadId": "t", "runId": "r", "messages": []}).encode()):
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400
    assert fake.requests == []


def test_text_arrives_token_by_token_and_leaving_stops_the_model(fake: FakeOpenAI, model_app) -> None:
    fake.enqueue(EndlessAnswer())
    body = json.dumps(run_input([user("Tell me a long story")])).encode()
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", f"{model_app.url}/api/agent/ag-ui", content=body, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        assert response.status_code == 200
        seen = []
        for line in response.iter_lines():
            seen.append(line)
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "TEXT_MESSAGE_CONTENT":
                break
        # The first piece of text is here while the model is still writing the rest (an answer
        # without end: only the app can have closed it, and the client has not left yet).
        assert (fake.open_streams, fake.cancelled_streams, len(fake.requests)) == (1, 0, 1), (seen, fake.errors)
        assert json.loads(seen[-1][6:])["delta"].strip() == "word0"
    closed_at = time.monotonic()
    assert fake.wait_until(lambda f: f.cancelled_streams >= 1, 2.0), "the model call was not cancelled"
    assert time.monotonic() - closed_at < 2.0
    assert fake.wait_for_no_open_streams(2.0)


def test_the_wire_contract_agent_frameworks_agui_chat_client_relies_on(offline_app: AppServer) -> None:
    """``agent-framework-ag-ui``'s ``AGUIChatClient`` cannot be installed
    beside this app (it pins ``ag-ui-protocol<0.2`` and ``fastapi<0.142``),
    so this sends what its ``AGUIHttpService.post_run`` sends (snake_case
    ids, ``tool_calls``, no context or state) and checks the fields its
    ``AGUIEventConverter`` reads from the ``data:`` lines."""
    history = [
        {"id": "m1", "role": "user", "content": "What is the weather in Oslo?"},
        {
            "id": "m2",
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
                }
            ],
        },
        {"id": "m3", "role": "tool", "content": '{"location": "Oslo", "conditions": "windy"}', "toolCallId": "c1"},
        {"id": "m4", "role": "assistant", "content": "Oslo: windy."},
        {"id": "m5", "role": "user", "content": "And in Paris?"},
    ]
    body = {"thread_id": "thread_af", "run_id": "run_af", "messages": history, "tools": [NOTICE_TOOL]}
    result = post_agui(f"{offline_app.url}/api/agent/ag-ui", body)
    started = result.events[0]
    assert (started["threadId"], started["runId"]) == ("thread_af", "run_af")
    (call,) = result.of("TOOL_CALL_START")
    assert call["toolCallName"] == "get_weather" and call["toolCallId"] and call["parentMessageId"]
    assert json.loads("".join(a["delta"] for a in result.of("TOOL_CALL_ARGS"))) == {"location": "Paris"}
    (tool_result,) = result.of("TOOL_CALL_RESULT")
    assert tool_result["toolCallId"] == call["toolCallId"] and "Paris" in tool_result["content"]
    assert all(e["messageId"] and e["delta"] for e in result.of("TEXT_MESSAGE_CONTENT"))
    assert "Paris:" in result.text()
    assert result.events[-1]["type"] == "RUN_FINISHED" and result.events[-1]["threadId"] == "thread_af"


def test_a_silent_model_gets_heartbeats_then_the_deadline_ends_the_run(fake: FakeOpenAI) -> None:
    """The run's deadline and heartbeat are the shared pipeline's: a model
    that sends headers and then nothing gets ``: ping`` comments between
    the events, then one ``RUN_ERROR`` ``timeout``, and its call closed."""
    values = {"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "fake-model"}
    fake.enqueue(hang(headers=True))
    # 3 s: a server's first run loads the framework inside its deadline (a
    # second or more of CPU on a busy machine), which sends no pings.
    with AppServer({**values, "RUN_DEADLINE_SECONDS": "3", "HEARTBEAT_SECONDS": "0.05"}) as app:
        body = run_input([user("Weather in Oslo?")])
        result = post_agui(f"{app.url}/api/agent/ag-ui", body)  # validated with the comments in it
    assert_well_formed(result, body)
    assert result.events[-1] == {
        "type": "RUN_ERROR",
        "message": "The run did not finish within 3 seconds.",
        "code": "timeout",
    }
    lines = result.body.decode().split("\n")
    step = next(i for i, line in enumerate(lines) if "STEP_STARTED" in line)
    end = next(i for i, line in enumerate(lines) if "RUN_ERROR" in line)
    assert lines[step:end].count(": ping") >= 3
    assert fake.wait_for_no_open_streams(2.0) and fake.cancelled_streams == 1


async def test_the_offline_model_calls_a_client_tool_only_when_the_message_names_it() -> None:
    from agent_framework import Message

    from agents import build_weather_agent
    from llm.offline import OfflineChatClient

    agent = build_weather_agent(OfflineChatClient(delay=0))
    notice = declaration_tool("show_notice", "Shows a notice.", json.dumps(NOTICE_TOOL["parameters"], sort_keys=True))

    async def calls(text: str) -> list[tuple[str, dict]]:
        stream = agent.run([Message(role="user", contents=[text])], stream=True, tools=[notice])
        found = {}
        async for update in stream:
            for content in update.contents:
                if content.type == "function_call" and content.arguments:
                    found[content.call_id] = (content.name, content.parse_arguments())
        return list(found.values())

    # The JSON after the name is the arguments; its capitalised words are not places.
    assert await calls('Please show_notice {"text": "Hello Bob"}') == [("show_notice", {"text": "Hello Bob"})]
    assert await calls("Please run show_notice, and the weather in Lima") == [
        ("get_weather", {"location": "Lima"}),
        ("show_notice", {}),
    ]
    assert await calls("What do show_notices do?") == []  # not its name


def test_a_call_the_user_went_past_reaches_the_model_answered(fake: FakeOpenAI, model_app) -> None:
    fake.enqueue(text_response(["Fine", "."]))
    call = {"id": "c1", "type": "function", "function": {"name": "show_notice", "arguments": '{"text": "x"}'}}
    history = [user("show a notice"), {"id": "a1", "role": "assistant", "toolCalls": [call]}, user("never mind")]
    body = run_input(history, tools=[NOTICE_TOOL])
    result = post_agui(f"{model_app.url}/api/agent/ag-ui", body)
    assert_well_formed(result, body)
    assert result.text() == "Fine."
    sent = fake.requests[0].messages
    roles = [m["role"] for m in sent]
    assert roles[-4:] == ["user", "assistant", "tool", "user"]
    assert sent[-2]["tool_call_id"] == "c1" and "not answered" in sent[-2]["content"]


def test_a_browser_on_an_allowed_origin_may_post_with_a_function_key(offline_client: httpx.Client) -> None:
    """CORS for browser front ends: locally ``Host.CORS`` (here
    ``http://allowed.example``), in Azure the function app's CORS list."""
    preflight = offline_client.options(
        "/api/agent/ag-ui",
        headers={
            "Origin": "http://allowed.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-functions-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://allowed.example"
    assert "x-functions-key" in preflight.headers["access-control-allow-headers"].lower()
    other = offline_client.options(
        "/api/agent/ag-ui",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
_ids = st.sampled_from(["c1", "c2", "c3"])
_text_content = st.text(max_size=30) | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}), max_size=2
)
_call = st.fixed_dictionaries(
    {
        "id": _ids,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.text(max_size=8), "arguments": st.text(max_size=20)}),
    }
)
_message = st.one_of(
    st.fixed_dictionaries({"id": st.text(max_size=4), "role": st.just("user"), "content": _text_content}),
    st.fixed_dictionaries(
        {"id": st.text(max_size=4), "role": st.sampled_from(["system", "developer"]), "content": st.text(max_size=9)}
    ),
    st.fixed_dictionaries(
        {"id": st.text(max_size=4), "role": st.just("assistant")},
        optional={"content": st.text(max_size=20), "toolCalls": st.lists(_call, max_size=3)},
    ),
    st.fixed_dictionaries(
        {"id": st.text(max_size=4), "role": st.just("tool"), "toolCallId": _ids, "content": _text_content},
        optional={"error": st.text(max_size=5)},
    ),
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=4),
            "role": st.just("activity"),
            "activityType": st.text(max_size=5),
            "content": st.just({}),
        }
    ),
    st.dictionaries(st.sampled_from(["id", "role", "content", "toolCalls"]), _json_values, max_size=4),  # anything
)
_run_inputs = st.fixed_dictionaries(
    {"threadId": st.text(max_size=5), "runId": st.text(max_size=5), "messages": st.lists(_message, max_size=8)},
    optional={
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["show_notice", "get_weather", "x y", ""]) | st.text(max_size=6),
                    "description": st.text(max_size=10),
                },
                optional={"parameters": _json_values},
            ),
            max_size=3,
        ),
        "context": st.lists(
            st.fixed_dictionaries({"description": st.text(max_size=5), "value": st.text(max_size=5)}), max_size=2
        ),
        "state": _json_values,
        "forwardedProps": _json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(_run_inputs.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_the_parser_answers_anything_with_a_request_or_a_documented_4xx(body: bytes) -> None:
    try:
        request = parse_run_input(body, "application/json", LIMITS)
    except RequestError as err:
        assert err.status in (400, 413, 415) and err.code and err.message
    else:
        messages = request.to_messages()
        assert any(m.role == "user" and m.text.strip() for m in messages)
        # Every call has its result right after the message that made it, and no result is stray.
        open_calls: set[str] = set()
        for message in messages:
            calls = {c.call_id for c in message.contents if c.type == "function_call"}
            results = {c.call_id for c in message.contents if c.type == "function_result"}
            if message.role == "tool":
                assert results <= open_calls
                open_calls -= results
            else:
                assert not open_calls
                open_calls = calls
        assert not open_calls
