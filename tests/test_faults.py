"""Faults end cleanly: over real loopback HTTP, the app served by the local
host (``AppServer``) and the model being ``FakeOpenAI``.

Whatever goes wrong -- the client leaves, the model is slow, silent, rate
limiting, broken or unreachable, the credential finds no identity, a tool
fails, many requests run at once -- the stream ends with exactly one
terminal event, last, with a safe message; the model's HTTP call is closed;
and the app logs the run id. Nothing leaves 127.0.0.1.

Not here: a reader that stops reading mid-stream (socket buffers make it
hard to force over loopback); ``tests/test_response.py``
(``test_a_reader_that_stops_reading_ends_the_run``) covers it at the ASGI
level.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import llm
import settings
from streaming.errors import classify
from streaming.events import Done, Error, StreamEvent, ToolCall, ToolResult
from streaming.pipeline import guard
from streaming.request import RunRequest
from streaming.runners import run_agent
from tests.fake_openai import (
    FakeOpenAI,
    RecordedRequest,
    ResponseWriter,
    ScriptedResponse,
    drop_after,
    error_response,
    hang,
    text_response,
)
from tests.support import AppServer, SSEEvent, parse_sse, text_of

API_KEY = "test-key"
AGENT = "/api/agent/stream"
WORKFLOW = "/api/workflow/stream"
NAMED = {"agent_started", "agent_completed", "tool_call", "tool_result", "done", "error"}
BROKEN_JSON = '{"id":"chatcmpl-broken","object":"chat.completion.chunk","choices":[{"index":0,"delta":'
LONG_ANSWER = " ".join(f"word{i}" for i in range(100))  # 100 chunks: seconds at 50 ms a chunk

# Settings and environment variables that would give DefaultAzureCredential
# an identity (or a way to look for one): never inherited by the credential
# test's app.
CREDENTIAL_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


# ------------------------------------------------------------------------------------------ scripted answers


@dataclass(frozen=True)
class Delayed(ScriptedResponse):
    """Say nothing at all (not even headers) for ``seconds``, then play ``then``."""

    seconds: float
    then: ScriptedResponse

    async def play(self, writer: ResponseWriter) -> None:
        await writer.sleep(self.seconds)
        await self.then.play(writer)


@dataclass(frozen=True)
class TextThen(ScriptedResponse):
    """Stream ``words`` as text deltas (``delay`` before each), then fail:

    * ``"malformed"``: a chunk that is not JSON, then ``[DONE]``;
    * ``"hang"``: nothing more, connection kept open;
    * ``"forever"``: one more word every ``delay``, never finishing.
    """

    words: tuple[str, ...]
    then: str
    delay: float = 0.0

    async def play(self, writer: ResponseWriter) -> None:
        chunks = text_response(list(self.words)).chunks(writer)[: 1 + len(self.words)]  # role + words
        await writer.start(200)
        for chunk in chunks:
            await writer.sleep(self.delay)
            await writer.send_event(chunk)
        if self.then == "malformed":
            await writer.send_event(BROKEN_JSON)
            await writer.send_event("[DONE]")
            await writer.end()
        elif self.then == "hang":
            await writer.hang()
        elif self.then == "forever":
            tick = copy.deepcopy(chunks[-1])
            tick["choices"][0]["delta"]["content"] = " tick"
            while True:
                await writer.sleep(self.delay)
                await writer.send_event(tick)
        else:  # pragma: no cover
            raise ValueError(self.then)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The module's fake, reset before each test; every test must leave no model call open."""
    with shared_fake.fresh():
        yield shared_fake


def openai_values(fake: FakeOpenAI, **overrides: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_MODEL": "fake-model",
        "MODEL_MAX_RETRIES": "0",
        "MODEL_TIMEOUT_SECONDS": "1",
        "RUN_DEADLINE_SECONDS": "30",
        "HEARTBEAT_SECONDS": "0.2",
        "SEND_TIMEOUT_SECONDS": "10",
        "RESUME_WINDOW_SECONDS": "0",  # a client leaving cancels its run at once (tests/test_resume.py: the window)
        **overrides,
    }


def start_app(values: dict[str, str], *, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> AppServer:
    """An AppServer whose ``values`` are not overridden by this shell's environment."""
    with pytest.MonkeyPatch.context() as mp:
        for name in (*values, *unset):
            mp.delenv(name, raising=False)
        server = AppServer(values, env=env)
    server.start()
    # One run first: the app loads the Agent Framework and the OpenAI SDK with its first model run
    # (about a second of CPU, several on a busy machine), which the timings below must not include.
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.post(AGENT, json={"message": "warm-up"}).read()
    return server


@pytest.fixture(scope="module")
def app(shared_fake: FakeOpenAI) -> Iterator[AppServer]:
    """No retries, 1 s model timeout, 0.2 s heartbeat, 30 s deadline."""
    server = start_app(openai_values(shared_fake))
    yield server
    server.close()


@pytest.fixture(scope="module")
def patient_app(shared_fake: FakeOpenAI) -> Iterator[AppServer]:
    """Two retries and a 5 s model timeout (429s, heartbeats during a slow first token)."""
    server = start_app(openai_values(shared_fake, MODEL_MAX_RETRIES="2", MODEL_TIMEOUT_SECONDS="5"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def deadline_app(shared_fake: FakeOpenAI) -> Iterator[AppServer]:
    """A 1 s run deadline, and a model timeout longer than that."""
    server = start_app(openai_values(shared_fake, RUN_DEADLINE_SECONDS="1", MODEL_TIMEOUT_SECONDS="5"))
    yield server
    server.close()


# ------------------------------------------------------------------------------------------ helpers


@dataclass
class Result:
    status: int
    headers: httpx.Headers
    lines: list[str] = field(default_factory=list)
    body: str = ""
    elapsed: float = 0.0

    @property
    def events(self) -> list[SSEEvent]:
        return parse_sse(self.lines)

    @property
    def run_id(self) -> str:
        return self.headers["x-run-id"]


def post(app: AppServer, path: str, message: str, timeout: float = 30) -> Result:
    """POST a run and read the whole SSE stream, raw lines kept."""
    started = time.monotonic()
    with (
        httpx.Client(base_url=app.url, timeout=timeout) as client,
        client.stream("POST", path, json={"message": message}) as response,
    ):
        if response.status_code != 200:
            response.read()
            return Result(response.status_code, response.headers, body=response.text)
        lines = list(response.iter_lines())
    return Result(200, response.headers, lines, "\n".join(lines), time.monotonic() - started)


def iter_events(response: httpx.Response) -> Iterator[SSEEvent]:
    """Events as they arrive (``parse_sse`` on each blank-line-terminated block)."""
    block: list[str] = []
    for line in response.iter_lines():
        block.append(line)
        if line == "":
            yield from parse_sse(block)
            block = []


def assert_contract(events: list[SSEEvent]) -> None:
    """Ids ``<run token>:1``, ``:2``, ...; exactly one terminal event, last."""
    assert events, "no events"
    assert len({e.id.rpartition(":")[0] for e in events}) == 1
    assert [int(e.id.rpartition(":")[2]) for e in events] == list(range(1, len(events) + 1))
    assert {e.event for e in events} <= NAMED | {"message"}
    terminal = [e for e in events if e.event in ("done", "error")]
    assert len(terminal) == 1 and terminal[0] is events[-1], [e.event for e in events]


def wait_for_log(app: AppServer, pattern: str, timeout: float = 3.0) -> str:
    """The first log line matching ``pattern`` (regex), waiting for it to be flushed."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for line in app.logs().splitlines():
            if regex.search(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matches {pattern!r}:\n{app.logs()[-3000:]}")
        time.sleep(0.05)


def assert_app_healthy(app: AppServer) -> None:
    """No unhandled exception reached the server (that would be a 500 or a cut stream), no key in the log."""
    logs = app.logs()
    assert "Exception in ASGI application" not in logs, logs[-3000:]
    assert API_KEY not in logs


def assert_clean_error(app: AppServer, result: Result, code: str, *, log_pattern: str | None = None) -> dict:
    """The stream is a 200 that ends with exactly one ``error`` event carrying ``code`` and a human message,
    with no stack trace and no key; the app logged the failure with the run id."""
    assert result.status == 200, result.body
    events = result.events
    assert_contract(events)
    assert events[-1].event == "error"
    error = events[-1].data["error"]
    assert error["code"] == code, error
    message = error["message"]
    assert message[:1].isupper() and message.endswith(".") and len(message) > 20, message
    for leak in ("Traceback", 'File "', API_KEY, "127.0.0.1", "Exception", "Error:"):
        assert leak not in result.body, leak
    line = wait_for_log(app, rf"run {result.run_id}\b.*{log_pattern or code}")
    assert API_KEY not in line
    assert_app_healthy(app)
    return error


# ------------------------------------------------------------------------------------------ 1. client goes away


def disconnect_when(app: AppServer, path: str, message: str, stop: Callable[[SSEEvent], bool]) -> tuple[str, float]:
    """Stream a run, close the connection once ``stop(event)``; returns the run id and when it closed."""
    with (
        httpx.Client(base_url=app.url, timeout=10) as client,
        client.stream("POST", path, json={"message": message}) as response,
    ):
        assert response.status_code == 200
        run_id = response.headers["x-run-id"]
        for event in iter_events(response):
            assert event.event not in ("done", "error"), event
            if stop(event):
                break
        else:
            raise AssertionError("the stream ended before the point of disconnecting")
    return run_id, time.monotonic()


def assert_model_call_cancelled(app: AppServer, fake: FakeOpenAI, run_id: str, closed_at: float) -> None:
    assert fake.wait_until(lambda f: f.cancelled_streams >= 1, 2.0), "the model call was not cancelled"
    assert time.monotonic() - closed_at < 2.0
    assert fake.wait_for_no_open_streams(2.0)
    assert fake.cancelled_streams == 1
    wait_for_log(app, rf"run {run_id}: the client disconnected")
    assert_app_healthy(app)


@pytest.mark.parametrize("path", [AGENT, WORKFLOW])
def test_client_leaving_mid_stream_cancels_the_model_call(app: AppServer, fake: FakeOpenAI, path: str) -> None:
    # The agent's (or the researcher's) first model call streams a long answer, slowly.
    fake.enqueue(text_response(LONG_ANSWER, delay=0.05))
    run_id, closed_at = disconnect_when(app, path, "Weather in Oslo?", lambda e: e.event == "message")
    assert_model_call_cancelled(app, fake, run_id, closed_at)
    assert len(fake.requests) == 1, "no model call may start after the client left"


@pytest.mark.parametrize(
    "silence",
    [hang(headers=True), hang(headers=False), text_response(["late"], delay=10)],
    ids=["headers-then-nothing", "no-headers", "slow-first-chunk"],
)
def test_client_leaving_while_waiting_for_the_first_token(
    patient_app: AppServer, fake: FakeOpenAI, silence: ScriptedResponse
) -> None:
    # On the app whose model timeout (5 s) is longer than the 2 s allowed: only the cancel can end the call.
    app = patient_app
    fake.enqueue(silence)

    def model_call_in_flight(event: SSEEvent) -> bool:
        assert event.event == "agent_started"
        assert fake.wait_until(lambda f: f.open_streams == 1, 2.0)
        return True

    run_id, closed_at = disconnect_when(app, AGENT, "Weather in Oslo?", model_call_in_flight)
    assert_model_call_cancelled(app, fake, run_id, closed_at)


class SlowProvider:
    """A weather provider that takes forever, and says when it started and when it was cancelled."""

    name = "slow"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.cancelled_at = 0.0

    async def current(self, location: str) -> Any:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled_at = time.monotonic()
            self.cancelled.set()
            raise
        raise AssertionError("not cancelled")


def in_process_client(fake: FakeOpenAI) -> tuple[Any, settings.ModelSettings]:
    model = settings.model_settings(
        {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_MODEL": "fake-model",
            "MODEL_MAX_RETRIES": "0",
            "MODEL_TIMEOUT_SECONDS": "5",
        }
    )
    return llm.create_chat_client(model), model


async def test_cancelling_a_run_inside_a_slow_tool_cancels_the_tool(fake: FakeOpenAI) -> None:
    """Over HTTP a silent tool call is just silence (covered above); here the run is cancelled the way the
    response cancels it, while the tool is running, and the tool's coroutine must be cancelled at once."""
    client, model = in_process_client(fake)
    provider = SlowProvider()
    events: list[StreamEvent] = []

    async def consume() -> None:
        run = run_agent(RunRequest("Weather in Oslo?"), client, model, provider=provider)
        async for event in guard(run, deadline_s=30, run_id="slow-tool"):
            events.append(event)

    try:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(provider.started.wait(), 5)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        await asyncio.wait_for(provider.cancelled.wait(), 1)
        assert provider.cancelled_at - cancelled_at < 0.5
        assert [e.arguments for e in events if isinstance(e, ToolCall)] == [{"location": "Oslo"}]
        assert not any(isinstance(e, Done | Error | ToolResult) for e in events)
        assert len(fake.requests) == 1, "the model must not be called again after the cancel"
        assert await fake.wait_for_no_open_streams_async(2.0)
    finally:
        await client.client.close()


# ------------------------------------------------------------------------------------------ 3. heartbeat


def test_heartbeats_over_http_while_the_model_is_silent(patient_app: AppServer, fake: FakeOpenAI) -> None:
    fake.enqueue(Delayed(1.0, text_response(["Hello", " world"])))
    result = post(patient_app, AGENT, "Say hello")
    assert result.status == 200
    lines = result.lines
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    first_text = next(i for i, line in enumerate(lines) if line.startswith("data: ") and '"text"' in line)
    pings = [i for i, line in enumerate(lines) if line == ": ping"]
    # agent_started goes out at once; then only heartbeats until the model's first token.
    assert lines[first_data - 1] == "event: agent_started"
    assert len([i for i in pings if first_data < i < first_text]) >= 3, lines
    assert all(lines[i + 1] == "" for i in pings), "a comment is its own SSE block"
    events = result.events
    assert_contract(events)
    assert text_of(events) == "Hello world"
    assert events[-1].event == "done"
    assert_app_healthy(patient_app)


# ------------------------------------------------------------------------------------------ 4. deadline


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        (AGENT, TextThen(("Still", " going"), "forever", delay=0.1)),
        (WORKFLOW, TextThen(("Thinking",), "hang")),
    ],
    ids=["agent-endless-stream", "workflow-hang-after-text"],
)
def test_deadline_ends_the_stream_with_timeout_and_closes_the_model_call(
    deadline_app: AppServer, fake: FakeOpenAI, path: str, answer: TextThen
) -> None:
    fake.enqueue(answer)
    result = post(deadline_app, path, "Weather in Oslo?")
    assert result.elapsed < 8.0  # a 1 s deadline against a model that never ends (room for a loaded machine)
    error = assert_clean_error(deadline_app, result, "timeout", log_pattern="deadline")
    assert "1 second" in error["message"]
    assert text_of(result.events).startswith(answer.words[0])
    assert fake.wait_until(lambda f: f.cancelled_streams == 1, 2.0), "the model call was not cancelled"
    assert fake.wait_for_no_open_streams(2.0)


# ------------------------------------------------------------------------------------------ 5. upstream failures


UPSTREAM_FAILURES = {
    # name: (answer, expected code, text streamed before the failure)
    "dropped-mid-stream": (
        drop_after(4, text_response("Partly cloudy skies over the bay")),
        "upstream_unavailable",
        "Partly cloudy skies",
    ),
    "http-500": (error_response(500), "upstream_error", ""),
    "http-401": (error_response(401), "upstream_auth", ""),
    "http-403": (error_response(403), "upstream_auth", ""),
    "http-404": (error_response(404), "upstream_not_found", ""),
    "http-400": (error_response(400), "upstream_rejected", ""),
    "no-answer": (hang(headers=False), "upstream_timeout", ""),
    "headers-then-silence": (hang(headers=True), "upstream_timeout", ""),
    "silent-mid-stream": (TextThen(("Sunny", " and"), "hang"), "upstream_timeout", "Sunny and"),
    "malformed-chunk": (TextThen(("Rain", " later"), "malformed"), "upstream_error", "Rain later"),
}


@pytest.mark.parametrize("name", list(UPSTREAM_FAILURES))
def test_upstream_failure_ends_the_stream_with_one_safe_error(app: AppServer, fake: FakeOpenAI, name: str) -> None:
    answer, code, text_before = UPSTREAM_FAILURES[name]
    fake.enqueue(answer)
    result = post(app, AGENT, "Weather in Oslo?")
    assert result.elapsed < 5.0
    assert_clean_error(app, result, code)
    events = result.events
    # Whatever streamed before the failure arrived, before the error.
    assert text_of(events) == text_before
    assert [e.event for e in events][:1] == ["agent_started"]
    assert len(fake.requests) == 1, "MODEL_MAX_RETRIES=0: no retry"
    assert fake.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_malformed_chunk_message_says_the_response_was_unreadable(app: AppServer, fake: FakeOpenAI) -> None:
    fake.enqueue(TextThen(("Rain",), "malformed"))
    error = assert_clean_error(app, post(app, AGENT, "Weather in Oslo?"), "upstream_error")
    assert error["message"] == "The model service sent a response this app could not read."


def test_only_a_model_stream_that_is_not_json_is_unreadable() -> None:
    from agent_framework.exceptions import ChatClientException

    not_json = json.JSONDecodeError("Expecting value", BROKEN_JSON, 63)
    try:
        raise ChatClientException("service failed to complete the prompt", inner_exception=not_json) from not_json
    except ChatClientException as wrapped:
        assert classify(wrapped).code == "upstream_error"
    assert classify(not_json).code == "internal_error", "a JSON error of the app's own is not the model's"


def test_rate_limited_after_the_retries_are_spent(patient_app: AppServer, fake: FakeOpenAI) -> None:
    fake.enqueue(*[error_response(429, headers={"Retry-After": "0.1"})] * 3)
    result = post(patient_app, AGENT, "Weather in Oslo?")
    assert_clean_error(patient_app, result, "rate_limited")
    assert len(fake.requests) == 3, "MODEL_MAX_RETRIES=2: three tries"
    assert result.elapsed < 5.0


def test_rate_limit_then_success_within_the_retry_budget(patient_app: AppServer, fake: FakeOpenAI) -> None:
    fake.enqueue(error_response(429, headers={"Retry-After": "0.1"}), text_response("Sunny in Oslo."))
    result = post(patient_app, AGENT, "Weather in Oslo?")
    assert result.status == 200
    events = result.events
    assert_contract(events)
    assert events[-1].event == "done" and text_of(events) == "Sunny in Oslo."
    assert len(fake.requests) == 2
    assert_app_healthy(patient_app)


# ------------------------------------------------------------------------------------------ 6. no Azure credential


class NoTokenCredential:
    """Stands in for DefaultAzureCredential when no identity is available."""

    instances: list[NoTokenCredential] = []  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        self.attempts = 0
        NoTokenCredential.instances.append(self)

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._fail()

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        return self._fail()

    def _fail(self) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        self.attempts += 1
        raise ClientAuthenticationError(
            "DefaultAzureCredential failed to retrieve a token from the included credentials. "
            "ManagedIdentityCredential: No managed identity endpoint found."
        )

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> NoTokenCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def azure_values(fake: FakeOpenAI) -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": fake.url,
        "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "weather-deployment",
        "MODEL_MAX_RETRIES": "0",
        "MODEL_TIMEOUT_SECONDS": "2",
    }


def assert_credential_message(message: str) -> None:
    assert "DefaultAzureCredential" in message and "managed identity" in message
    assert "AZURE_OPENAI_API_KEY" in message


async def test_no_azure_token_is_credential_unavailable(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("azure.identity.aio.DefaultAzureCredential", NoTokenCredential)
    NoTokenCredential.instances.clear()
    model = settings.model_settings(azure_values(fake))
    assert model.provider == "azure_openai" and model.api_key is None
    client = llm.create_chat_client(model)
    try:
        events = [e async for e in guard(run_agent(RunRequest("Hi"), client, model), deadline_s=10, run_id="cred")]
    finally:
        await client.client.close()
    assert isinstance(events[-1], Error) and events[-1].code == "credential_unavailable"
    assert_credential_message(events[-1].message)
    assert [type(e).__name__ for e in events] == ["AgentStarted", "Error"]
    assert [c.attempts > 0 for c in NoTokenCredential.instances] == [True]
    assert fake.requests == [], "no request may go out without a token"


@pytest.fixture(scope="module")
def no_identity_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment in which DefaultAzureCredential can find no identity, without any network.

    ``AZURE_TOKEN_CREDENTIALS=AzureCliCredential`` leaves Azure CLI as the chain's only credential
    (ManagedIdentityCredential, and with it the IMDS probe of 169.254.169.254, is never built), and
    ``az`` is not on PATH, so it fails at once. Belt and braces: should managed identity be tried
    anyway, its IMDS requests would go to a closed loopback port.
    """
    home = tmp_path_factory.mktemp("home")
    path = os.pathsep.join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir())
    if any(shutil.which(tool, path=path) for tool in ("az", "azd", "pwsh")):
        pytest.skip("az/azd/pwsh on the minimal PATH: the credential could find an identity")
    return {
        "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9",
        "PATH": path,
        "HOME": str(home),
        "USERPROFILE": str(home),
    }


def test_no_azure_identity_over_http_is_credential_unavailable(
    fake: FakeOpenAI, no_identity_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Precondition, checked in this process with the same environment: the chain is Azure CLI alone.
    from azure.identity.aio import DefaultAzureCredential

    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in no_identity_env.items():
        monkeypatch.setenv(name, value)
    credential = DefaultAzureCredential()
    chain = [type(c).__name__ for c in credential.credentials]
    asyncio.run(credential.close())
    if chain != ["AzureCliCredential"]:
        pytest.skip(f"this azure-identity builds {chain}: managed identity could probe IMDS")
    monkeypatch.undo()

    server = start_app(azure_values(fake), env=no_identity_env, unset=CREDENTIAL_VARIABLES)
    try:
        result = post(server, AGENT, "Weather in Oslo?")
        assert result.elapsed < 30
        error = assert_clean_error(server, result, "credential_unavailable")
        assert_credential_message(error["message"])
        assert fake.requests == []
    finally:
        server.close()


# ------------------------------------------------------------------------------------------ 7. tool failure


class FailingProvider:
    name = "failing"

    async def current(self, location: str) -> Any:
        raise RuntimeError("weather backend exploded at db-7")


async def test_failing_tool_is_an_error_result_and_the_run_still_finishes(fake: FakeOpenAI) -> None:
    client, model = in_process_client(fake)
    try:
        run = run_agent(RunRequest("Weather in Oslo?"), client, model, provider=FailingProvider())
        events = [e async for e in guard(run, deadline_s=10, run_id="tool-failure")]
    finally:
        await client.client.close()
    assert isinstance(events[-1], Done)
    results = [e for e in events if isinstance(e, ToolResult)]
    assert len(results) == 1 and results[0].is_error and results[0].tool == "get_weather"
    error_text = results[0].result
    assert isinstance(error_text, str) and "Error" in error_text
    assert "db-7" not in repr(events), "the tool's internal error must not reach the client"
    # The model was told, and answered from it.
    _first, second = fake.requests
    tool_messages = [m for m in second.messages if m.get("role") == "tool"]
    assert len(tool_messages) == 1 and error_text in json.dumps(tool_messages[0]["content"])
    text = "".join(e.text for e in events if type(e).__name__ == "TextDelta")
    assert text.startswith("Based on the data:") and "Error" in text


# ------------------------------------------------------------------------------------------ 8. concurrency


CITIES = ("Oslo", "Lima", "Cairo", "Tokyo", "Nairobi", "Quito", "Hanoi", "Dublin")


def writer_answer(request: RecordedRequest) -> ScriptedResponse | None:
    """The writer (no tools offered) writes about the place its own researcher found."""
    if request.tools:
        return None  # the researcher: the default get_weather call, then "Based on the data: ..."
    places = [
        json.loads(m["content"])["location"]
        for m in request.messages
        if m.get("role") == "tool" and isinstance(m.get("content"), str)
    ]
    return text_response(f"A short poem about {' and '.join(places) or 'nowhere'}, as researched.")


async def test_concurrent_workflows_keep_their_own_conversations(app: AppServer, fake: FakeOpenAI) -> None:
    fake.chunk_delay = 0.01
    fake.set_responder(writer_answer)

    async def run(client: httpx.AsyncClient, city: str) -> tuple[str, int, list[SSEEvent]]:
        body = {"message": f"Research the weather in {city} and write a poem"}
        async with client.stream("POST", WORKFLOW, json=body) as response:
            lines = [line async for line in response.aiter_lines()]
        return city, response.status_code, parse_sse(lines)

    started = time.monotonic()
    limits = httpx.Limits(max_connections=len(CITIES))
    async with httpx.AsyncClient(base_url=app.url, timeout=30, limits=limits) as client:
        outcomes = await asyncio.gather(*(run(client, city) for city in CITIES))
    elapsed = time.monotonic() - started

    for city, status, events in outcomes:
        assert status == 200
        assert_contract(events)
        assert events[-1].event == "done", events[-1]
        others = [c for c in CITIES if c != city]
        assert [e.data["arguments"] for e in events if e.event == "tool_call"] == [{"location": city}]
        for result in (e.data["result"] for e in events if e.event == "tool_result"):
            assert result["location"] == city
        researcher, writer = text_of(events, "researcher"), text_of(events, "writer")
        assert city in researcher and writer == f"A short poem about {city}, as researched."
        assert not any(other in researcher + writer for other in others), (city, researcher, writer)
    assert len(fake.requests) == 3 * len(CITIES)
    assert await fake.wait_for_no_open_streams_async(2.0)
    assert elapsed < 15
    assert_app_healthy(app)


# ------------------------------------------------------------------------------------------ 9. no 500s


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"message=hi", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"json": {"message": "x" * 9000}}, 413, "message_too_long"),
    ],
)
def test_bad_requests_get_a_json_error_not_a_stack_trace(
    app: AppServer, fake: FakeOpenAI, kwargs: dict[str, Any], status: int, code: str
) -> None:
    with httpx.Client(base_url=app.url, timeout=10) as client:
        response = client.post(AGENT, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text
    assert fake.requests == [], "bad input never reaches the model"
    assert_app_healthy(app)


def test_bad_settings_get_a_503_json_error(fake: FakeOpenAI) -> None:
    server = start_app(openai_values(fake, MODEL_TIMEOUT_SECONDS="0"))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            response = client.post(AGENT, json={"message": "Weather in Oslo?"})
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"] == {
            "code": "invalid_setting",
            "message": "Setting MODEL_TIMEOUT_SECONDS must be between 1 and 600.",
        }
        assert fake.requests == []
        assert_app_healthy(server)
    finally:
        server.close()
