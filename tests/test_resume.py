"""Resuming a run from the last event a client saw (in-memory run log).

Over real loopback HTTP: the app on the local host, with the offline model
(deterministic) or ``FakeOpenAI`` where the model call itself is observed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from settings import SettingsError, resume_settings
from streaming.events import Done, TextDelta
from streaming.runlog import MemoryRunStore, Run, parse_event_id
from tests.fake_openai import FakeOpenAI, text_response
from tests.support import AppServer, parse_sse

AGENT = "/api/agent/stream"
WORKFLOW = "/api/workflow/stream"
MESSAGE = "What is the weather in Seattle and Paris?"
VALUES = {
    "MODEL_PROVIDER": "offline",
    "OFFLINE_MODEL_DELAY_MS": "5",
    "RESUME_WINDOW_SECONDS": "5",
    "HEARTBEAT_SECONDS": "60",
}


@pytest.fixture(scope="module")
def app() -> Iterator[AppServer]:
    with AppServer(VALUES) as server:
        yield server


@pytest.fixture
def client(app: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.url, timeout=30) as client:
        yield client


def blocks(raw: bytes) -> list[bytes]:
    """SSE blocks (each ends with a blank line), comments dropped."""
    return [b + b"\n\n" for b in raw.split(b"\n\n") if b and not b.startswith(b":")]


def read_until(response: httpx.Response, count: int) -> bytes:
    """The first ``count`` whole SSE blocks of a stream, then stop reading."""
    raw = b""
    for chunk in response.iter_raw():
        raw += chunk
        if len(blocks(raw.rpartition(b"\n\n")[0] + b"\n\n")) >= count:
            break
    return b"".join(blocks(raw.rpartition(b"\n\n")[0] + b"\n\n")[:count])


def last_id(raw: bytes) -> str:
    return re.findall(rb"^id: (\S+)$", raw, re.M)[-1].decode()


def cut(client: httpx.Client, path: str, count: int, **kwargs) -> tuple[bytes, httpx.Headers]:
    """Start a run, read ``count`` events, drop the connection."""
    with client.stream("POST", path, json={"message": MESSAGE}, **kwargs) as response:
        assert response.status_code == 200
        return read_until(response, count), response.headers


def normalised(raw: bytes) -> bytes:
    """A run's bytes without what differs between two runs: the token, call ids and the elapsed time."""
    raw = re.sub(rb"id: [\w-]+:", b"id: T:", raw)
    raw = re.sub(rb'"call_id":"[^"]*"', b'"call_id":"C"', raw)
    return re.sub(rb'"elapsed_ms":\d+', b'"elapsed_ms":0', raw)


@pytest.mark.parametrize("path", [AGENT, WORKFLOW])
def test_a_resumed_stream_is_the_same_bytes_as_an_uninterrupted_run(client: httpx.Client, path: str) -> None:
    first, headers = cut(client, path, 6)
    token = headers["x-run-token"]
    assert len(token) == 22 and token not in headers["x-run-id"]
    resumed = client.get(f"/api/runs/{token}/stream", headers={"Last-Event-ID": last_id(first)})
    assert resumed.status_code == 200
    assert resumed.headers["x-run-id"] == headers["x-run-id"]
    whole = first + resumed.content
    events = parse_sse(whole.decode().split("\n"))
    assert [e.id for e in events] == [f"{token}:{n}" for n in range(1, len(events) + 1)]
    assert events[-1].event == "done" and len(events) > 8
    # The same run read from the start after it finished, and another run never cut: the same bytes.
    replay = client.get(f"/api/runs/{token}/stream", params={"after": f"{token}:0"})
    assert replay.content == whole
    uninterrupted = client.post(path, json={"message": MESSAGE})
    assert normalised(uninterrupted.content) == normalised(whole)


def test_event_source_reconnect_on_the_same_endpoint_resumes(client: httpx.Client, app: AppServer) -> None:
    first, headers = cut(client, AGENT, 3)
    started = len(app.logs())
    resumed = client.get(AGENT, params={"message": MESSAGE}, headers={"Last-Event-ID": last_id(first)})
    assert resumed.status_code == 200 and resumed.headers["x-run-id"] == headers["x-run-id"]
    events = parse_sse(resumed.text.split("\n"))
    assert events[0].id == f"{headers['x-run-token']}:4" and events[-1].event == "done"
    assert f"run {headers['x-run-id']}: resumed after event 3" in app.logs()
    assert not re.search(r"run \S+: GET /api/agent/stream via", app.logs()[started:]), "the agent ran again"


def test_after_the_terminal_event_unknown_or_expired_ids_get_204(client: httpx.Client) -> None:
    response = client.post(AGENT, json={"message": MESSAGE})
    token = response.headers["x-run-token"]
    terminal = last_id(response.content)
    seq = int(terminal.rpartition(":")[2])
    for cursor in (terminal, f"{token}:{seq + 5}", "AAAAAAAAAAAAAAAAAAAAAA:1", "12"):
        for path in (AGENT, f"/api/runs/{token}/stream"):
            if path != AGENT and not cursor.startswith(token):
                continue
            r = client.get(path, params={"message": "x"}, headers={"Last-Event-ID": cursor})
            assert (r.status_code, r.content) == (204, b""), (path, cursor)
    assert client.get("/api/runs/AAAAAAAAAAAAAAAAAAAAAA/stream").status_code == 204
    # One before the end: just the terminal event.
    last = client.get(f"/api/runs/{token}/stream", headers={"Last-Event-ID": f"{token}:{seq - 1}"})
    assert [e.event for e in parse_sse(last.text.split("\n"))] == ["done"]


def test_an_id_of_another_run_or_not_an_id_is_a_400_on_the_runs_route(client: httpx.Client) -> None:
    token = client.post(AGENT, json={"message": MESSAGE}).headers["x-run-token"]
    for after in ("nonsense", "other-token:1", f"{token}:x"):
        r = client.get(f"/api/runs/{token}/stream", params={"after": after})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_event_id", after


def test_ndjson_and_text_resume_with_the_same_bytes(client: httpx.Client) -> None:
    for accept in ("application/x-ndjson", "text/plain"):
        headers = {"Accept": accept}
        original = client.post(WORKFLOW, json={"message": "Research Oslo and write a poem"}, headers=headers)
        token = original.headers["x-run-token"]
        replay = client.get(f"/api/runs/{token}/stream", headers=headers)  # no cursor: from the start
        assert replay.status_code == 200 and replay.content == original.content, accept
    lines = original.text.strip()
    assert "\n\n" in lines  # the text encoder's blank line between the two agents survived the replay


def test_two_clients_read_one_run(app: AppServer) -> None:
    with (
        httpx.Client(base_url=app.url, timeout=30) as a,
        httpx.Client(base_url=app.url, timeout=30) as b,
        a.stream("POST", AGENT, json={"message": MESSAGE}) as first,
        b.stream("GET", f"/api/runs/{first.headers['x-run-token']}/stream") as second,
    ):
        one, two = first.read(), second.read()
    assert one == two and one.endswith(b"\n\n") and b"event: done" in one


def test_resume_settings_are_validated() -> None:
    assert resume_settings({}).window_s == 30 and resume_settings({}).retention_s == 300
    assert resume_settings({}).coalesce_s == 0
    for name, value in (("COALESCE_MS", "3"), ("RESUME_WINDOW_SECONDS", "-1"), ("STREAM_STORE_URL", "http://x")):
        with pytest.raises(SettingsError, match=name):
            resume_settings({name: value})
    assert "secret" not in repr(resume_settings({"STREAM_STORE_URL": "redis://:secret@127.0.0.1:1/0"}))


# ------------------------------------------------------------------------------------------ retention and caps


def test_finished_runs_expire_after_the_retention() -> None:
    with (
        AppServer({**VALUES, "RESUME_RETENTION_SECONDS": "0.5"}) as app,
        httpx.Client(base_url=app.url, timeout=30) as client,
    ):
        token = client.post(AGENT, json={"message": MESSAGE}).headers["x-run-token"]
        assert client.get(f"/api/runs/{token}/stream").status_code == 200
        time.sleep(0.8)
        assert client.get(f"/api/runs/{token}/stream").status_code == 204


def test_oldest_finished_runs_are_evicted_over_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryRunStore(retention_s=300, max_runs=2)
    runs = []
    for i in range(3):
        run = store.create(run_id=f"r{i}", window_s=0, producer=None)  # type: ignore[arg-type]
        run.append(Done("offline", "m"))
        store._ended(run)
        runs.append(run)
    assert store.get(runs[0].token) is None
    assert store.get(runs[1].token) is runs[1] and store.get(runs[2].token) is runs[2]
    assert "run r0: evicted" in caplog.text


def test_a_run_over_its_byte_cap_drops_events_every_reader_has_sent(caplog: pytest.LogCaptureFixture) -> None:
    class Reader:
        position = 0

    run = Run(run_id="big")
    run.max_bytes = 10_000
    reader = Reader()
    run.attach(reader)
    for _ in range(100):
        run.append(TextDelta("x" * 100, "a"))
    assert run.base == 0, "nothing is dropped that a reader has not sent"
    reader.position = 90
    run.append(TextDelta("x" * 100, "a"))
    assert run.base > 0 and run.bytes <= run.max_bytes + 400 and run.last_seq == 101
    assert "run big: over 10000 bytes" in caplog.text


def test_event_ids_parse() -> None:
    assert parse_event_id("abc_-DEF:12") == ("abc_-DEF", 12)
    assert parse_event_id("a:b:12") == ("a:b", 12), "the number is after the last colon"
    for bad in ("12", ":3", "abc:", "abc:-1", "abc:1.5", "a" * 70 + ":1"):
        assert parse_event_id(bad) is None, bad


# ------------------------------------------------------------------------------------------ the resume window


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="k") as fake:
        yield fake


def model_app(fake: FakeOpenAI, window: str) -> AppServer:
    return AppServer(
        {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "k",
            "OPENAI_MODEL": "m",
            "MODEL_MAX_RETRIES": "0",
            "RESUME_WINDOW_SECONDS": window,
        }
    ).start()


def test_a_run_outlives_its_client_for_the_window_then_is_cancelled(fake: FakeOpenAI) -> None:
    answer = " ".join(f"w{i}" for i in range(1000))  # 20 s: the model is still writing when the window ends
    with fake.fresh():
        fake.enqueue(text_response(answer, delay=0.02))
        app = model_app(fake, "1")
        try:
            with httpx.Client(base_url=app.url, timeout=10) as client:
                first, headers = cut(client, AGENT, 3)
                left = time.monotonic()
                time.sleep(0.5)
                assert fake.open_streams == 1 and fake.cancelled_streams == 0, "cancelled inside the window"
                assert fake.wait_until(lambda f: f.cancelled_streams == 1, 8.0), "not cancelled after the window"
                assert 0.9 < time.monotonic() - left < 8.0  # a 1 s window, with room for a loaded machine
                assert fake.wait_for_no_open_streams(2.0)
                # A client coming back now reads what there was, and the run's end.
                late = client.get(
                    f"/api/runs/{headers['x-run-token']}/stream", headers={"Last-Event-ID": last_id(first)}
                )
                events = parse_sse(late.text.split("\n"))
                assert events[-1].event == "error" and events[-1].data["error"]["code"] == "cancelled"
            assert "no client came back within 1 s" in app.logs()
        finally:
            app.close()


def test_a_client_back_within_the_window_keeps_the_run(fake: FakeOpenAI) -> None:
    answer = " ".join(f"w{i}" for i in range(60))
    with fake.fresh():
        fake.enqueue(text_response(answer, delay=0.02))
        app = model_app(fake, "3")
        try:
            with httpx.Client(base_url=app.url, timeout=10) as client:
                first, headers = cut(client, AGENT, 3)
                time.sleep(0.3)
                rest = client.get(
                    f"/api/runs/{headers['x-run-token']}/stream", headers={"Last-Event-ID": last_id(first)}
                )
            events = parse_sse((first + rest.content).decode().split("\n"))
            assert events[-1].event == "done"
            assert "".join(e.data["text"] for e in events if e.event == "message") == answer
            assert fake.cancelled_streams == 0
        finally:
            app.close()


async def test_a_run_releases_its_resources_however_it_ends() -> None:
    """Per-run resources (a concurrency slot, a lease) hang on the run, not on a connection."""
    import asyncio

    released: list[str] = []

    async def release_async() -> None:
        await asyncio.sleep(0)
        released.append("async")

    async def finishing(emit) -> None:
        emit(Done("offline", "m"))

    async def endless(emit) -> None:
        while True:
            emit(TextDelta("x", "a"))
            await asyncio.sleep(0.01)

    async def failing(emit) -> None:
        raise RuntimeError("bug")

    for producer, window in ((finishing, 0.0), (endless, 0.05), (failing, 0.0)):
        released.clear()

        class Reader:
            position = 0

        run = Run(run_id="r", window_s=window)
        run.producer = producer
        run.add_cleanup(lambda: released.append("sync"))
        run.add_cleanup(release_async)
        reader = Reader()
        run.attach(reader)
        run.start()
        await asyncio.sleep(0.02)
        await run.detach(reader)  # the last reader leaves: at once, or after the window
        await asyncio.wait_for(asyncio.shield(run.task), 2)
        assert sorted(released) == ["async", "sync"], producer.__name__
        assert run.ended and run.events[-1].terminal


async def test_a_run_nobody_ever_reads_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from streaming import runlog

    monkeypatch.setattr(runlog, "ORPHAN_GRACE_S", 0.05)
    closed = asyncio.Event()

    async def endless(emit) -> None:
        try:
            while True:
                emit(TextDelta("x", "a"))
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    run = await runlog.MemoryStore().start_run(run_id="orphan", window_s=0, producer=endless)
    await asyncio.wait_for(closed.wait(), 2)
    assert run.cut_short and run.events[-1].code == "cancelled"


async def test_a_run_cancelled_before_its_first_step_still_ends_and_releases() -> None:
    import asyncio

    released: list[str] = []

    async def never_called(emit) -> None:
        raise AssertionError("the task was cancelled before it began")

    run = Run(run_id="early")
    run.producer = never_called
    run.add_cleanup(lambda: released.append("slot"))
    run.start()
    await run.cancel()  # before the task's first step
    await asyncio.sleep(0.01)
    assert released == ["slot"]
    assert run.ended and run.events[-1].code == "cancelled"
