"""Resuming across instances: two app processes sharing one real Redis
(Debian's ``redis-server``, started here on a free loopback port with no
persistence). A run started on one instance is replayed and tailed by the
other, byte for byte."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from streaming.events import AgentStarted, Done, Error, TextDelta, ToolCall, ToolResult
from streaming.redislog import _object_id, decode_event, encode_event, entra_id_options
from tests.fake_openai import FakeOpenAI, text_response
from tests.support import AppServer, RedisServer, parse_sse, refusing_port
from tests.test_resume import AGENT, MESSAGE, WORKFLOW, cut, last_id, normalised

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def offline_values(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "MODEL_PROVIDER": "offline",
        "OFFLINE_MODEL_DELAY_MS": "5",
        "STREAM_STORE_URL": redis_url,
        "STREAM_LEASE_SECONDS": "1",
        "RESUME_WINDOW_SECONDS": "5",
        "HEARTBEAT_SECONDS": "60",
        **extra,
    }


# The expiry test's retention; the others keep runs the default 300 s, which no slow machine outlasts.
RETENTION_S = 3.0


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer) -> Iterator[tuple[AppServer, AppServer]]:
    """Two instances sharing ``redis_server``."""
    values = offline_values(redis_server.url)
    with AppServer(values) as one, AppServer(values) as two:
        yield one, two


@pytest.mark.parametrize("path", [AGENT, WORKFLOW])
def test_cut_on_one_instance_resumed_on_the_other_is_the_same_bytes(
    pair: tuple[AppServer, AppServer], path: str
) -> None:
    one, two = pair
    with httpx.Client(base_url=one.url, timeout=30) as a, httpx.Client(base_url=two.url, timeout=30) as b:
        first, headers = cut(a, path, 5)
        token = headers["x-run-token"]
        resumed = b.get(f"/api/runs/{token}/stream", headers={"Last-Event-ID": last_id(first)})
        assert resumed.status_code == 200 and resumed.headers["x-run-id"] == headers["x-run-id"]
        whole = first + resumed.content
        events = parse_sse(whole.decode().split("\n"))
        assert [e.id for e in events] == [f"{token}:{n}" for n in range(1, len(events) + 1)]
        assert events[-1].event == "done"
        # Replayed from the start on either instance once finished, and a run never cut: the same bytes.
        assert b.get(f"/api/runs/{token}/stream").content == whole
        assert a.get(f"/api/runs/{token}/stream").content == whole
        assert normalised(a.post(path, json={"message": MESSAGE}).content) == normalised(whole)
    assert f"run {headers['x-run-id']}: resumed after event 5" in two.logs()


def test_event_source_reconnect_to_the_other_instance(pair: tuple[AppServer, AppServer]) -> None:
    one, two = pair
    with httpx.Client(base_url=one.url, timeout=30) as a, httpx.Client(base_url=two.url, timeout=30) as b:
        first, headers = cut(a, AGENT, 2)
        rest = b.get(AGENT, params={"message": MESSAGE}, headers={"Last-Event-ID": last_id(first)})
        assert rest.status_code == 200
        events = parse_sse((first + rest.content).decode().split("\n"))
        assert events[-1].event == "done" and events[2].id == f"{headers['x-run-token']}:3"


def test_two_clients_on_two_instances_read_one_run(pair: tuple[AppServer, AppServer]) -> None:
    one, two = pair
    with (
        httpx.Client(base_url=one.url, timeout=30) as a,
        httpx.Client(base_url=two.url, timeout=30) as b,
        a.stream("POST", AGENT, json={"message": MESSAGE}) as first,
    ):
        token = first.headers["x-run-token"]
        with b.stream("GET", f"/api/runs/{token}/stream") as second:
            one_bytes, two_bytes = first.read(), second.read()
    assert one_bytes == two_bytes and b"event: done" in one_bytes


def test_finished_unknown_and_bad_ids_on_the_other_instance(pair: tuple[AppServer, AppServer]) -> None:
    one, two = pair
    with httpx.Client(base_url=one.url, timeout=30) as a, httpx.Client(base_url=two.url, timeout=30) as b:
        done = a.post(AGENT, json={"message": MESSAGE})
        token, terminal = done.headers["x-run-token"], last_id(done.content)
        seq = int(terminal.rpartition(":")[2])
        assert b.get(f"/api/runs/{token}/stream", headers={"Last-Event-ID": terminal}).status_code == 204
        assert b.get(f"/api/runs/{token}/stream", params={"after": f"{token}:{seq + 1}"}).status_code == 204
        assert b.get("/api/runs/AAAAAAAAAAAAAAAAAAAAAA/stream").status_code == 204
        assert b.get(f"/api/runs/{token}/stream", params={"after": "x:1"}).status_code == 400
        tail = b.get(f"/api/runs/{token}/stream", params={"after": f"{token}:{seq - 1}"})
        assert [e.event for e in parse_sse(tail.text.split("\n"))] == ["done"]


def test_expired_runs_get_204(redis_server: RedisServer) -> None:
    values = offline_values(redis_server.url, RESUME_RETENTION_SECONDS=str(RETENTION_S))
    with AppServer(values) as one, AppServer(values) as two, httpx.Client(timeout=30) as client:
        token = client.post(one.url + AGENT, json={"message": MESSAGE}).headers["x-run-token"]
        finished = time.monotonic()
        assert client.get(f"{two.url}/api/runs/{token}/stream").status_code == 200
        time.sleep(max(0.0, RETENTION_S + 1.2 - (time.monotonic() - finished)))
        assert client.get(f"{two.url}/api/runs/{token}/stream").status_code == 204
        assert client.get(f"{one.url}/api/runs/{token}/stream").status_code == 204


def test_redis_down_at_start_is_a_clear_503() -> None:
    with (
        refusing_port() as port,
        AppServer(offline_values(f"redis://127.0.0.1:{port}/0")) as app,
        httpx.Client(base_url=app.url, timeout=30) as client,
    ):
        response = client.post(AGENT, json={"message": MESSAGE})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
        assert "STREAM_STORE_URL" in response.json()["error"]["message"]
        assert client.get(f"/api/runs/{'A' * 22}/stream").status_code == 503
        assert "Traceback" not in app.logs()


def test_redis_lost_mid_run_the_live_stream_still_ends_and_the_loss_is_logged() -> None:
    redis = RedisServer().start()
    try:
        values = offline_values(redis.url, OFFLINE_MODEL_DELAY_MS="30")
        with AppServer(values) as app, httpx.Client(base_url=app.url, timeout=30) as client:
            with client.stream("POST", AGENT, json={"message": MESSAGE}) as response:
                lines = []
                for line in response.iter_lines():
                    lines.append(line)
                    if len(lines) == 12:
                        redis.stop()
            events = parse_sse(lines)
            assert events[-1].event == "done"
            assert re.search(r"run \S+: the stream store failed", app.logs()), app.logs()[-2000:]
    finally:
        redis.stop()


def test_a_reader_of_a_run_whose_instance_died_gets_run_lost(
    redis_server: RedisServer, pair: tuple[AppServer, AppServer]
) -> None:
    _, two = pair
    with httpx.Client(timeout=30) as client:
        one = AppServer(offline_values(redis_server.url, OFFLINE_MODEL_DELAY_MS="50")).start()
        try:
            first, headers = cut(client, one.url + AGENT, 4)  # type: ignore[arg-type]
        finally:
            one.process.kill()  # type: ignore[union-attr]
            one.close()
        started = time.monotonic()
        rest = client.get(
            f"{two.url}/api/runs/{headers['x-run-token']}/stream", headers={"Last-Event-ID": last_id(first)}
        )
        events = parse_sse(rest.text.split("\n"))
        assert events[-1].event == "error" and events[-1].data["error"]["code"] == "run_lost"
        assert time.monotonic() - started < 5


# ------------------------------------------------------------------------------ the window, across instances


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="k") as fake:
        yield fake


def model_values(fake: FakeOpenAI, redis_url: str, window: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": "k",
        "OPENAI_MODEL": "m",
        "MODEL_MAX_RETRIES": "0",
        "STREAM_STORE_URL": redis_url,
        "STREAM_LEASE_SECONDS": "1",
        "RESUME_WINDOW_SECONDS": window,
    }


WINDOW_S = 2


@pytest.fixture(scope="module")
def model_pair(fake: FakeOpenAI, redis_server: RedisServer) -> Iterator[tuple[AppServer, AppServer]]:
    """Two instances on ``fake``, sharing ``redis_server``, with a 2 s resume
    window: short for a test, long enough that a loaded machine reconnects
    within it."""
    values = model_values(fake, redis_server.url, str(WINDOW_S))
    with AppServer(values) as one, AppServer(values) as two:
        yield one, two


def test_the_window_expiring_cancels_the_model_call(fake: FakeOpenAI, model_pair: tuple[AppServer, AppServer]) -> None:
    with fake.fresh():
        # 20 s of answer: the model is still writing when the window runs out.
        fake.enqueue(text_response(" ".join(f"w{i}" for i in range(1000)), delay=0.02))
        with httpx.Client(base_url=model_pair[0].url, timeout=30) as client:
            cut(client, AGENT, 3)
            left = time.monotonic()
            assert fake.wait_until(lambda f: f.cancelled_streams == 1, WINDOW_S + 8), "not cancelled after the window"
            assert time.monotonic() - left > WINDOW_S - 0.1


def test_a_reader_on_another_instance_keeps_the_run_going(
    fake: FakeOpenAI, model_pair: tuple[AppServer, AppServer]
) -> None:
    answer = " ".join(f"w{i}" for i in range(250))  # about 7.5 s at 30 ms a word: well past the window
    one, two = model_pair
    with fake.fresh():
        fake.enqueue(text_response(answer, delay=0.03))
        with httpx.Client(timeout=30) as client:
            first, headers = cut(client, one.url + AGENT, 3)  # type: ignore[arg-type]
            rest = client.get(
                f"{two.url}/api/runs/{headers['x-run-token']}/stream", headers={"Last-Event-ID": last_id(first)}
            )
            events = parse_sse((first + rest.content).decode().split("\n"))
            assert events[-1].event == "done", events[-1]
            assert "".join(e.data["text"] for e in events if e.event == "message") == answer
            assert fake.cancelled_streams == 0


# ------------------------------------------------------------------------------------------ units


def test_events_survive_the_trip_through_json() -> None:
    for event in (
        AgentStarted("a"),
        TextDelta("Zürich\n", "a"),
        ToolCall("a", "c", "get_weather", {"location": "Oslo"}),
        ToolResult("a", "c", "get_weather", {"x": [1, 2]}, is_error=True),
        Done("offline", "m", {"total_tokens": 3}, 12),
        Error("timeout", "slow"),
    ):
        assert decode_event(encode_event(event)) == event


def test_entra_id_only_for_rediss_without_a_password() -> None:
    assert entra_id_options("redis://127.0.0.1:6379") == {}
    assert entra_id_options("rediss://:key@x.redis.azure.net:10000") == {}
    options = entra_id_options("rediss://x.redis.azure.net:10000")
    assert options["credential_provider"].username is None
    assert entra_id_options("rediss://user-oid@x.redis.azure.net:10000")["credential_provider"].username == "user-oid"
    token = "h." + "eyJvaWQiOiAiMTIzNCJ9" + ".s"  # {"oid": "1234"}
    assert _object_id(token) == "1234"
