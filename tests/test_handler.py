"""The stream handler in-process, at the ASGI surface the server calls.

The same app the local host serves (``devhost.app.build_app`` over
``function_app.app``), called the way uvicorn calls it, with settings from
the environment as in production. In-process so that what only a server
could show (a reader that never reads, a header no HTTP client would send)
can be tested, and so that mutation testing sees these tests run the code.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

import function_app
import llm
from devhost.app import build_app
from streaming.events import AgentStarted, Done, Error, StreamEvent, TextDelta
from streaming.http import stream_run
from tests.support import parse_sse

AGENT = "/api/agent/stream"


@dataclass
class Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    writes: list[tuple[float, bytes]] = field(default_factory=list)  # (when, body) of every write

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.writes)

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
    send_hook: Callable[[dict[str, Any]], Any] | None = None,
    client_leaves: Callable[[], Any] | None = None,
    stalls: bool = False,
) -> Reply:
    """One request through ``app`` as an ASGI server makes it (``stalls``:
    the client sends ``body`` as the first part of a longer one, then nothing)."""
    headers = {"host": "127.0.0.1:7071", **(headers or {})}  # every HTTP/1.1 request names its host
    if method == "POST":
        headers = {"content-length": str(len(body)), **headers}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 7071),
    }
    reply = Reply()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": stalls}
        if client_leaves is None:
            await asyncio.Event().wait()  # the client stays
        await client_leaves()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if send_hook is not None:
            await send_hook(message)
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body" and message.get("body"):
            reply.writes.append((time.monotonic(), message["body"]))

    await asyncio.wait_for(app(scope, receive, send), 20)
    return reply


def post_json(data: Any, **headers: str) -> dict[str, Any]:
    return {"body": json.dumps(data).encode(), "headers": {"content-type": "application/json", **headers}}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    monkeypatch.setenv("OFFLINE_MODEL_DELAY_MS", "0")


@pytest.fixture
def app(offline: None) -> Any:
    # A fresh import: the Functions library lets an app list its functions once.
    return build_app(importlib.reload(function_app).app, prefix="api")[0]


def with_runner(runner: Callable[..., AsyncIterator[StreamEvent]]) -> Starlette:
    """The shared handler over a runner of the test's own."""

    async def endpoint(request: Request) -> Any:
        return await stream_run(request, runner)

    return Starlette(routes=[Route(AGENT, endpoint, methods=["GET", "POST"])])


# ------------------------------------------------------------------------------ limits from the environment


async def test_max_body_bytes_comes_from_the_environment(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "1024")
    small, large = {"message": "Weather in Oslo?"}, {"message": "Weather in Oslo?", "pad": "x" * 1024}
    assert (await call(app, "POST", AGENT, **post_json(small))).status == 200
    reply = await call(app, "POST", AGENT, **post_json(large))
    assert (reply.status, reply.json()["error"]["code"]) == (413, "body_too_large")
    assert "1024 bytes" in reply.json()["error"]["message"]


async def test_a_declared_length_over_the_limit_is_refused_unread(app: Any) -> None:
    reply = await call(app, "POST", AGENT, body=b"{}", headers={"content-type": "application/json"})
    assert (reply.status, reply.json()["error"]["code"]) == (400, "missing_message")
    assert "connection" not in reply.headers, "only a body that stopped arriving closes the connection"
    reply = await call(
        app, "POST", AGENT, body=b"", headers={"content-type": "application/json", "content-length": "262145"}
    )
    assert (reply.status, reply.json()["error"]["code"]) == (413, "body_too_large")
    assert "connection" not in reply.headers


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_closed(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BODY_READ_TIMEOUT_SECONDS", "0.2")
    reply = await call(
        app, "POST", AGENT, body=b'{"message": "Os', headers={"content-type": "application/json"}, stalls=True
    )
    assert (reply.status, reply.json()["error"]["code"]) == (408, "body_timeout")
    assert reply.json()["error"]["message"] == "The request body did not arrive within 0.2 seconds."
    assert reply.headers["connection"] == "close"  # the rest of the body, if it ever comes, is not read


async def test_a_content_length_that_is_not_a_number_is_a_400(app: Any) -> None:
    reply = await call(
        app, "POST", AGENT, body=b"{}", headers={"content-type": "application/json", "content-length": "ten"}
    )
    assert reply.status == 400
    assert reply.json()["error"]["code"] == "invalid_content_length"


@pytest.mark.parametrize(("limit", "turns", "status"), [(None, 40, 200), (None, 41, 413), ("2", 2, 200), ("2", 3, 413)])
async def test_max_history_messages_is_the_most_turns_accepted(
    app: Any, monkeypatch: pytest.MonkeyPatch, limit: str | None, turns: int, status: int
) -> None:
    if limit is not None:
        monkeypatch.setenv("MAX_HISTORY_MESSAGES", limit)
    history = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(turns)]
    reply = await call(app, "POST", AGENT, **post_json({"message": "And in Oslo?", "messages": history}))
    assert reply.status == status
    if status == 413:
        assert reply.json()["error"]["code"] == "too_many_messages"


async def test_max_message_chars_comes_from_the_environment(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_MESSAGE_CHARS", "12")
    assert (await call(app, "GET", AGENT, query="message=Oslo%20today?")).status == 200
    reply = await call(app, "GET", AGENT, query="message=Oslo%20tomorrow?")
    assert (reply.status, reply.json()["error"]["code"]) == (413, "message_too_long")


# ------------------------------------------------------------------------------ timings from the environment


async def test_a_reader_that_stops_reading_ends_the_run_after_send_timeout(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SEND_TIMEOUT_SECONDS takes effect: the default (30 s) would outlast the wait."""
    monkeypatch.setenv("SEND_TIMEOUT_SECONDS", "0.3")
    monkeypatch.setenv("OFFLINE_MODEL_DELAY_MS", "5")
    stuck = asyncio.Event()

    async def stop_reading(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            stuck.set()
            await asyncio.Event().wait()  # the socket buffer is full and nobody reads

    started = time.monotonic()
    reply = await asyncio.wait_for(call(app, "GET", AGENT, query="message=Oslo", send_hook=stop_reading), 10)
    assert stuck.is_set() and reply.status == 200
    assert time.monotonic() - started < 10


async def test_heartbeat_follows_the_last_write_by_heartbeat_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ping goes out HEARTBEAT_SECONDS after the last write, not up to twice that."""
    monkeypatch.setenv("HEARTBEAT_SECONDS", "0.4")

    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        await asyncio.sleep(0.05)
        yield TextDelta("hello", "weather")
        await asyncio.sleep(1.2)
        yield Done("offline", "offline-demo")

    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    reply = await call(with_runner(runner), "GET", AGENT, query="message=hi")
    text_at = next(at for at, body in reply.writes if b"hello" in body)
    pings = [at - text_at for at, body in reply.writes if body == b": ping\n\n" and at > text_at]
    assert len(pings) >= 2, reply.writes
    assert 0.3 <= pings[0] <= 0.6, pings
    assert all(0.2 <= b - a <= 0.6 for a, b in itertools.pairwise(pings)), pings


# ------------------------------------------------------------------------------ the event contract


async def test_an_error_event_from_a_runner_ends_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PROVIDER", "offline")

    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        yield AgentStarted("weather")
        yield Error("upstream_error", "The model service failed to answer.")
        yield TextDelta("after the end", "weather")
        yield Done("offline", "offline-demo")

    reply = await call(with_runner(runner), "GET", AGENT, query="message=hi")
    events = parse_sse(reply.body.decode().split("\n"))
    assert [e.event for e in events] == ["agent_started", "error"]
    assert events[-1].data == {"error": {"code": "upstream_error", "message": "The model service failed to answer."}}


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("application/x-ndjson, text/plain", "application/x-ndjson"),
        ("text/plain, application/x-ndjson", "text/plain; charset=utf-8"),
        ("text/plain;q=0.5, application/x-ndjson;q=0.5, text/event-stream;q=0.5", "text/plain; charset=utf-8"),
        ("text/plain;q=0.4, application/x-ndjson;q=0.5", "application/x-ndjson"),
    ],
)
async def test_accept_ties_go_to_the_first_listed(app: Any, accept: str, media_type: str) -> None:
    reply = await call(app, "GET", AGENT, query="message=Oslo", headers={"accept": accept})
    assert reply.headers["content-type"] == media_type


# ------------------------------------------------------------------------------ failures before streaming


async def test_a_500_carries_its_run_id_and_the_log_names_it(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("secret-token-123 in a bug")

    monkeypatch.setattr(llm, "chat_client", broken)
    with caplog.at_level(logging.ERROR, logger="streaming.http"):
        reply = await call(app, "POST", AGENT, **post_json({"message": "Weather in Oslo?"}))
    assert reply.status == 500
    assert reply.json() == {"error": {"code": "internal_error", "message": "The request failed unexpectedly."}}
    run_id = reply.headers["x-run-id"]
    assert len(run_id) >= 32
    assert [name for name, value in reply.headers.items() if value == run_id] == ["x-run-id"]
    logged = [r for r in caplog.records if r.name == "streaming.http" and r.levelno == logging.ERROR]
    assert len(logged) == 1 and run_id in logged[0].getMessage() and logged[0].exc_info
    assert "POST /api/agent/stream" in logged[0].getMessage(), "which request failed"
    assert b"secret" not in reply.body


async def test_a_bad_setting_is_a_503_naming_it_not_its_value(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RUN_DEADLINE_SECONDS", "soon-ish")
    with caplog.at_level(logging.INFO, logger="streaming.http"):
        reply = await call(app, "POST", AGENT, **post_json({"message": "Weather in Oslo?"}))
    assert reply.status == 503
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any(reply.headers["x-run-id"] in m and "RUN_DEADLINE_SECONDS" in m for m in refused), refused
    assert all("soon-ish" not in m for m in refused)
    assert reply.json() == {
        "error": {"code": "invalid_setting", "message": "Setting RUN_DEADLINE_SECONDS must be a number."}
    }


# ------------------------------------------------------------------------------ what the README promises


async def test_a_reconnecting_event_source_gets_204_and_no_run(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*_: Any) -> Any:
        raise AssertionError("a reconnect must not run the agent")

    monkeypatch.setattr(llm, "chat_client", no_model)
    reply = await call(app, "GET", AGENT, query="message=Oslo", headers={"last-event-id": "7"})
    assert (reply.status, reply.body) == (204, b"")


async def test_stream_headers_and_the_run_id_is_the_invocation_id(app: Any) -> None:
    reply = await call(app, "GET", AGENT, query="message=Oslo")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-cache" and reply.headers["x-accel-buffering"] == "no"
    assert len(reply.headers["x-run-id"]) == 36  # the host's invocation id (a UUID), as the log shows it
    events = parse_sse(reply.body.decode().split("\n"))
    token = reply.headers["x-run-token"]
    assert [e.id for e in events] == [f"{token}:{n}" for n in range(1, len(events) + 1)]
    assert events[-1].event == "done"


async def test_health_names_the_model_never_the_key(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-4242")
    monkeypatch.setenv("OPENAI_MODEL", "gpt-test")
    reply = await call(app, "GET", "/api/health")
    assert reply.json() == {"status": "ok", "model": {"configured": True, "provider": "openai", "model": "gpt-test"}}
    monkeypatch.delenv("OPENAI_MODEL")
    reply = await call(app, "GET", "/api/health")
    assert reply.json()["model"]["configured"] is False and "OPENAI_MODEL" in reply.json()["model"]["error"]
    assert b"sk-secret" not in reply.body


# ------------------------------------------------------------------------------ whatever the runner does


def sse_events(reply: Reply) -> list[Any]:
    return parse_sse(reply.body.decode().split("\n"))


async def run_with(runner: Callable[..., AsyncIterator[StreamEvent]], monkeypatch: pytest.MonkeyPatch) -> Reply:
    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    return await call(with_runner(runner), "GET", AGENT, query="message=hi")


async def test_a_runner_that_raises_ends_with_one_safe_error_logged_under_the_run_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        yield TextDelta("partial", "weather")
        raise RuntimeError("secret-key-123 in a bug")

    with caplog.at_level(logging.INFO):
        reply = await run_with(runner, monkeypatch)
    events = sse_events(reply)
    assert [e.event for e in events] == ["message", "error"]
    assert events[-1].data == {"error": {"code": "internal_error", "message": "The run failed unexpectedly."}}
    assert b"secret" not in reply.body
    run_id = reply.headers["x-run-id"]
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert failures and all(run_id in r.getMessage() for r in failures)
    assert any(r.exc_info for r in failures), "a bug's traceback goes to the log"


async def test_an_expected_upstream_failure_is_logged_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx
    import openai

    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        yield AgentStarted("weather")
        raise openai.APITimeoutError(request=httpx.Request("POST", "http://127.0.0.1/v1"))

    with caplog.at_level(logging.INFO):
        reply = await run_with(runner, monkeypatch)
    assert sse_events(reply)[-1].data["error"]["code"] == "upstream_timeout"
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 1 and failures[0].exc_info is None
    assert reply.headers["x-run-id"] in failures[0].getMessage() and "APITimeoutError" in failures[0].getMessage()


async def test_a_runner_that_stops_without_a_terminal_event_gets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        yield TextDelta("a", "weather")

    events = sse_events(await run_with(runner, monkeypatch))
    assert events[-1].data == {"error": {"code": "internal_error", "message": "The run ended unexpectedly."}}


async def test_run_deadline_seconds_ends_the_run_with_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUN_DEADLINE_SECONDS", "0.3")
    closed = asyncio.Event()

    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        try:
            yield TextDelta("thinking", "weather")
            await asyncio.sleep(30)
            yield Done("offline", "offline-demo")
        finally:
            closed.set()

    events = sse_events(await run_with(runner, monkeypatch))
    assert [e.event for e in events] == ["message", "error"]
    assert events[-1].data == {"error": {"code": "timeout", "message": "The run did not finish within 0.3 seconds."}}
    assert closed.is_set(), "the run is cancelled, and with it the model call"


async def test_done_is_stamped_with_the_run_s_duration_and_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        await asyncio.sleep(0.15)
        yield Done("offline", "offline-demo", usage={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3})
        yield TextDelta("after the end", "weather")

    events = sse_events(await run_with(runner, monkeypatch))
    assert [e.event for e in events] == ["done"]
    done = events[0].data
    assert 150 <= done["elapsed_ms"] < 10_000
    assert done["usage"] == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


async def test_the_workflow_streams_both_agents_in_process(app: Any) -> None:
    reply = await call(app, "POST", "/api/workflow/stream", **post_json({"message": "Research Oslo, write a poem"}))
    events = sse_events(reply)
    assert [(e.event, e.data["agent"]) for e in events if e.event.startswith("agent_")] == [
        ("agent_started", "researcher"),
        ("agent_completed", "researcher"),
        ("agent_started", "writer"),
        ("agent_completed", "writer"),
    ]
    calls = [e.data for e in events if e.event == "tool_call"]
    assert [(c["agent"], c["name"], c["arguments"]) for c in calls] == [
        ("researcher", "get_weather", {"location": "Oslo"})
    ]
    results = [e.data for e in events if e.event == "tool_result"]
    assert [(r["agent"], r["call_id"], r["result"]["location"]) for r in results] == [
        ("researcher", calls[0]["call_id"], "Oslo")
    ]
    texts = {e.data["agent"] for e in events if e.event == "message"}
    assert texts == {"researcher", "writer"}
    writer = "".join(e.data["text"] for e in events if e.event == "message" and e.data["agent"] == "writer")
    assert writer.count("\n") == 3 and writer.startswith("In Oslo it is")
    done = events[-1]
    assert done.event == "done" and (done.data["provider"], done.data["model"]) == ("offline", "offline-demo")
    assert done.data["usage"]["total_tokens"] > 0


async def test_the_run_id_is_made_up_when_the_host_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        yield Done("offline", "offline-demo")

    reply = await run_with(runner, monkeypatch)
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-run-id"])
    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    given = await call(with_runner(runner), "GET", AGENT, query="message=hi", headers={"x-ms-invocation-id": "abc-1"})
    assert given.headers["x-run-id"] == "abc-1"
    unsafe = await call(with_runner(runner), "GET", AGENT, query="message=hi", headers={"x-ms-invocation-id": "a b"})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-run-id"])


async def test_every_log_line_about_a_run_carries_its_run_id(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """README: X-Run-Id is the id "which every log line about the run carries"."""
    with caplog.at_level(logging.INFO, logger="streaming"):
        reply = await call(app, "GET", AGENT, query="message=Oslo")
    run_id = reply.headers["x-run-id"]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("streaming")]
    assert lines and all(run_id in line for line in lines), lines
    assert any("GET /api/agent/stream via offline" in line for line in lines), lines


async def test_a_client_that_leaves_is_logged_under_the_run_id(
    app: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLINE_MODEL_DELAY_MS", "50")
    first_write = asyncio.Event()

    async def on_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            first_write.set()

    async def gone() -> None:
        await first_write.wait()

    with caplog.at_level(logging.INFO, logger="streaming"):
        reply = await call(app, "GET", AGENT, query="message=Oslo", send_hook=on_send, client_leaves=gone)
    assert b"event: done" not in reply.body
    left = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert left and all(f"run {reply.headers['x-run-id']}" in line for line in left), left


# ------------------------------------------------------------------------------ resuming a run


def sse(reply: Reply) -> list[Any]:
    return parse_sse(reply.body.decode().splitlines())


async def finished_run(app: Any) -> tuple[str, list[Any], str]:
    """A whole run: its token, its events and its run id."""
    reply = await call(app, "GET", AGENT, query="message=Weather%20in%20Oslo")
    assert reply.status == 200
    return reply.headers["x-run-token"], sse(reply), reply.headers["x-run-id"]


async def test_a_run_resumes_from_after_any_event_it_sent(app: Any) -> None:
    token, events, run_id = await finished_run(app)
    assert len(events) > 4 and [e.id for e in events] == [f"{token}:{n}" for n in range(1, len(events) + 1)]
    runs = f"/api/runs/{token}/stream"
    by_header = await call(app, "GET", runs, headers={"last-event-id": events[2].id})
    assert by_header.status == 200 and sse(by_header) == events[3:]
    assert (by_header.headers["x-run-token"], by_header.headers["x-run-id"]) == (token, run_id)
    assert sse(await call(app, "GET", runs, query=f"after={events[1].id}")) == events[2:]
    assert sse(await call(app, "GET", runs)) == events, "neither: the whole run from its start"
    # An EventSource on the stream endpoint reconnects with the id alone.
    again = await call(app, "GET", AGENT, query="message=Weather%20in%20Oslo", headers={"last-event-id": events[0].id})
    assert again.status == 200 and sse(again) == events[1:]


async def test_a_resume_with_nothing_after_it_or_of_no_known_run_is_204(app: Any) -> None:
    token, events, _ = await finished_run(app)
    runs = f"/api/runs/{token}/stream"
    for cursor in (events[-1].id, f"{token}:{len(events) + 5}", "unknowntoken:1"):
        reply = await call(app, "GET", AGENT, query="message=Oslo", headers={"last-event-id": cursor})
        assert (reply.status, reply.body) == (204, b""), cursor
    assert (await call(app, "GET", runs, headers={"last-event-id": events[-1].id})).status == 204
    assert (await call(app, "GET", "/api/runs/unknowntoken/stream")).status == 204
    reply = await call(
        app, "GET", f"/api/runs/{LONG_TOKEN}/stream", headers={"last-event-id": f"{LONG_TOKEN}:999999999"}
    )
    assert reply.status == 204, "an id of the longest form is looked up (and not found), not refused"


LONG_TOKEN = "t" * 64  # the longest token an id may carry (ours are 22 characters)


@pytest.mark.parametrize(
    "cursor", ["7", "tok:", ":3", "tok:x", "tok:-1", "other:1", f"{LONG_TOKEN}x:1", f"{LONG_TOKEN}:1234567890"]
)
async def test_the_runs_route_refuses_an_id_that_is_not_one_of_this_run_s(app: Any, cursor: str) -> None:
    token = cursor.partition(":")[0] if cursor.startswith(LONG_TOKEN) else "tok"
    reply = await call(app, "GET", f"/api/runs/{token}/stream", headers={"last-event-id": cursor})
    assert (reply.status, reply.json()["error"]) == (
        400,
        {"code": "invalid_event_id", "message": "The event id must be one this run sent, like '<run token>:<n>'."},
    )


async def test_a_resume_with_a_bad_setting_is_a_503_naming_it(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token, events, _ = await finished_run(app)
    monkeypatch.setenv("HEARTBEAT_SECONDS", "often")
    with caplog.at_level(logging.ERROR, logger="streaming.http"):
        reply = await call(app, "GET", f"/api/runs/{token}/stream", headers={"last-event-id": events[0].id})
    assert (reply.status, reply.json()["error"]["code"]) == (503, "invalid_setting")
    assert "HEARTBEAT_SECONDS" in reply.json()["error"]["message"]
    logged = [r.getMessage() for r in caplog.records if r.name == "streaming.http"]
    assert len(logged) == 1 and "HEARTBEAT_SECONDS" in logged[0] and "often" not in logged[0], logged


async def test_with_the_run_store_down_a_start_and_a_resume_are_503(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STREAM_STORE_URL", "redis://127.0.0.1:9/0")  # the discard port: nothing listens
    unavailable = {"code": "store_unavailable", "message": "The stream store (STREAM_STORE_URL) cannot be reached."}
    with caplog.at_level(logging.ERROR, logger="streaming.http"):
        start = await call(app, "GET", AGENT, query="message=Oslo")
        resume = await call(app, "GET", "/api/runs/tok/stream", headers={"last-event-id": "tok:1"})
    assert (start.status, start.json()["error"]) == (503, unavailable)
    assert (resume.status, resume.json()["error"]) == (503, unavailable)
    logged = [r.getMessage() for r in caplog.records if r.name == "streaming.http"]
    assert len(logged) == 2 and all("ConnectionError" in line for line in logged), logged  # why: the store's error
    assert f"run {start.headers['x-run-id']} " in logged[0]


# ------------------------------------------------------------------------------ methods, protocols, capacity


async def test_the_ag_ui_route_speaks_ag_ui_in_process(app: Any) -> None:
    from tests.agui_support import run_input, user

    body = run_input([user("Weather in Oslo?")])
    reply = await call(app, "POST", "/api/agent/ag-ui", **post_json(body))
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in reply.body.decode().splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "RUN_STARTED" and events[0]["threadId"] == body["threadId"]
    assert events[-1]["type"] == "RUN_FINISHED" and "Oslo" in "".join(e.get("delta", "") for e in events)


async def test_head_is_a_405_naming_the_allowed_methods_and_starts_no_run(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route is GET and POST; the framework lets HEAD through with GET."""

    def no_model(*_: Any) -> Any:
        raise AssertionError("HEAD must not run the agent")

    monkeypatch.setattr(llm, "chat_client", no_model)
    reply = await call(app, "HEAD", AGENT, query="message=Oslo")
    assert (reply.status, reply.headers["allow"]) == (405, "GET, POST")  # a server sends HEAD no body


async def test_past_max_concurrent_runs_a_start_is_a_429_with_retry_after(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_RUNS", "1")
    monkeypatch.setenv("OFFLINE_MODEL_DELAY_MS", "200")
    leave = asyncio.Event()
    first = asyncio.create_task(call(app, "GET", AGENT, query="message=Oslo", client_leaves=leave.wait))
    try:
        await asyncio.sleep(0.3)
        with caplog.at_level(logging.INFO, logger="streaming.http"):
            reply = await call(app, "GET", AGENT, query="message=Paris")
        assert (reply.status, reply.headers["retry-after"]) == (429, "5")
        logged = [r.getMessage() for r in caplog.records if r.name == "streaming.http"]
        run_id = reply.headers["x-run-id"]
        assert [m for m in logged if re.search(rf"run {run_id}\b.*\b1\b", m)], "the run id and the limit it hit"
        assert reply.json()["error"] == {
            "code": "too_many_runs",
            "message": "This instance is running as many streams as it allows. Try again shortly.",
        }
    finally:
        leave.set()
        await first


async def test_a_run_gives_its_slot_back_when_it_ends(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_RUNS", "1")
    for place in ("Oslo", "Paris", "Lima"):
        assert (await call(app, "GET", AGENT, query=f"message={place}")).status == 200


async def test_a_bad_store_setting_is_a_503_naming_it(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_STORE_URL", "ftp://127.0.0.1/runs")
    reply = await call(app, "GET", AGENT, query="message=Oslo")
    assert (reply.status, reply.json()["error"]["code"]) == (503, "invalid_setting")
    assert "STREAM_STORE_URL" in reply.json()["error"]["message"] and "ftp" not in reply.json()["error"]["message"]


async def test_a_resume_is_in_the_format_the_reconnecting_client_asks_for(app: Any) -> None:
    token, events, _ = await finished_run(app)
    asks = {"last-event-id": events[0].id, "accept": "application/x-ndjson"}
    reply = await call(app, "GET", f"/api/runs/{token}/stream", headers=asks)
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line)["id"] for line in reply.body.decode().splitlines()] == [e.id for e in events[1:]]


async def test_a_resume_that_fails_unexpectedly_is_a_500_never_a_trace(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import streaming.http

    def broken(_: str) -> None:
        raise RuntimeError("secret-detail")

    monkeypatch.setattr(streaming.http, "parse_event_id", broken)
    with caplog.at_level(logging.ERROR, logger="streaming.http"):
        reply = await call(app, "GET", "/api/runs/tok/stream", headers={"last-event-id": "tok:1"})
    assert (reply.status, reply.json()["error"]) == (
        500,
        {"code": "internal_error", "message": "The request failed unexpectedly."},
    )
    [logged] = [r for r in caplog.records if r.name == "streaming.http"]
    assert "/api/runs/tok/stream" in logged.getMessage() and logged.exc_info, "the path and the traceback"
    assert b"secret" not in reply.body


# ------------------------------------------------------------------------------ what telemetry is told


@dataclass
class Told:
    """The handler's calls to telemetry (whose spans and counts
    tests/test_telemetry.py checks over a real host)."""

    refusals: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    heard: list[Any] = field(default_factory=list)  # what the runs' observers heard: "begin", then the terminal event


@pytest.fixture
def told(monkeypatch: pytest.MonkeyPatch) -> Told:
    import telemetry

    record = Told()

    async def observe_refusal(req, run_id, runner, response, started_ns, code=None):  # type: ignore[no-untyped-def]
        record.refusals.append(
            {"path": req.url.path, "run_id": run_id, "runner": runner, "status": response.status_code}
            | {"started_ns": started_ns, "code": code, "ended_ns": time.time_ns()}
        )

    async def observe_resume(req, response, started_ns):  # type: ignore[no-untyped-def]
        record.resumes.append(
            {"path": req.url.path, "status": response.status_code, "started_ns": started_ns, "ended_ns": time.time_ns()}
        )

    class Observer(telemetry.RunObserver):
        def begin(self) -> None:
            record.heard.append("begin")

        def end(self, terminal: Any = None) -> None:
            record.heard.append(terminal)

    async def observe_run(req, run_id, runner, model):  # type: ignore[no-untyped-def]
        record.runs.append({"path": req.url.path, "run_id": run_id, "runner": runner, "provider": model.provider})
        return Observer()

    monkeypatch.setattr(telemetry, "observe_refusal", observe_refusal)
    monkeypatch.setattr(telemetry, "observe_resume", observe_resume)
    monkeypatch.setattr(telemetry, "observe_run", observe_run)
    return record


async def _one_event(*_: Any) -> AsyncIterator[StreamEvent]:
    yield Done("offline", "offline-demo")


async def test_telemetry_is_told_of_a_refusal_with_its_run_id_runner_status_and_start(
    told: Told, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    before = time.time_ns()
    reply = await call(with_runner(_one_event), "POST", AGENT, **post_json({"messages": []}))
    assert reply.status == 400 and not told.runs and not told.resumes
    [refusal] = told.refusals
    assert refusal["path"] == AGENT and refusal["run_id"] == reply.headers["x-run-id"]
    assert refusal["runner"] is _one_event and refusal["status"] == 400 and refusal["code"] is None
    assert before <= refusal["started_ns"] <= refusal["ended_ns"]


async def test_telemetry_is_told_of_a_client_that_left_mid_body_as_client_gone(
    told: Told, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODEL_PROVIDER", "offline")

    async def leaves() -> None:
        await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, logger="streaming.http"):
        await call(
            with_runner(_one_event),
            "POST",
            AGENT,
            body=b'{"message": "Os',
            headers={"content-type": "application/json"},
            stalls=True,
            client_leaves=leaves,
        )
    [refusal] = told.refusals
    assert (refusal["status"], refusal["code"]) == (400, "client_gone") and not told.runs
    [logged] = [r.getMessage() for r in caplog.records if r.name == "streaming.http"]
    assert f"run {refusal['run_id']}" in logged, "a client that left is logged under its run id"


async def test_telemetry_is_told_of_a_run_and_of_nothing_refused(told: Told, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    reply = await call(with_runner(_one_event), "GET", AGENT, query="message=hi")
    assert reply.status == 200 and not told.refusals and not told.resumes
    assert told.runs == [
        {"path": AGENT, "run_id": reply.headers["x-run-id"], "runner": _one_event, "provider": "offline"}
    ]
    for _ in range(200):  # the run's task ends just after its response (closing the runner), bounded
        if len(told.heard) == 2:
            break
        await asyncio.sleep(0.01)
    assert told.heard[0] == "begin" and isinstance(told.heard[1], Done), "the run's own observer hears it"


async def test_telemetry_is_told_of_each_resume_and_its_answer_never_of_a_refusal(app: Any, told: Told) -> None:
    token, events, _ = await finished_run(app)
    before = time.time_ns()
    resumed = await call(app, "GET", f"/api/runs/{token}/stream", headers={"last-event-id": events[0].id})
    reconnect = await call(app, "GET", AGENT, query="message=Oslo", headers={"last-event-id": "unknown:1"})
    refused = await call(app, "GET", f"/api/runs/{token}/stream", headers={"last-event-id": "nonsense"})
    assert (resumed.status, reconnect.status, refused.status) == (200, 204, 400)
    assert [(r["path"], r["status"]) for r in told.resumes] == [
        (f"/api/runs/{token}/stream", 200),
        (AGENT, 204),
        (f"/api/runs/{token}/stream", 400),
    ]
    assert all(before <= r["started_ns"] <= r["ended_ns"] for r in told.resumes)
    assert not told.refusals, "a resume's telemetry is the resume's, not a refused start's"


# ------------------------------------------------------------------------------ resuming a live run


async def _cut_live_run(app: Any) -> tuple[str, str]:
    """Start a run and leave after its first event: its token and run id
    (the run goes on, waiting for a reader within the resume window)."""
    first_write = asyncio.Event()

    async def on_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            first_write.set()

    reply = await call(app, "GET", AGENT, query="message=hi", send_hook=on_send, client_leaves=first_write.wait)
    assert reply.status == 200
    return reply.headers["x-run-token"], reply.headers["x-run-id"]


async def test_a_live_run_resumed_from_its_latest_event_gets_the_rest_with_the_stream_s_settings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A resume of a run still going is a stream like the first: it waits for
    what comes next, with heartbeats (HEARTBEAT_SECONDS) while nothing does,
    and writes coalesced (COALESCE_MS); an id past the latest event is 204."""
    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    monkeypatch.setenv("HEARTBEAT_SECONDS", "0.1")
    monkeypatch.setenv("COALESCE_MS", "2")
    go_on = asyncio.Event()

    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        yield TextDelta("one", "weather")
        await go_on.wait()
        for i in range(20):
            yield TextDelta(f"t{i}", "weather")
            for _ in range(5):  # a few turns of the loop apart: without a window, a write each
                await asyncio.sleep(0)
        yield Done("offline", "offline-demo")

    app = with_runner(runner)
    try:
        token, run_id = await _cut_live_run(app)
        past = await call(app, "GET", AGENT, query="message=hi", headers={"last-event-id": f"{token}:2"})
        assert (past.status, past.body) == (204, b""), "no event 2 yet: nothing to resume after it"
        with caplog.at_level(logging.INFO, logger="streaming.http"):
            resumed = asyncio.create_task(
                call(app, "GET", AGENT, query="message=hi", headers={"last-event-id": f"{token}:1"})
            )
            await asyncio.sleep(0.35)
            go_on.set()
            reply = await resumed
    finally:
        go_on.set()
    assert reply.status == 200 and reply.headers["x-run-id"] == run_id
    events = sse_events(reply)
    assert [e.id for e in events] == [f"{token}:{n}" for n in range(2, 23)] and events[-1].event == "done"
    pings = [body for _, body in reply.writes if body == b": ping\n\n"]
    assert len(pings) >= 2, reply.writes
    assert len([body for _, body in reply.writes if b"data: " in body]) <= 10, "COALESCE_MS shares writes"
    resumes = [r.getMessage() for r in caplog.records if "resumed" in r.getMessage()]
    assert len(resumes) == 1 and f"run {run_id}" in resumes[0] and "after event 1" in resumes[0], resumes
    assert AGENT in resumes[0], "and on which route"


async def test_a_resumed_reader_that_stops_reading_is_cut_after_send_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PROVIDER", "offline")
    monkeypatch.setenv("SEND_TIMEOUT_SECONDS", "0.3")
    go_on = asyncio.Event()

    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        yield TextDelta("one", "weather")
        await go_on.wait()
        yield TextDelta("two", "weather")
        yield Done("offline", "offline-demo")

    async def stop_reading(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the socket buffer is full and nobody reads

    app = with_runner(runner)
    try:
        token, _ = await _cut_live_run(app)
        go_on.set()
        reply = await asyncio.wait_for(
            call(app, "GET", AGENT, query="m=1", headers={"last-event-id": f"{token}:1"}, send_hook=stop_reading), 10
        )
    finally:
        go_on.set()
    assert reply.status == 200


# ------------------------------------------------------------------------------ start_stream refusing


class HeldStream:
    """A runner's stream that holds a connection until closed (an SDK
    stream: not a generator, so closing it runs code even unstarted)."""

    def __init__(self) -> None:
        self.closed = False

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> StreamEvent:
        await asyncio.Event().wait()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


async def test_a_start_refused_for_a_bad_store_setting_gives_its_slot_back_and_names_the_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streaming.encoders import SSEEncoder
    from streaming.http import start_stream
    from streaming.slots import RunSlots

    monkeypatch.setenv("STREAM_STORE_URL", "ftp://127.0.0.1/runs")
    slots = RunSlots()
    with caplog.at_level(logging.ERROR, logger="streaming.http"):
        response = await start_stream(HeldStream(), encoder=SSEEncoder(), run_id="r-8", slot=slots.try_acquire(1))
    assert response.status_code == 503
    assert json.loads(response.body)["error"]["code"] == "invalid_setting"
    assert "STREAM_STORE_URL" in json.loads(response.body)["error"]["message"]
    assert slots.active == 0, "the slot is given back"
    [logged] = [r.getMessage() for r in caplog.records if r.name == "streaming.http"]
    assert "run r-8 " in logged and "STREAM_STORE_URL" in logged


async def test_a_start_refused_for_the_store_being_down_closes_the_stream_and_gives_its_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streaming.encoders import SSEEncoder
    from streaming.http import start_stream
    from streaming.slots import RunSlots

    monkeypatch.setenv("STREAM_STORE_URL", "redis://127.0.0.1:9/0")  # the discard port: nothing listens
    slots, stream = RunSlots(), HeldStream()
    response = await start_stream(stream, encoder=SSEEncoder(), run_id="r-9", slot=slots.try_acquire(1))
    assert response.status_code == 503 and json.loads(response.body)["error"]["code"] == "store_unavailable"
    assert slots.active == 0 and stream.closed, "nothing is left holding a place or a connection"


async def test_a_start_with_no_limits_given_reads_them_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming.encoders import SSEEncoder
    from streaming.http import start_stream

    monkeypatch.setenv("HEARTBEAT_SECONDS", "0.1")
    monkeypatch.setenv("RUN_DEADLINE_SECONDS", "0.35")
    response = await start_stream(HeldStream(), encoder=SSEEncoder(), run_id="r-10")
    bodies: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    await asyncio.wait_for(response({"type": "http"}, receive, send), 10)
    wire = b"".join(bodies)
    assert wire.count(b": ping\n\n") >= 2 and b'"code":"timeout"' in wire


async def test_framework_log_level_is_applied_to_the_framework_s_logger_per_request(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streaming.http

    framework = logging.getLogger("agent_framework")
    before = framework.level
    monkeypatch.setattr(streaming.http, "_framework_level", [])
    try:
        monkeypatch.setenv("FRAMEWORK_LOG_LEVEL", "info")
        assert (await call(app, "GET", AGENT, query="message=Oslo")).status == 200
        assert framework.level == logging.INFO
        monkeypatch.setenv("FRAMEWORK_LOG_LEVEL", "error")
        assert (await call(app, "GET", AGENT, query="message=Oslo")).status == 200
        assert framework.level == logging.ERROR
    finally:
        framework.setLevel(before)  # and the loggers' caches with it


async def test_a_run_past_its_byte_cap_still_streams_every_event_to_its_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RESUME_MAX_RUN_BYTES trims what is kept for resuming, never what the
    reader has yet to send: a burst far over the cap, before the first
    write, arrives whole and in order."""
    monkeypatch.setenv("RESUME_MAX_RUN_BYTES", str(64 * 1024))

    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        for i in range(200):  # about 200 KB, on one turn of the loop
            yield TextDelta(f"{i:04d}" + "x" * 1000, "weather")
        await asyncio.sleep(0.01)
        for i in range(200, 400):
            yield TextDelta(f"{i:04d}" + "x" * 1000, "weather")
            if i % 50 == 0:
                await asyncio.sleep(0)
        yield Done("offline", "offline-demo")

    reply = await run_with(runner, monkeypatch)
    events = sse_events(reply)
    token = reply.headers["x-run-token"]
    assert [e.id for e in events] == [f"{token}:{n}" for n in range(1, 402)]
    assert [e.data["text"][:4] for e in events[:-1]] == [f"{i:04d}" for i in range(400)]
    assert events[-1].event == "done"


async def test_an_ag_ui_run_whose_client_leaves_is_cancelled_at_once(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """AG-UI events carry no ids to resume from: a run whose client leaves is
    not kept for RESUME_WINDOW_SECONDS, it ends (and gives its place back)
    before its response does."""
    from tests.agui_support import run_input, user

    monkeypatch.setenv("MAX_CONCURRENT_RUNS", "1")
    monkeypatch.setenv("OFFLINE_MODEL_DELAY_MS", "50")
    first_write = asyncio.Event()

    async def on_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            first_write.set()

    body = post_json(run_input([user("Weather in Oslo?")]))
    left = await call(app, "POST", "/api/agent/ag-ui", **body, send_hook=on_send, client_leaves=first_write.wait)
    assert left.status == 200 and b"RUN_FINISHED" not in left.body
    again = await call(app, "POST", "/api/agent/ag-ui", **post_json(run_input([user("Weather in Oslo?")])))
    assert again.status == 200, "the first run's place is free: it was cancelled, not kept for a resume"


async def test_coalesce_ms_lets_tokens_a_few_turns_apart_share_a_write(monkeypatch: pytest.MonkeyPatch) -> None:
    async def runner(*_: Any) -> AsyncIterator[StreamEvent]:
        for i in range(20):
            yield TextDelta(f"t{i}", "weather")
            for _ in range(5):  # a few turns of the loop apart: without a window, a write each
                await asyncio.sleep(0)
        yield Done("offline", "offline-demo")

    def writes(reply: Reply) -> int:
        return len([body for _, body in reply.writes if b"data: " in body])

    at_once = await run_with(runner, monkeypatch)
    monkeypatch.setenv("COALESCE_MS", "2")
    coalesced = await run_with(runner, monkeypatch)
    assert len(sse_events(at_once)) == len(sse_events(coalesced)) == 21
    assert writes(at_once) >= 15 and writes(coalesced) <= 10


async def test_a_run_cancelled_before_it_began_still_gives_its_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process stopping may cancel a run's task before its first step:
    its producer (whose own ``finally`` gives the slot back) never runs, the
    run's cleanup still does."""
    from streaming.encoders import SSEEncoder
    from streaming.http import start_stream
    from streaming.slots import RunSlots

    slots = RunSlots()
    response = await start_stream(HeldStream(), encoder=SSEEncoder(), run_id="r-11", slot=slots.try_acquire(1))
    response.run.task.cancel()  # before the task's first step
    for _ in range(200):  # the cleanups run in a task of their own, bounded
        if not slots.active:
            break
        await asyncio.sleep(0.01)
    assert slots.active == 0 and response.run.ended


async def test_a_reconnect_that_fails_unexpectedly_is_a_500_with_its_run_id(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An EventSource reconnecting (Last-Event-ID on the stream endpoint) is
    not counted as a refused start, but its 500 still carries the id its log
    line has."""
    import streaming.http

    def broken(_: str) -> None:
        raise RuntimeError("secret-detail")

    monkeypatch.setattr(streaming.http, "parse_event_id", broken)
    with caplog.at_level(logging.ERROR, logger="streaming.http"):
        reply = await call(app, "GET", AGENT, query="message=Oslo", headers={"last-event-id": "tok:1"})
    assert reply.status == 500 and reply.json()["error"]["code"] == "internal_error"
    [logged] = [r.getMessage() for r in caplog.records if r.name == "streaming.http"]
    assert f"run {reply.headers['x-run-id']}:" in logged
