"""guard(): exactly one terminal event, errors and deadlines as events."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from settings import SettingsError
from streaming.errors import classify
from streaming.events import AgentStarted, Done, Error, TextDelta
from streaming.pipeline import drive, guard
from telemetry import RunObserver


async def collect(events, deadline_s: float = 5.0):
    return [e async for e in guard(events, deadline_s=deadline_s, run_id="test")]


async def test_done_is_stamped_with_elapsed_time_and_ends_the_stream() -> None:
    async def runner():
        yield TextDelta("a", "x")
        await asyncio.sleep(0.05)
        yield Done("offline", "m")
        yield TextDelta("after the end", "x")

    events = await collect(runner())
    assert [type(e) for e in events] == [TextDelta, Done]
    assert events[-1].elapsed_ms >= 50


async def test_an_exception_becomes_one_safe_error_event() -> None:
    async def runner():
        yield AgentStarted("x")
        raise RuntimeError("secret-key-123 leaked in a message")

    events = await collect(runner())
    assert events[-1] == Error("internal_error", "The run failed unexpectedly.")
    assert "secret" not in repr(events)


async def test_a_runner_that_ends_without_terminal_gets_an_error() -> None:
    async def runner():
        yield TextDelta("a", "x")

    assert (await collect(runner()))[-1].code == "internal_error"


async def test_deadline_cancels_the_runner_and_reports_timeout() -> None:
    closed = asyncio.Event()

    async def runner():
        try:
            yield TextDelta("a", "x")
            await asyncio.sleep(30)
            yield Done("offline", "m")
        finally:
            closed.set()

    events = await asyncio.wait_for(collect(runner(), deadline_s=0.2), 5)
    assert events[-1].code == "timeout" and "0.2 seconds" in events[-1].message
    assert closed.is_set(), "the runner must be closed (and with it the model call)"


async def test_consumer_leaving_early_closes_the_runner() -> None:
    closed = asyncio.Event()

    async def runner():
        try:
            while True:
                yield TextDelta("a", "x")
                await asyncio.sleep(0)
        finally:
            closed.set()

    stream = guard(runner(), deadline_s=5, run_id="t")
    await anext(stream)
    await stream.aclose()
    assert closed.is_set()


def _request() -> httpx.Request:
    return httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def _status(cls, code: int):
    return cls("no", response=httpx.Response(code, request=_request()), body=None)


def test_classify_upstream_failures() -> None:
    cases = {
        "rate_limited": _status(openai.RateLimitError, 429),
        "upstream_auth": _status(openai.AuthenticationError, 401),
        "upstream_not_found": _status(openai.NotFoundError, 404),
        "upstream_error": _status(openai.InternalServerError, 500),
        "upstream_timeout": openai.APITimeoutError(request=_request()),
        "upstream_unavailable": openai.APIConnectionError(request=_request()),
    }
    for code, exc in cases.items():
        assert classify(exc).code == code
    wrapped = RuntimeError("framework wrapper")
    wrapped.__cause__ = cases["rate_limited"]
    assert classify(wrapped).code == "rate_limited"
    assert classify(SettingsError("set X", missing=("X",))).status == 503


def test_classify_credential_failure_names_the_cause() -> None:
    from azure.core.exceptions import ClientAuthenticationError

    info = classify(ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token"))
    assert info.code == "credential_unavailable" and "DefaultAzureCredential" in info.message


async def test_an_unexpected_failure_before_streaming_is_a_json_500(monkeypatch) -> None:
    from starlette.requests import Request

    from streaming import http

    def broken_settings():
        raise RuntimeError("boom")

    monkeypatch.setattr(http, "stream_settings", broken_settings)
    scope = {"type": "http", "method": "GET", "path": "/api/agent/stream", "headers": [], "query_string": b"message=hi"}
    response = await http.stream_run(Request(scope), runner=None)
    assert response.status_code == 500
    assert response.body == b'{"error":{"code":"internal_error","message":"The request failed unexpectedly."}}'


async def test_an_error_the_runner_reports_ends_the_run_and_is_logged_under_its_run_id(caplog) -> None:
    async def runner():
        yield TextDelta("a", "x")
        yield Error("content_filtered", "The model service's content filter stopped the answer.")
        yield TextDelta("after the end", "x")

    caplog.set_level("WARNING", logger="streaming.pipeline")
    events = await collect(runner())
    assert [type(e) for e in events] == [TextDelta, Error]
    assert "run test ended: content_filtered" in caplog.text


async def _runner_done():
    yield TextDelta("a", "x")
    yield Done("offline", "m", usage={"total_tokens": 3})


async def _runner_reports_error():
    yield Error("content_filtered", "The model service's content filter stopped the answer.")


async def _runner_bug():
    yield TextDelta("a", "x")
    raise RuntimeError("a bug")


async def _runner_upstream_timeout():
    yield TextDelta("a", "x")
    raise openai.APITimeoutError(request=_request())


async def _runner_no_terminal():
    yield TextDelta("a", "x")


async def _runner_past_deadline():
    yield TextDelta("a", "x")
    await asyncio.sleep(30)


@pytest.mark.parametrize(
    ("runner", "level", "says", "traceback"),
    [
        (_runner_done, "INFO", ["done in", "'total_tokens': 3"], False),
        (_runner_reports_error, "WARNING", ["content_filtered"], False),
        (_runner_bug, "ERROR", ["internal_error"], True),
        (_runner_upstream_timeout, "WARNING", ["upstream_timeout", "APITimeoutError", "Request timed out."], False),
        (_runner_no_terminal, "ERROR", ["without a terminal event"], False),
        (_runner_past_deadline, "WARNING", ["deadline"], False),
    ],
)
async def test_every_way_a_run_ends_is_one_log_line_with_its_run_id_and_why(
    caplog, runner, level: str, says: list[str], traceback: bool
) -> None:
    """What an operator searches for: the run id, and why it ended (the code,
    the upstream exception, the usage of a finished run)."""
    caplog.set_level("INFO", logger="streaming.pipeline")
    events = [e async for e in guard(runner(), deadline_s=0.2, run_id="run-7")]
    assert events[-1].terminal
    lines = [r for r in caplog.records if r.name == "streaming.pipeline"]
    assert len(lines) == 1 and lines[0].levelname == level
    message = lines[0].getMessage()
    assert "run run-7 " in message and all(part in message for part in says), message
    assert bool(lines[0].exc_info) is traceback


class Recorder(RunObserver):
    """Telemetry's view of a run: what the pipeline told it, and when
    (after how many emitted events)."""

    def __init__(self, emitted: list) -> None:
        self.emitted = emitted
        self.calls: list[tuple] = []

    def begin(self) -> None:
        self.calls.append(("begin", len(self.emitted)))

    def first_text(self) -> None:
        self.calls.append(("first_text", len(self.emitted)))

    def end(self, terminal=None) -> None:
        self.calls.append(("end", len(self.emitted), terminal))


async def _observed(runner, deadline_s: float = 5.0) -> tuple[list, list[tuple]]:
    emitted: list = []
    recorder = Recorder(emitted)
    await drive(runner(), emitted.append, deadline_s=deadline_s, run_id="r", observer=recorder)
    return emitted, recorder.calls


async def test_telemetry_hears_the_start_the_first_text_once_and_the_terminal_event() -> None:
    async def runner():
        yield AgentStarted("x")
        yield TextDelta("a", "x")
        yield TextDelta("b", "x")
        yield Done("offline", "m")

    emitted, calls = await _observed(runner)
    assert calls == [("begin", 0), ("first_text", 1), ("end", 4, emitted[-1])]
    assert isinstance(emitted[-1], Done) and emitted[-1].elapsed_ms is not None


@pytest.mark.parametrize("runner", [_runner_reports_error, _runner_bug, _runner_no_terminal, _runner_past_deadline])
async def test_telemetry_hears_the_error_a_run_ended_with(runner) -> None:
    emitted, calls = await _observed(runner, deadline_s=0.2)
    assert calls[-1] == ("end", len(emitted), emitted[-1]) and isinstance(emitted[-1], Error)


async def test_telemetry_hears_a_cancelled_run_end_without_a_terminal_event() -> None:
    emitted: list = []
    recorder = Recorder(emitted)

    async def runner():
        yield TextDelta("a", "x")
        await asyncio.sleep(30)

    task = asyncio.create_task(drive(runner(), emitted.append, deadline_s=5, run_id="r", observer=recorder))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.calls == [("begin", 0), ("first_text", 0), ("end", 1, None)]


async def test_leaving_early_waits_for_a_runner_whose_close_takes_a_moment() -> None:
    """The run is closed when the consumer's ``aclose`` returns, even when
    closing the model call takes over a second (within its bound)."""
    closed = asyncio.Event()

    async def runner():
        try:
            while True:
                yield TextDelta("a", "x")
                await asyncio.sleep(0.01)
        finally:
            await asyncio.sleep(1.4)  # the connection's goodbye: over half the run's close bound (2 s)
            closed.set()

    stream = guard(runner(), deadline_s=5, run_id="t")
    await anext(stream)
    await stream.aclose()
    assert closed.is_set()
