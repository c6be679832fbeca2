"""End to end over real loopback HTTP with a real model protocol: the app
on the local host, the model a fake OpenAI-compatible server speaking the
Chat Completions streaming wire format, on both the OpenAI and the Azure
OpenAI paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, text_response, tool_call_response
from tests.support import AppServer, stream_events, text_of
from tests.test_e2e_offline import assert_contract

KEY = "test-key-7f3a"
DEPLOYMENT = "chat-deploy"


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
    values = {"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "fake-model"}
    with AppServer(values) as server:
        yield server


@pytest.fixture(scope="module")
def azure_app(fake: FakeOpenAI) -> Iterator[AppServer]:
    values = {
        "AZURE_OPENAI_ENDPOINT": fake.azure_endpoint,
        "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": DEPLOYMENT,
        "AZURE_OPENAI_API_KEY": KEY,
        # The framework's trap: with OPENAI_API_KEY also set it would route to OpenAI.
        "OPENAI_API_KEY": "sk-must-not-be-used",
    }
    with AppServer(values) as server:
        yield server


def client_for(app: AppServer) -> httpx.Client:
    return httpx.Client(base_url=app.url, timeout=30)


PIECES = ["The", " weather", " in", " Paris", " is", " ", "windy", ",", " 4", " °C", "."]


@pytest.mark.parametrize("which", ["openai", "azure"])
def test_agent_tool_round_trip_and_verbatim_text(fake: FakeOpenAI, request, which: str) -> None:
    app = request.getfixturevalue(f"{which}_app")
    fake.enqueue(
        tool_call_response([("get_weather", {"location": "Paris"}, "call_paris")], fragments=4),
        text_response(PIECES, usage={"prompt_tokens": 40, "completion_tokens": 11}),
    )
    with client_for(app) as client:
        response, events = stream_events(client, "/api/agent/stream", json_body={"message": "Weather in Paris?"})
    assert response.status_code == 200
    assert_contract(events)

    # The call arrived in four argument fragments; the client sees it once, whole.
    calls = [e.data for e in events if e.event == "tool_call"]
    assert calls == [
        {"agent": "weather", "call_id": "call_paris", "name": "get_weather", "arguments": {"location": "Paris"}}
    ]
    (result,) = [e.data for e in events if e.event == "tool_result"]
    assert result["call_id"] == "call_paris" and result["result"]["location"] == "Paris"

    # The model's text, verbatim and in order, one event per delta.
    assert [e.data["text"] for e in events if e.event == "message"] == [p for p in PIECES if p]

    # Over the wire: the first request offered the tool with the agent's
    # instructions; the second carried the tool's result back.
    first, second = fake.requests
    assert [t["function"]["name"] for t in first.tools] == ["get_weather"]
    assert first.messages[0]["role"] == "system" and "get_weather" in first.messages[0]["content"]
    assert first.messages[-1] == {"role": "user", "content": "Weather in Paris?"}
    tool_message = second.messages[-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_paris"
    assert json.loads(tool_message["content"])["location"] == "Paris"

    done = events[-1].data
    assert done["provider"] == ("azure_openai" if which == "azure" else "openai")
    assert done["usage"]["input_tokens"] >= 40 and done["usage"]["output_tokens"] >= 11

    if which == "azure":
        for recorded in fake.requests:
            assert recorded.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
            assert recorded.headers["api-key"] == KEY
            assert recorded.query["api-version"] == "2024-10-21"
    else:
        for recorded in fake.requests:
            assert recorded.path == "/v1/chat/completions"
            assert recorded.headers["authorization"] == f"Bearer {KEY}"
            assert recorded.json["model"] == "fake-model"


def test_workflow_streams_both_agents_and_the_writer_gets_the_research(fake: FakeOpenAI, azure_app) -> None:
    fake.enqueue(
        tool_call_response([("get_weather", {"location": "Oslo"}, "call_oslo")]),
        text_response("- Oslo: windy, 5 °C."),
        text_response("A short poem about windy Oslo."),
    )
    with client_for(azure_app) as client:
        response, events = stream_events(
            client, "/api/workflow/stream", json_body={"message": "Research the weather in Oslo and write a poem"}
        )
    assert response.status_code == 200
    assert_contract(events)
    assert [(e.event, e.data["agent"]) for e in events if e.event.startswith("agent_")] == [
        ("agent_started", "researcher"),
        ("agent_completed", "researcher"),
        ("agent_started", "writer"),
        ("agent_completed", "writer"),
    ]
    assert text_of(events, "researcher") == "- Oslo: windy, 5 °C."
    assert text_of(events, "writer") == "A short poem about windy Oslo."
    assert [e.data["agent"] for e in events if e.event in ("tool_call", "tool_result")] == ["researcher", "researcher"]

    writer_request = fake.requests[2]
    assert not writer_request.tools, "the writer has no tools"
    contents = [str(m.get("content")) for m in writer_request.messages]
    assert "Research the weather in Oslo and write a poem" in contents, "the writer gets the user's request"
    assert "- Oslo: windy, 5 °C." in contents, "and the researcher's findings"
    assert writer_request.messages[-1]["role"] == "user", "chat-completions servers want a user turn last"


def test_get_and_accept_variants_over_the_model(fake: FakeOpenAI, openai_app) -> None:
    with client_for(openai_app) as client:
        response, events = stream_events(client, "/api/agent/stream", params={"message": "Weather in Lima"})
        assert response.status_code == 200 and events[-1].event == "done"
        assert [e.data["arguments"] for e in events if e.event == "tool_call"] == [{"location": "Lima"}]
        assert text_of(events).startswith("Based on the data:") and "Lima" in text_of(events)

        plain = client.post("/api/agent/stream", json={"message": "Weather in Quito"}, headers={"Accept": "text/plain"})
        assert plain.headers["content-type"].startswith("text/plain")
        assert plain.text.startswith("Based on the data:") and "Quito" in plain.text

        ndjson = client.post(
            "/api/agent/stream", json={"message": "Weather in Bogota"}, headers={"Accept": "application/x-ndjson"}
        )
        lines = [json.loads(line) for line in ndjson.text.splitlines()]
        assert lines[-1]["event"] == "done"
        assert [line["arguments"] for line in lines if line["event"] == "tool_call"] == [{"location": "Bogota"}]


def test_concurrent_workflows_do_not_collide(fake: FakeOpenAI, openai_app) -> None:
    fake.chunk_delay = 0.005  # reset() restores it
    cities = ["Oslo", "Lima", "Cairo", "Perth", "Quito", "Dakar"]

    def run(city: str):
        with client_for(openai_app) as client:
            return stream_events(
                client, "/api/workflow/stream", json_body={"message": f"Research the weather in {city} please"}
            )

    with ThreadPoolExecutor(len(cities)) as pool:
        outcomes = list(pool.map(run, cities))
    for city, (response, events) in zip(cities, outcomes, strict=True):
        assert response.status_code == 200
        assert_contract(events)
        assert events[-1].event == "done"
        assert [e.data["arguments"] for e in events if e.event == "tool_call"] == [{"location": city}]
        researcher = text_of(events, "researcher")
        assert city in researcher and not any(other in researcher for other in cities if other != city)
        assert text_of(events, "writer")
    assert fake.wait_for_no_open_streams(2)
