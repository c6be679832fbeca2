"""End to end over real loopback HTTP: the app on the local host with the
offline model. Holds the event contract (see the README)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import parse_sse, stream_events, text_of

NAMED = {"agent_started", "agent_completed", "tool_call", "tool_result", "done", "error"}


def assert_contract(events) -> None:
    """Every event has an id ``<run token>:<n>``, one token, n = 1, 2, 3...;
    exactly one terminal event, last."""
    assert events, "no events"
    tokens = {e.id.rpartition(":")[0] for e in events}
    assert len(tokens) == 1 and len(tokens.pop()) == 22  # 128 random bits, URL-safe base64
    ids = [int(e.id.rpartition(":")[2]) for e in events]
    assert ids == list(range(1, len(events) + 1))
    assert {e.event for e in events} <= NAMED | {"message"}
    terminal = [e for e in events if e.event in ("done", "error")]
    assert len(terminal) == 1 and terminal[0] is events[-1]


def test_agent_streams_tool_calls_then_text(offline_client: httpx.Client) -> None:
    response, events = stream_events(
        offline_client, "/api/agent/stream", json_body={"message": "What's the weather in Seattle and Portland?"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert_contract(events)
    kinds = [e.event for e in events]
    assert kinds[0] == "agent_started" and kinds[-2:] == ["agent_completed", "done"]
    calls = [e.data for e in events if e.event == "tool_call"]
    results = [e.data for e in events if e.event == "tool_result"]
    assert [c["arguments"] for c in calls] == [{"location": "Seattle"}, {"location": "Portland"}]
    assert {r["call_id"] for r in results} == {c["call_id"] for c in calls}
    assert all(r["name"] == "get_weather" and not r["is_error"] for r in results)
    # Every call is announced before its result, and text comes after the results.
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("message")
    text = text_of(events)
    for result in results:
        assert f"{result['result']['location']}: {result['result']['conditions']}" in text
    assert len([e for e in events if e.event == "message"]) > 5, "text must arrive in pieces"
    done = events[-1].data
    assert done["provider"] == "offline" and done["model"] == "offline-demo"
    assert done["usage"]["total_tokens"] > 0 and done["elapsed_ms"] >= 0


def test_workflow_streams_both_agents_in_order(offline_client: httpx.Client) -> None:
    response, events = stream_events(
        offline_client, "/api/workflow/stream", json_body={"message": "Research the weather in Oslo and write a poem"}
    )
    assert response.status_code == 200
    assert_contract(events)
    transitions = [(e.event, e.data["agent"]) for e in events if e.event in ("agent_started", "agent_completed")]
    assert transitions == [
        ("agent_started", "researcher"),
        ("agent_completed", "researcher"),
        ("agent_started", "writer"),
        ("agent_completed", "writer"),
    ]
    agents_in_text_order = [e.data["agent"] for e in events if e.event == "message"]
    first_writer = agents_in_text_order.index("writer")
    assert set(agents_in_text_order[:first_writer]) == {"researcher"}
    assert set(agents_in_text_order[first_writer:]) == {"writer"}
    assert [e.data["agent"] for e in events if e.event == "tool_call"] == ["researcher"]
    assert "Oslo" in text_of(events, "researcher") and "Oslo" in text_of(events, "writer")


def test_get_with_query_for_event_source(offline_client: httpx.Client) -> None:
    response, events = stream_events(offline_client, "/api/agent/stream", params={"message": "weather in paris"})
    assert response.status_code == 200
    assert_contract(events)
    assert "Paris" in text_of(events)


def test_reconnect_with_last_event_id_gets_204(offline_client: httpx.Client) -> None:
    response = offline_client.get(
        "/api/agent/stream", params={"message": "weather in Paris"}, headers={"Last-Event-ID": "12"}
    )
    assert response.status_code == 204
    assert response.content == b""


def test_seed_client_loop_reads_the_text(offline_app) -> None:
    """The loop from the original samples (data: lines, data.get('text'))."""
    out = []
    with httpx.stream(
        "POST", f"{offline_app.url}/api/agent/stream", json={"message": "Tell me about Seattle weather"}, timeout=30
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if data.get("text"):
                    out.append(data["text"])
    assert "Seattle:" in "".join(out)


def test_accept_text_plain_streams_text_alone(offline_client: httpx.Client) -> None:
    response = offline_client.post(
        "/api/workflow/stream", json={"message": "Weather in Oslo, then a poem"}, headers={"Accept": "text/plain"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    assert "data:" not in body and "event:" not in body
    researcher, writer = body.strip().split("\n\n", 1)
    assert researcher.startswith("Here is the current weather. Oslo:")
    assert "Oslo" in writer


def test_accept_ndjson_streams_one_event_per_line(offline_client: httpx.Client) -> None:
    response = offline_client.post(
        "/api/agent/stream", json={"message": "Weather in Lima?"}, headers={"Accept": "application/x-ndjson"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    token = response.headers["x-run-token"]
    assert [line["id"] for line in lines] == [f"{token}:{n}" for n in range(1, len(lines) + 1)]
    assert lines[-1]["event"] == "done"
    assert any(line["event"] == "tool_call" and line["arguments"] == {"location": "Lima"} for line in lines)
    assert "Lima:" in "".join(line["text"] for line in lines if line["event"] == "text")


def test_multi_turn_history_reaches_the_model(offline_client: httpx.Client) -> None:
    history = [
        {"role": "user", "content": "What's the weather in Rome?"},
        {"role": "assistant", "content": "Rome: sunny, 25 °C."},
    ]
    _, events = stream_events(
        offline_client, "/api/agent/stream", json_body={"message": "And in Madrid?", "messages": history}
    )
    assert_contract(events)
    assert [e.data["arguments"] for e in events if e.event == "tool_call"] == [{"location": "Madrid"}]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "missing_message"),
        ({"message": "   "}, 400, "empty_message"),
        ({"message": 42}, 400, "invalid_message"),
        ({"message": "hi", "messages": [{"role": "system", "content": "x"}]}, 400, "invalid_role"),
    ],
)
def test_bad_input_is_a_4xx_json_error(offline_client: httpx.Client, body, status, code) -> None:
    response = offline_client.post("/api/agent/stream", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_health_names_the_model(offline_client: httpx.Client) -> None:
    response = offline_client.get("/api/health")
    assert response.json() == {
        "status": "ok",
        "model": {"configured": True, "provider": "offline", "model": "offline-demo"},
    }


def test_parse_sse_helper_handles_comments_and_multiline() -> None:
    events = parse_sse([": ping", "", "id: 1", "event: x", 'data: {"a":', "data: 1}", ""])
    assert [(e.event, e.data, e.id) for e in events] == [("x", {"a": 1}, "1")]


def test_run_id_is_the_invocation_id_and_tags_the_log(offline_app, offline_client: httpx.Client) -> None:
    spoofed = {"x-ms-invocation-id": "client-chosen"}
    with offline_client.stream("POST", "/api/agent/stream", json={"message": "Weather in Oslo"}, headers=spoofed) as r:
        r.read()
    run_id = r.headers["x-run-id"]
    assert run_id != "client-chosen" and len(run_id) == 36  # the host's uuid, like the Functions host's
    assert f"run {run_id} done" in offline_app.logs()


def test_the_frameworks_tool_call_lines_are_logged_only_at_the_level_asked_for(offline_app, offline_client) -> None:
    """FRAMEWORK_LOG_LEVEL (README): WARNING by default, so the framework's two INFO lines per tool call
    are not written; INFO brings them back."""
    from tests.support import AppServer

    ask = {"message": "Weather in Oslo"}
    with offline_client.stream("POST", "/api/agent/stream", json=ask) as quiet:
        assert "event: tool_call" in quiet.read().decode()
    assert f"run {quiet.headers['x-run-id']} done" in offline_app.logs()
    assert "Function name: get_weather" not in offline_app.logs()
    with AppServer({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "0", "FRAMEWORK_LOG_LEVEL": "info"}) as app:
        assert httpx.post(f"{app.url}/api/agent/stream", json=ask, timeout=30).status_code == 200
        assert "Function name: get_weather" in app.logs()


def test_cors_follows_local_settings_host_cors(offline_client: httpx.Client) -> None:
    preflight = {
        "Origin": "http://allowed.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-functions-key",
    }
    allowed = offline_client.options("/api/agent/stream", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    refused = offline_client.options("/api/agent/stream", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    simple = offline_client.get("/api/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_in_azure_without_a_model_the_streams_answer_503_naming_the_settings() -> None:
    from tests.support import AppServer

    with AppServer(env={"WEBSITE_INSTANCE_ID": "0123abcd"}) as app, httpx.Client(base_url=app.url) as client:
        for path in ("/api/agent/stream", "/api/workflow/stream"):
            response = client.post(path, json={"message": "Weather in Oslo?"})
            assert response.status_code == 503
            error = response.json()["error"]
            assert error["code"] == "model_not_configured"
            assert (
                "AZURE_OPENAI_ENDPOINT" in error["message"] and "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME" in error["message"]
            )
        health = client.get("/api/health").json()
        assert health["status"] == "ok" and health["model"]["configured"] is False
