"""The HTTP handlers the stream triggers share.

request -> validated :class:`RunRequest` -> a run (its own task: runner ->
:func:`drive` -> run log) -> :class:`EventStreamResponse` reading the log,
encoder chosen from ``Accept``. A protocol (AG-UI, ``streaming/agui.py``)
replaces only the two ends: it parses the request and supplies the encoder;
the run between is the same. Bad input answers 4xx JSON; a missing model
configuration answers 503 JSON before any byte of a stream is sent. Only
GET and POST start a run; past ``MAX_CONCURRENT_RUNS`` a request gets 429
before any model call.

:func:`resume_run` serves a run again from an event id (``Last-Event-ID``
on a GET to the stream endpoint, or ``GET /api/runs/{token}/stream`` with
that header or ``?after=``): every event after it, then the live tail.
An id at or past the run's terminal event, unknown or expired, gets 204.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

import llm
import telemetry
from settings import (
    ResumeSettings,
    SettingsError,
    StreamSettings,
    framework_log_level,
    resume_settings,
    run_limits,
    stream_settings,
    weather_settings,
)
from streaming.encoders import Encoder, choose_encoder
from streaming.events import StreamEvent
from streaming.logsafe import one_line
from streaming.pipeline import drive
from streaming.request import ClientGone, RequestError, parse_body, parse_query, read_body
from streaming.response import EventStreamResponse
from streaming.runlog import Emit, RunStore, StoreUnavailable, parse_event_id, run_store
from streaming.runners import Runner
from streaming.slots import RunSlot, RunSlots

logger = logging.getLogger(__name__)


# The Functions host passes each invocation's id to the worker's HTTP server
# in this header (the local host does the same); logs then match the
# invocation in Application Insights.
INVOCATION_HEADER = "x-ms-invocation-id"
_SAFE_ID = re.compile(r"[0-9A-Za-z-]{1,64}")

RUN_METHODS = ("GET", "POST")
#: Seconds a client refused with 429 is asked to wait: runs last seconds
#: to minutes, so an immediate retry would most likely be refused again.
RETRY_AFTER_S = 5
#: The runs this worker process holds now (one event loop per process).
RUN_SLOTS = RunSlots()


_framework_level: list[str] = []  # the level last given to the framework's logger


def _framework_logs(level: str) -> None:
    """``FRAMEWORK_LOG_LEVEL`` on the ``agent_framework`` logger, set when
    it changes (``setLevel`` clears every logger's cache: not per run)."""
    if _framework_level != [level]:
        logging.getLogger("agent_framework").setLevel(level)
        _framework_level[:] = [level]


def _reconnecting(req: Request) -> bool:
    """A browser's EventSource reconnecting to a stream endpoint: a resume."""
    return req.method == "GET" and "last-event-id" in req.headers


def run_id_of(req: Request) -> str:
    invocation = req.headers.get(INVOCATION_HEADER, "")
    return invocation if _SAFE_ID.fullmatch(invocation) else uuid.uuid4().hex


class WireProtocol(Protocol):
    """A protocol other than ours (AG-UI): a parser of the POST body and an
    encoder for the stream, nothing more. Reading the body (its limits and
    timeout), the run and the response stay the shared handler's."""

    def parse(self, body: bytes, content_type: str | None, limits: StreamSettings) -> Any: ...

    def encoder(self, run_request: Any) -> Encoder: ...

    #: Whether a client can resume the stream (its events carry ids it can
    #: send back); if not, a run whose client leaves is cancelled at once.
    resumable: bool


def error_response(status: int, code: str, message: str, run_id: str | None = None) -> Response:
    """A JSON error; with the run id (``X-Run-Id``) when the log has a line about it."""
    headers = {"X-Run-Id": run_id} if run_id else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def store_unavailable() -> Response:
    """What a start or a resume gets while the run store (Redis) is down."""
    return error_response(503, "store_unavailable", "The stream store (STREAM_STORE_URL) cannot be reached.")


async def stream_run(req: Request, runner: Runner, protocol: WireProtocol | None = None) -> Response:
    """Validate ``req``, then stream ``runner``'s events (in ``protocol``'s
    format when given). Whatever fails before the stream starts is a JSON
    error, never a stack trace, and with telemetry on a span of its own."""
    started_ns = time.time_ns()
    run_id = run_id_of(req)
    code = None
    try:
        response = await _stream_run(req, runner, run_id, protocol)
    except ClientGone:
        logger.info("run %s: the client left before sending its whole body", run_id)
        response, code = Response(status_code=400), "client_gone"  # nobody reads it; the connection just closes
    except Exception:
        logger.exception("run %s: %s %s failed before streaming", run_id, req.method, one_line(req.url.path))
        response = error_response(500, "internal_error", "The request failed unexpectedly.", run_id)
    if response.status_code >= 400 and not _reconnecting(req):  # a resume's telemetry is _resume's
        # Refused before any run started. The run id is the invocation id the
        # host records for every request, so even a 400 can be found by it.
        response.headers.setdefault("X-Run-Id", run_id)
        await telemetry.observe_refusal(req, run_id, runner, response, started_ns, code)
    return response


async def _stream_run(req: Request, runner: Runner, run_id: str, protocol: WireProtocol | None = None) -> Response:
    if req.method not in RUN_METHODS:
        # HEAD would otherwise run (and pay for) the whole agent to send
        # nothing; the local host maps HEAD to GET routes.
        response = error_response(405, "method_not_allowed", "Use GET (EventSource) or POST to start a run.")
        response.headers["Allow"] = ", ".join(RUN_METHODS)
        return response
    if _reconnecting(req):
        # A browser's EventSource reconnecting: resume the run it was reading,
        # never run (and pay for) the agent again. 204 stops it for good.
        return await _resume(req, req.headers["last-event-id"], token=None, strict=False)
    try:
        limits = stream_settings()
        caps = run_limits()
        resume = resume_settings()
        if req.method == "GET" and protocol is None:
            run_request = parse_query(req.query_params, limits)
        else:
            body = await read_body(
                req.stream(), req.headers.get("content-length"), limits, timeout_s=caps.body_read_timeout_s
            )
            parse = protocol.parse if protocol is not None else parse_body
            run_request = parse(body, req.headers.get("content-type"), limits)
        client, model = llm.chat_client()
        run_store(resume)  # a bad STREAM_STORE_URL is a 503 before anything runs
        weather_settings()  # so is a bad weather setting: not a broken stream
        _framework_logs(framework_log_level())
    except RequestError as exc:
        # Past the body deadline the connection is closed: the rest of a
        # trickled body must not keep holding it.
        headers = {"Connection": "close"} if exc.status == 408 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
    except SettingsError as exc:
        logger.error("run %s refused: %s", run_id, exc)
        return error_response(503, exc.code, str(exc), run_id)
    slot = RUN_SLOTS.try_acquire(caps.max_concurrent_runs)
    if slot is None:
        # INFO, not WARNING: a flood of refused requests must not flood alerts.
        logger.info("run %s refused: %d runs already in progress", run_id, caps.max_concurrent_runs)
        response = error_response(
            429, "too_many_runs", "This instance is running as many streams as it allows. Try again shortly."
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    logger.info(
        "run %s: %s %s via %s (%d earlier turns)",
        run_id,
        req.method,
        req.url.path,
        model.provider,
        len(run_request.history),
    )

    events = runner(run_request, client, model)
    encoder = protocol.encoder(run_request) if protocol else choose_encoder(req.headers.get("accept"))
    observer = await telemetry.observe_run(req, run_id, runner, model)
    return await start_stream(
        events,
        encoder=encoder,
        run_id=run_id,
        limits=limits,
        resume=resume,
        slot=slot,
        resumable=protocol.resumable if protocol else True,
        observer=observer,
    )


async def start_stream(
    events: AsyncIterator[StreamEvent],
    *,
    encoder: Encoder,
    run_id: str,
    limits: StreamSettings | None = None,
    resume: ResumeSettings | None = None,
    slot: RunSlot | None = None,
    resumable: bool = True,
    observer: telemetry.RunObserver = telemetry.NOOP,
) -> Response:
    """Run ``events`` as a resumable run (its own task: deadline, errors,
    run log) and answer with a response reading it in ``encoder``'s format.
    Every protocol's route ends here, so each gets the same deadline,
    heartbeat, cancellation and resume. 503 JSON when the store is down.
    ``slot`` (the run's place under ``MAX_CONCURRENT_RUNS``) is given back
    when the run ends, however it ends, not when a response ends. A run
    that is not ``resumable`` is cancelled as soon as its last reader leaves.
    ``observer`` is the run's telemetry (:func:`telemetry.observe_run`);
    ``limits`` and ``resume``, the settings the caller already read."""
    try:
        limits = limits or stream_settings()
        resume = resume or resume_settings()
        store = run_store(resume)
    except SettingsError as exc:
        if slot is not None:
            slot.release()
        logger.error("run %s refused: %s", run_id, exc)
        return error_response(503, exc.code, str(exc))

    async def produce(emit: Emit) -> None:
        try:
            await drive(events, emit, deadline_s=limits.deadline_s, run_id=run_id, observer=observer)
        finally:
            if slot is not None:
                slot.release()

    try:
        window_s = resume.window_s if resumable else 0.0
        run = await store.start_run(run_id=run_id, window_s=window_s, producer=produce)
    except BaseException as exc:
        if slot is not None:
            slot.release()
        if not isinstance(exc, StoreUnavailable):
            raise
        logger.error("run %s refused: the run store is unavailable (%s)", run_id, one_line(exc))
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()  # never started: nothing to cancel, but do not leave it to the garbage collector
        return store_unavailable()
    if slot is not None:
        run.add_cleanup(slot.release)  # also when the run is cancelled before ``produce`` began (idempotent)
    return EventStreamResponse(
        run,
        encoder=encoder,
        heartbeat_s=limits.heartbeat_s,
        send_timeout_s=limits.send_timeout_s,
        coalesce_s=resume.coalesce_s,
        run_id=run_id,
        headers={"X-Run-Id": run_id, "X-Run-Token": run.token},
    )


async def resume_run(req: Request, token: str) -> Response:
    """``GET /api/runs/{token}/stream`` (``Last-Event-ID`` or ``?after=``;
    neither: from the start)."""
    try:
        cursor = req.headers.get("last-event-id") or req.query_params.get("after") or f"{token}:0"
        return await _resume(req, cursor, token=token, strict=True)
    except Exception:
        logger.exception("request to %s failed before streaming", one_line(req.url.path))
        return error_response(500, "internal_error", "The request failed unexpectedly.")


async def _resume(req: Request, cursor: str, *, token: str | None, strict: bool) -> Response:
    """:func:`_resume_answer`, and its telemetry (a span and a count)."""
    started_ns = time.time_ns()
    response = await _resume_answer(req, cursor, token=token, strict=strict)
    await telemetry.observe_resume(req, response, started_ns)
    return response


async def _resume_answer(req: Request, cursor: str, *, token: str | None, strict: bool) -> Response:
    """Serve run ``cursor``'s token from after its sequence number.
    ``strict`` (the runs route): a malformed id or one of another run is a
    400; on the stream endpoints it is 204, as for any id we do not know."""
    parsed = parse_event_id(cursor)
    if parsed is None or (token is not None and parsed[0] != token):
        if strict:
            return error_response(
                400, "invalid_event_id", "The event id must be one this run sent, like '<run token>:<n>'."
            )
        return Response(status_code=204)
    token, after = parsed
    try:
        limits = stream_settings()
        resume = resume_settings()
        store: RunStore = run_store(resume)
    except SettingsError as exc:
        logger.error("resume refused: %s", exc)
        return error_response(503, exc.code, str(exc))
    try:
        run = await store.open_run(token, after)
    except StoreUnavailable as exc:
        logger.error("resume refused: the run store is unavailable (%s)", one_line(exc))
        return store_unavailable()
    ended_by = run.terminal_seq if run is not None else None
    if run is None or after < run.base or after > run.last_seq or (ended_by is not None and after >= ended_by):
        return Response(status_code=204)  # unknown, expired, or nothing after it: EventSource stops for good
    logger.info("run %s: resumed after event %d (%s)", run.run_id, after, req.url.path)
    return EventStreamResponse(
        run,
        after=after,
        encoder=choose_encoder(req.headers.get("accept")),
        heartbeat_s=limits.heartbeat_s,
        send_timeout_s=limits.send_timeout_s,
        coalesce_s=resume.coalesce_s,
        run_id=run.run_id,
        headers={"X-Run-Id": run.run_id, "X-Run-Token": run.token},
    )
