"""Model servers as they are. Each quirk of a real OpenAI-compatible server
(Ollama, llama.cpp, vLLM, LM Studio) or of Azure OpenAI, played by the fake
model (tests/fake_openai.py) over real loopback HTTP, against both the agent
and the workflow endpoint: no tool call lost, and a cut answer says why."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_openai import (
    Completion,
    FakeOpenAI,
    Quirks,
    ToolCall,
    content_filter_error,
    text_response,
    tool_call_response,
)
from tests.support import AppServer, SSEEvent, stream_events, text_of
from tests.test_e2e_offline import assert_contract

KEY = "quirks-key-51c2"
DEPLOYMENT = "chat-deploy"
ENDPOINTS = ["agent", "workflow"]
# The agent that talks to the model first: the weather agent, or the workflow's researcher.
FIRST = {"agent": "weather", "workflow": "researcher"}
WRITER_TEXT = "A short brief from the research."


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeOpenAI) -> Iterator[None]:
    with fake.fresh():
        yield


@pytest.fixture(scope="module")
def openai_app(fake: FakeOpenAI) -> Iterator[AppServer]:
    """An OpenAI-compatible server (Ollama, llama.cpp, vLLM, LM Studio): no retries to hide a fault."""
    values = {
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": KEY,
        "OPENAI_MODEL": "local-model",
        "MODEL_MAX_RETRIES": "0",
    }
    with AppServer(values) as server:
        yield server


@pytest.fixture(scope="module")
def azure_app(fake: FakeOpenAI) -> Iterator[AppServer]:
    values = {
        "AZURE_OPENAI_ENDPOINT": fake.azure_endpoint,
        "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": DEPLOYMENT,
        "AZURE_OPENAI_API_KEY": KEY,
        "MODEL_MAX_RETRIES": "0",
    }
    with AppServer(values) as server:
        yield server


def run(fake: FakeOpenAI, app: AppServer, endpoint: str, *model_turns: Completion, writer: bool = True):
    """Script the model (for the workflow the writer answers last, unless
    ``writer`` is false), stream one run, hold it to the contract."""
    fake.enqueue(*model_turns)
    if endpoint == "workflow" and writer:
        fake.enqueue(text_response(WRITER_TEXT))
    with httpx.Client(base_url=app.url, timeout=30) as client:
        response, events = stream_events(
            client, f"/api/{endpoint}/stream", json_body={"message": "Weather in Seattle and Paris?"}
        )
    assert response.status_code == 200
    assert_contract(events)
    return events


def assert_calls_paired(events: list[SSEEvent], locations: list[str]) -> list[dict]:
    """The rule: every call the model made has exactly one ``tool_call``,
    before exactly one ``tool_result`` under the same non-empty id, unique
    in the run; and the result is the one for that call's arguments."""
    calls = [e.data for e in events if e.event == "tool_call"]
    results = [e.data for e in events if e.event == "tool_result"]
    ids = [call["call_id"] for call in calls]
    assert all(isinstance(call_id, str) and call_id for call_id in ids), ids
    assert len(set(ids)) == len(ids), f"ids repeat within the run: {ids}"
    assert sorted(result["call_id"] for result in results) == sorted(ids), (ids, results)
    assert [call["arguments"]["location"] for call in calls] == locations
    positions = {
        (e.event, e.data["call_id"]): i for i, e in enumerate(events) if e.event in ("tool_call", "tool_result")
    }
    by_id = {call["call_id"]: call for call in calls}
    for result in results:
        call = by_id[result["call_id"]]
        assert positions["tool_call", call["call_id"]] < positions["tool_result", call["call_id"]]
        assert (result["name"], result["is_error"]) == (call["name"], False)
        assert result["result"]["location"] == call["arguments"]["location"], "a result answers another call"
    return calls


def ends_done(events: list[SSEEvent], finish_reason: str = "stop") -> dict:
    assert events[-1].event == "done", events[-1]
    assert events[-1].data["finish_reason"] == finish_reason
    return events[-1].data


def step(location: str, quirks: Quirks, **kwargs) -> Completion:
    """One model turn that calls get_weather for ``location``."""
    return tool_call_response([("get_weather", {"location": location})], quirks=quirks, **kwargs)


# -- tool-call ids ------------------------------------------------------------------------------

ID_QUIRKS = {
    "reused across steps (call_0 every response)": "numbered",
    "empty": "empty",
    "missing": "missing",
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("call_ids", list(ID_QUIRKS.values()), ids=list(ID_QUIRKS))
def test_every_call_is_paired_with_its_result_whatever_the_ids(
    fake: FakeOpenAI, openai_app: AppServer, endpoint: str, call_ids: str
) -> None:
    quirks = Quirks(call_ids=call_ids)  # type: ignore[arg-type]
    events = run(fake, openai_app, endpoint, step("Seattle", quirks), step("Paris", quirks), text_response("Done."))
    calls = assert_calls_paired(events, ["Seattle", "Paris"])
    assert {call["agent"] for call in calls} == {FIRST[endpoint]}
    if call_ids == "numbered":
        assert calls[0]["call_id"] == "call_0", "the model's id is kept while it is unique in the run"
    ends_done(events)
    # The model was told which result answers which of its calls, as it named them.
    third = fake.requests[2].messages
    assert [m["role"] for m in third[-4:]] == ["assistant", "tool", "assistant", "tool"]
    assert json.loads(third[-3]["content"])["location"] == "Seattle"
    assert json.loads(third[-1]["content"])["location"] == "Paris"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_numbered_ids_with_parallel_calls_then_again(fake: FakeOpenAI, openai_app: AppServer, endpoint: str) -> None:
    quirks = Quirks(call_ids="numbered")
    both = tool_call_response([("get_weather", {"location": "Seattle"}), ("get_weather", {"location": "Paris"})])
    both = Completion(tool_calls=both.tool_calls, quirks=quirks)
    events = run(fake, openai_app, endpoint, both, step("Oslo", quirks), text_response("Done."))
    calls = assert_calls_paired(events, ["Seattle", "Paris", "Oslo"])
    assert [call["call_id"] for call in calls][:2] == ["call_0", "call_1"]
    ends_done(events)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "calls",
    [
        tool_call_response(
            [("get_weather", {"location": "Seattle"}), ("get_weather", {"location": "Paris"})],
            quirks=Quirks(call_ids="missing", tool_call_index=False),
        ),
        tool_call_response(
            [
                ToolCall("get_weather", {"location": "Seattle"}, "dup"),
                ToolCall("get_weather", {"location": "Paris"}, "dup"),
            ]
        ),
    ],
    ids=["two calls without ids or index", "two calls under one id"],
)
def test_two_calls_the_model_does_not_tell_apart(
    fake: FakeOpenAI, openai_app: AppServer, endpoint: str, calls: Completion
) -> None:
    events = run(fake, openai_app, endpoint, calls, text_response("Done."))
    assert_calls_paired(events, ["Seattle", "Paris"])
    ends_done(events)


# -- answers the model stopped early --------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_answer_cut_by_the_azure_content_filter_ends_with_an_error(
    fake: FakeOpenAI, azure_app: AppServer, endpoint: str
) -> None:
    cut = text_response(["The", " weather", " in", " Seattle", " is"], finish_reason="content_filter")
    events = run(fake, azure_app, endpoint, step("Seattle", Quirks()), cut, writer=False)
    error = events[-1]
    assert error.event == "error", [e.event for e in events]
    assert error.data["error"]["code"] == "content_filtered"
    message = error.data["error"]["message"]
    assert "content filter" in message and "reword" in message.lower()
    assert text_of(events) == "The weather in Seattle is", "the text before the cut stays delivered"
    assert_calls_paired(events, ["Seattle"])
    assert len(fake.requests) == 2, "the writer never ran on a filtered answer"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_prompt_refused_by_the_azure_content_filter_says_so(
    fake: FakeOpenAI, azure_app: AppServer, endpoint: str
) -> None:
    events = run(fake, azure_app, endpoint, content_filter_error(), writer=False)
    assert [e.event for e in events] == ["agent_started", "error"]
    error = events[-1].data["error"]
    assert error["code"] == "content_filtered"
    assert "content filter" in error["message"] and "reword" in error["message"].lower()
    assert "ResponsibleAIPolicyViolation" not in json.dumps(events[-1].data), "no upstream body reaches the client"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_answer_stopped_at_the_length_limit_says_so_in_done(
    fake: FakeOpenAI, openai_app: AppServer, endpoint: str
) -> None:
    cut = text_response(["Seattle:", " light", " rain,", " 12"], finish_reason="length")
    if endpoint == "agent":
        events = run(fake, openai_app, endpoint, cut)
    else:  # the researcher finishes; the writer's answer is the one cut
        fake.enqueue(text_response("- Seattle: light rain."), cut)
        events = run(fake, openai_app, endpoint, writer=False)
    ends_done(events, "length")
    assert text_of(events).endswith("Seattle: light rain, 12")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_azure_filter_annotations_on_a_normal_answer_change_nothing(
    fake: FakeOpenAI, azure_app: AppServer, endpoint: str
) -> None:
    annotated = Quirks(filter_annotations=True)
    pieces = ["Seattle:", " light", " rain."]
    events = run(fake, azure_app, endpoint, step("Seattle", annotated), text_response(pieces, quirks=annotated))
    assert_calls_paired(events, ["Seattle"])
    assert [e.data["text"] for e in events if e.event == "message" and e.data["agent"] == FIRST[endpoint]] == pieces
    done = ends_done(events)
    assert done["model"] == DEPLOYMENT, "the annotation chunks' empty model name is not taken"


# -- what held before: keep it so -----------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("quirks", "fragments"),
    [
        (Quirks(tool_call_index=False), 4),
        (Quirks(content_null=True), 4),
        (Quirks(arguments_as_object=True), 1),
        (Quirks(), 1),
    ],
    ids=[
        "tool-call chunks without index",
        "content null beside tool calls",
        "arguments as an object",
        "each call whole in one chunk",
    ],
)
def test_tool_call_shapes_that_held(
    fake: FakeOpenAI, openai_app: AppServer, endpoint: str, quirks: Quirks, fragments: int
) -> None:
    events = run(fake, openai_app, endpoint, step("Seattle", quirks, fragments=fragments), text_response("Done."))
    calls = assert_calls_paired(events, ["Seattle"])
    assert calls[0]["arguments"] == {"location": "Seattle"}
    ends_done(events)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "finish_reason",
    ["function_call", "stop"],
    ids=["finish_reason function_call (older servers)", "finish_reason stop after calls (LM Studio before 0.3.15)"],
)
def test_two_calls_in_one_response_whatever_the_finish_reason(
    fake: FakeOpenAI, openai_app: AppServer, endpoint: str, finish_reason: str
) -> None:
    both = tool_call_response(
        [("get_weather", {"location": "Seattle"}), ("get_weather", {"location": "Paris"})],
        finish_reason=finish_reason,
    )
    events = run(fake, openai_app, endpoint, both, text_response("Done."))
    assert_calls_paired(events, ["Seattle", "Paris"])
    ends_done(events)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "finish_reason", ["tool_calls", "length"], ids=["finish tool_calls", "finish length (llama.cpp at n_predict)"]
)
def test_arguments_cut_mid_json_are_shown_raw_and_the_call_fails(
    fake: FakeOpenAI, openai_app: AppServer, endpoint: str, finish_reason: str
) -> None:
    broken = tool_call_response([ToolCall("get_weather", '{"location": "Par')], finish_reason=finish_reason)
    events = run(fake, openai_app, endpoint, broken, text_response("Sorry."))
    (call,) = [e.data for e in events if e.event == "tool_call"]
    (result,) = [e.data for e in events if e.event == "tool_result"]
    assert call["arguments"] == '{"location": "Par'
    assert result["call_id"] == call["call_id"] and result["is_error"] is True
    ends_done(events)  # the answer itself ("Sorry.") is whole


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_deltas_stay_out_of_the_answer(
    fake: FakeOpenAI, openai_app: AppServer, endpoint: str, field: str
) -> None:
    thinking = Quirks(reasoning=("The user wants", " the weather."), reasoning_field=field)
    events = run(
        fake,
        openai_app,
        endpoint,
        step("Seattle", thinking),
        text_response(
            ["Seattle:", " light", " rain."], quirks=thinking, usage={"prompt_tokens": 30, "completion_tokens": 9}
        ),
    )
    assert_calls_paired(events, ["Seattle"])
    assert text_of(events, FIRST[endpoint]) == "Seattle: light rain."
    assert "The user wants" not in json.dumps([e.data for e in events])
    done = ends_done(events)
    # The usage chunk (empty choices) of every model call is counted.
    assert done["usage"]["input_tokens"] >= 30 and done["usage"]["output_tokens"] >= 9


def test_every_wire_format_says_why_an_answer_stopped(fake: FakeOpenAI, azure_app: AppServer) -> None:
    """The same events reach NDJSON and plain text."""
    with httpx.Client(base_url=azure_app.url, timeout=30) as client:
        fake.enqueue(text_response(["Seattle:", " light"], finish_reason="length"))
        ndjson = client.post("/api/agent/stream", json={"message": "hi"}, headers={"Accept": "application/x-ndjson"})
        last = json.loads(ndjson.text.splitlines()[-1])
        assert (last["event"], last["finish_reason"]) == ("done", "length")

        fake.enqueue(text_response(["Seattle:", " light"], finish_reason="length"))
        plain = client.post("/api/agent/stream", json={"message": "hi"}, headers={"Accept": "text/plain"})
        assert plain.text == "Seattle: light\n[cut short: the model reached its length limit]\n"

        fake.enqueue(text_response(["Seattle:", " light"], finish_reason="content_filter"))
        plain = client.post("/api/agent/stream", json={"message": "hi"}, headers={"Accept": "text/plain"})
        assert plain.text.startswith("Seattle: light\n[error] content_filtered: The model service's content filter")


@pytest.mark.parametrize("call_ids", ["unique", "numbered", "empty"])
async def test_a_call_handed_back_to_the_caller_is_one_call(fake: FakeOpenAI, call_ids: str) -> None:
    """The real framework, in process, with a declaration-only tool (how
    AG-UI offers a client's tools): it runs get_weather, hands the client
    tool back and repeats that call in one more update. The mapper shows
    each call once; the client tool's call stays without a result."""
    from agent_framework import FunctionTool
    from agent_framework.openai import OpenAIChatCompletionClient

    from agents import build_weather_agent
    from streaming.events import ToolCall as ToolCallEvent
    from streaming.events import ToolResult as ToolResultEvent
    from streaming.mapping import UpdateMapper

    schema = {"type": "object", "properties": {"location": {"type": "string"}}}
    client_tool = FunctionTool(name="show_map", description="Show a map.", func=None, input_model=schema)
    fake.enqueue(
        tool_call_response(
            [("get_weather", {"location": "Seattle"}), ("show_map", {"location": "Seattle"})],
            quirks=Quirks(call_ids=call_ids),  # type: ignore[arg-type]
        )
    )
    client = OpenAIChatCompletionClient(model="m", api_key=KEY, base_url=fake.openai_base_url)
    mapper, events = UpdateMapper(), []
    stream = build_weather_agent(client).run("Weather in Seattle, on a map", stream=True, tools=[client_tool])
    async for update in stream:
        events += mapper.feed(update, "weather")
    events += mapper.flush()
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert [c.tool for c in calls] == ["get_weather", "show_map"]
    assert all(c.call_id for c in calls) and len({c.call_id for c in calls}) == 2
    assert [(r.call_id, r.result["location"]) for r in results] == [(calls[0].call_id, "Seattle")]


# -- the same events over AG-UI ---------------------------------------------------------------------

NOTICE_TOOL = {
    "name": "show_notice",
    "description": "Shows a notice in the app.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


@pytest.mark.parametrize("call_ids", ["numbered", "empty"])
def test_agui_pairs_calls_and_names_the_pending_client_call(
    fake: FakeOpenAI, openai_app: AppServer, call_ids: str
) -> None:
    """AG-UI streams the same events: with ids reused or empty, every
    TOOL_CALL_RESULT names its own call, the client's call stays pending
    under an id that is unique in the run, and answering it under that id
    reaches the model as the answer to that call."""
    from tests.agui_support import assert_well_formed, assistant_turn, post_agui, run_input, user

    quirks = Quirks(call_ids=call_ids)  # type: ignore[arg-type]
    fake.enqueue(
        step("Seattle", quirks),
        tool_call_response([("show_notice", {"text": "Umbrella"})], quirks=quirks),
    )
    ask = user("Weather in Seattle, and show a notice")
    body = run_input([ask], tools=[NOTICE_TOOL])
    first = post_agui(f"{openai_app.url}/api/agent/ag-ui", body)
    assert_well_formed(first, body)
    starts = first.of("TOOL_CALL_START")
    ids = [s["toolCallId"] for s in starts]
    assert [s["toolCallName"] for s in starts] == ["get_weather", "show_notice"]
    assert all(ids) and len(set(ids)) == 2
    (result,) = first.of("TOOL_CALL_RESULT")
    assert result["toolCallId"] == ids[0] and json.loads(result["content"])["location"] == "Seattle"
    assert first.events[-1]["outcome"]["pendingToolCallIds"] == [ids[1]]

    fake.enqueue(text_response("Shown."))
    answer = {"id": "t-n", "role": "tool", "toolCallId": ids[1], "content": "shown"}
    second_body = run_input([ask, *assistant_turn(first), answer], tools=[NOTICE_TOOL])
    second = post_agui(f"{openai_app.url}/api/agent/ag-ui", second_body)
    assert_well_formed(second, second_body)
    assert second.text() == "Shown."
    sent = fake.requests[-1].messages
    notice_call = next(
        c
        for m in sent
        if m["role"] == "assistant"
        for c in m.get("tool_calls") or []
        if c["function"]["name"] == "show_notice"
    )
    assert {m["tool_call_id"]: m["content"] for m in sent if m["role"] == "tool"}[notice_call["id"]] == "shown"


def test_agui_content_filter_is_one_run_error(fake: FakeOpenAI, azure_app: AppServer) -> None:
    from tests.agui_support import assert_well_formed, post_agui, run_input, user

    fake.enqueue(text_response(["The", " weather"], finish_reason="content_filter"))
    body = run_input([user("Weather in Seattle?")])
    result = post_agui(f"{azure_app.url}/api/agent/ag-ui", body)
    assert_well_formed(result, body)
    assert result.text() == "The weather"
    assert result.events[-1]["type"] == "RUN_ERROR" and result.events[-1]["code"] == "content_filtered"
