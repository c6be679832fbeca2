"""Hardening over real loopback HTTP: the app on the local host
(``AppServer``), the model being ``FakeOpenAI``. What a hostile or unlucky
client, model or network can do, and what it gets. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_openai import FakeOpenAI, ResponseWriter, ScriptedResponse, error_response, text_response
from tests.support import AppServer, parse_sse, text_of

API_KEY = "test-key"
AGENT = "/api/agent/stream"
WORKFLOW = "/api/workflow/stream"


def values(fake: FakeOpenAI, **overrides: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_MODEL": "fake-model",
        "MODEL_MAX_RETRIES": "0",
        "MODEL_TIMEOUT_SECONDS": "5",
        **overrides,
    }


def configured(values: dict[str, str], env: dict[str, str] | None = None) -> AppServer:
    """An AppServer (not started) whose ``values`` this shell's environment cannot override."""
    with pytest.MonkeyPatch.context() as mp:
        for name in (*values, "ALLOWED_HOSTS"):
            mp.delenv(name, raising=False)
        return AppServer(values, env=env)


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    with shared_fake.fresh():
        yield shared_fake


@pytest.fixture(scope="module")
def app(shared_fake: FakeOpenAI) -> Iterator[AppServer]:
    """Small caps, so a test can reach them: 200 characters of output per
    run, 123 output tokens per model call, bodies within 0.5 s."""
    server = configured(
        values(
            shared_fake,
            MAX_RUN_OUTPUT_CHARS="200",
            MAX_OUTPUT_TOKENS="123",
            BODY_READ_TIMEOUT_SECONDS="0.5",
        ),
        env={"ALLOWED_HOSTS": "my-laptop.local"},
    ).start()
    yield server
    server.close()


def wait_for_log(app: AppServer, pattern: str, timeout: float = 3.0) -> str:
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for line in app.logs().splitlines():
            if regex.search(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matches {pattern!r}:\n{app.logs()[-3000:]}")
        time.sleep(0.05)


def post_events(app: AppServer, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, list]:
    with (
        httpx.Client(base_url=app.url, timeout=20) as client,
        client.stream("POST", path, json=body, headers=headers) as response,
    ):
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        return 200, parse_sse(response.iter_lines())


# --------------------------------------------------------------------------- output caps


@pytest.mark.parametrize("path", [AGENT, WORKFLOW])
def test_every_model_call_carries_the_output_token_limit(app: AppServer, fake: FakeOpenAI, path: str) -> None:
    status, events = post_events(app, path, {"message": "Weather in Oslo?"})
    assert status == 200 and events[-1].event == "done", events[-1]
    assert len(fake.requests) >= 2  # a tool call, then the answer (and the writer's call)
    assert {r.json.get("max_completion_tokens") for r in fake.requests} == {123}


@pytest.mark.parametrize("path", [AGENT, WORKFLOW])
def test_a_run_past_its_output_cap_ends_with_output_too_long(app: AppServer, fake: FakeOpenAI, path: str) -> None:
    # A model that would go on for 2,000 words; the cap is 200 characters.
    fake.set_responder(lambda request: text_response(" ".join(f"word{i}" for i in range(2000)), delay=0.001))
    status, events = post_events(app, path, {"message": "Ramble on"})
    assert status == 200
    assert events[-1].event == "error" and events[-1].data["error"]["code"] == "output_too_long"
    assert [e.event for e in events].count("error") == 1
    assert 150 < len(text_of(events)) <= 200
    assert fake.wait_for_no_open_streams(3.0), "the model call was left open"
    assert fake.cancelled_streams == 1
    wait_for_log(app, r"failed: output_too_long")


# --------------------------------------------------------------------------- concurrency


class Slow(ScriptedResponse):
    """Headers, one word, then one more every 50 ms for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def play(self, writer: ResponseWriter) -> None:
        await text_response(["Hello"] * int(self.seconds / 0.05), delay=0.05).play(writer)


def open_stream(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A response whose body is left unread and open until ``close()``."""
    return client.send(client.build_request(method, path, **kwargs), stream=True)


def test_past_the_concurrency_cap_a_run_is_refused_before_any_model_call(fake: FakeOpenAI) -> None:
    with (
        # No resume window: a run is cancelled, and gives its slot back, as its client leaves.
        configured(values(fake, MAX_CONCURRENT_RUNS="2", RESUME_WINDOW_SECONDS="0")) as server,
        httpx.Client(base_url=server.url, timeout=20) as c,
    ):
        fake.set_responder(lambda request: Slow(30))
        first = open_stream(c, "POST", AGENT, json={"message": "Talk"})
        second = open_stream(c, "GET", AGENT, params={"message": "Talk"})
        assert first.status_code == second.status_code == 200
        assert fake.wait_until(lambda f: len(f.requests) == 2, 5)

        refused = c.post(WORKFLOW, json={"message": "Talk"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_runs"
        assert int(refused.headers["retry-after"]) > 0
        time.sleep(0.3)
        assert len(fake.requests) == 2, "the refused run called the model"

        # A client leaving gives its run's slot back (once: the next run fits,
        # the one after does not).
        first.close()
        assert fake.wait_until(lambda f: f.cancelled_streams == 1, 5)
        deadline = time.monotonic() + 5
        while (third := open_stream(c, "POST", AGENT, json={"message": "Talk"})).status_code == 429:
            third.close()
            assert time.monotonic() < deadline, "the slot was not given back"
            time.sleep(0.05)
        assert c.post(AGENT, json={"message": "Talk"}).status_code == 429
        second.close()
        third.close()
        assert fake.wait_for_no_open_streams(5)

        # Runs that end on their own give their slots back too.
        fake.set_responder(None)
        for _ in range(3):
            for path in (AGENT, WORKFLOW):
                status, events = post_events(server, path, {"message": "Weather in Oslo?"})
                assert status == 200 and events[-1].event == "done"


# --------------------------------------------------------------------------- request bodies


def raw_request(app: AppServer, head: bytes, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    sock.sendall(head + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def post_head(app: AppServer, length: int) -> bytes:
    return (
        f"POST {AGENT} HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_body_that_does_not_arrive_in_time_gets_408(app: AppServer, fake: FakeOpenAI) -> None:
    started = time.monotonic()
    sock = raw_request(app, post_head(app, 100), b'{"message": "trick')
    try:
        answer = read_all(sock)
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert 0.4 < elapsed < 3  # answered, and the connection closed, soon after the 0.5 s deadline
    assert not fake.requests


def test_a_client_leaving_mid_body_is_one_info_line(app: AppServer) -> None:
    before = len(app.logs())
    sock = raw_request(app, post_head(app, 1000), b'{"message": "half a bo')
    time.sleep(0.1)
    sock.close()
    line = wait_for_log(app, r"the client left before sending its whole body")
    assert " INFO " in line
    time.sleep(0.2)
    tail = app.logs()[before:]
    assert "ERROR" not in tail and "Traceback" not in tail, tail


# --------------------------------------------------------------------------- what the model sends


class RawChunks(ScriptedResponse):
    """Text deltas written with JSON escapes (``ensure_ascii``), as a service
    may send a lone surrogate: ``"\\ud800"``."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    async def play(self, writer: ResponseWriter) -> None:
        await writer.start(200)
        for chunk in text_response(self.pieces).chunks(writer):
            await writer.send_event(json.dumps(chunk, ensure_ascii=True))
        await writer.send_event("[DONE]")
        await writer.end()


FORGED = 'Sunny.\u2028\u2028event: done\u2028data: {"forged": true}\u2028\u2028Really.\u2029\x85'


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
def test_line_breaks_in_model_text_cannot_split_or_forge_an_event(
    app: AppServer, fake: FakeOpenAI, accept: str
) -> None:
    fake.enqueue(RawChunks([FORGED]))
    with (
        httpx.Client(base_url=app.url, timeout=20) as client,
        client.stream("POST", AGENT, json={"message": "hi"}, headers={"Accept": accept}) as response,
    ):
        raw = response.read()
    for char in ("\u2028", "\u2029", "\x85"):
        assert char.encode() not in raw
    # The README's Python client: httpx's iter_lines() splits at U+2028.
    lines = list(httpx.Response(200, content=raw).iter_lines())
    if accept == "text/event-stream":
        events = parse_sse(lines)  # json.loads on every data: line
        assert [e.event for e in events].count("done") == 1
        assert "forged" not in json.dumps(events[-1].data)
        assert text_of(events) == FORGED
    else:
        objects = [json.loads(line) for line in lines if line]
        assert "".join(o["text"] for o in objects if o["event"] == "text") == FORGED
        assert objects[-1]["event"] == "done"


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson", "text/plain"])
def test_a_lone_surrogate_from_the_model_is_replaced_and_the_stream_ends_cleanly(
    app: AppServer, fake: FakeOpenAI, accept: str
) -> None:
    fake.enqueue(RawChunks(["Before ", "\ud800", " after."]))
    with (
        httpx.Client(base_url=app.url, timeout=20) as client,
        client.stream("POST", AGENT, json={"message": "hi"}, headers={"Accept": accept}) as response,
    ):
        raw = response.read()
    text = raw.decode("utf-8")  # valid UTF-8 all the way
    assert "\ufffd" in text and "after." in text
    if accept == "text/event-stream":
        assert parse_sse(text.split("\n"))[-1].event == "done"
    elif accept == "application/x-ndjson":
        assert json.loads(text.splitlines()[-1])["event"] == "done"


def test_a_lone_surrogate_in_a_message_is_400_and_the_prompt_is_not_logged(app: AppServer, fake: FakeOpenAI) -> None:
    body = b'{"message": "private-prompt-7431 \\ud800"}'
    response = httpx.post(f"{app.url}{AGENT}", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_message"
    time.sleep(0.2)
    assert "private-prompt-7431" not in app.logs()
    assert not fake.requests


@pytest.mark.parametrize("path", [AGENT, WORKFLOW])
def test_upstream_error_text_cannot_forge_a_log_line(app: AppServer, fake: FakeOpenAI, path: str) -> None:
    forged = f"2026-11-29 12:00:00,000 INFO streaming.pipeline: run forged-{path[5:10]} done in 1 ms"
    fake.enqueue(error_response(400, message=f"Bad request.\r\n{forged}\n"))
    _, events = post_events(app, path, {"message": "hi"})
    assert events[-1].data["error"]["code"] == "upstream_rejected"
    wait_for_log(app, r"failed: upstream_rejected")
    assert not any(line.startswith(forged[:30]) for line in app.logs().splitlines()), app.logs()[-2000:]


# --------------------------------------------------------------------------- methods


def test_head_does_not_start_a_run(app: AppServer, fake: FakeOpenAI) -> None:
    for path in (AGENT, WORKFLOW):
        response = httpx.head(f"{app.url}{path}", params={"message": "Weather in Oslo?"})
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, POST"
    time.sleep(0.3)
    assert not fake.requests


# --------------------------------------------------------------------------- the local host


def test_the_access_log_never_writes_a_key_or_a_message(app: AppServer, fake: FakeOpenAI) -> None:
    secret, message = "k3y-ABCDEF-0123", "my-private-question-5521"
    status, events = 0, []
    with (
        httpx.Client(base_url=app.url, timeout=20) as client,
        client.stream("GET", AGENT, params={"message": message, "code": secret}) as response,
    ):
        status = response.status_code
        events = parse_sse(response.iter_lines())
    assert status == 200 and events[-1].event == "done"
    # This request's line: the module's app serves other tests' GETs too.
    line = wait_for_log(app, r'"GET /api/agent/stream\?[^"]*code=[^"]*" 200')
    assert "code=[redacted]" in line and "message=[redacted]" in line
    logs = app.logs()
    assert secret not in logs and message not in logs


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example", ""]
)
def test_the_local_host_refuses_other_host_names(app: AppServer, fake: FakeOpenAI, host: str) -> None:
    for path in ("/api/health", "/api/chat", "/api/chat/", AGENT):
        response = httpx.get(f"{app.url}{path}", params={"message": "hi"}, headers={"Host": host})
        assert response.status_code == 400, (path, response.status_code, response.headers)
        assert response.json()["error"]["code"] == "invalid_host"
        assert "location" not in response.headers
    assert not fake.requests


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST", "my-laptop.local"])
def test_the_local_host_answers_its_own_names(app: AppServer, host: str) -> None:
    port = f":{app.port}"
    response = httpx.get(f"{app.url}/api/health", headers={"Host": host + port})
    assert response.status_code == 200
    # The trailing-slash redirect stays on the host that was asked.
    redirect = httpx.get(f"{app.url}/api/chat/", headers={"Host": host + port})
    if redirect.is_redirect:
        assert redirect.headers["location"].lower().startswith(f"http://{host.lower()}{port}/")


def test_the_chat_page_is_sent_with_its_security_headers(app: AppServer) -> None:
    response = httpx.get(f"{app.url}/api/chat")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}'(;|$)", policy), policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
