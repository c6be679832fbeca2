"""OpenTelemetry for runs: traces and metrics, off unless asked for.

What a run leaves behind when telemetry is on:

* a ``SERVER`` span for the request (``POST /api/agent/stream``),
  continuing the caller's trace when it sends ``traceparent``;
* under it, an ``INTERNAL`` span for the run (``run agent``), with the run
  id, the invocation id, the provider and model, the outcome and error
  code, the token usage and the time to the first token;
* under that, Agent Framework's own GenAI spans: ``invoke_agent`` for each
  agent, ``chat <model>`` for each model call (the offline model included),
  ``execute_tool get_weather`` for each tool call;
* metrics: runs started, runs finished by outcome and error code, run
  duration, time to first token, output tokens, and streams in progress;
* for a request refused before any run started (4xx or 5xx JSON: bad
  input, too many runs, a setting missing, the store down), one ``SERVER``
  span with its status, error code, run id and invocation id, and a count
  of refused runs by status and code.

Where it goes: Application Insights when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (the Azure Monitor
OpenTelemetry distro; with ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
``Authorization=AAD`` it sends with the managed identity's token);
otherwise the exporters the standard ``OTEL_TRACES_EXPORTER`` /
``OTEL_METRICS_EXPORTER`` variables name (``console`` prints locally;
``otlp``, the default once ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, sends
OTLP over HTTP/protobuf); or, when the process
already has an OpenTelemetry SDK provider (set up by a host or a test),
that one. Prompt and completion text reach spans only with
``ENABLE_SENSITIVE_DATA=true``.

Cost: configured once per process, on the first request that starts or is
refused a run, never at import (this module imports nothing heavy at its
top). With telemetry off a run gets :data:`NOOP`, whose methods do nothing,
and a refusal returns at once. With it on, the work is per run (two spans,
a few metric points), never per streamed event; a refused request costs one
span and one count.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from settings import SettingsError, telemetry_settings
from streaming.logsafe import one_line

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "agent_functions_streaming"
DEFAULT_SERVICE_NAME = "agent-functions-streaming"

# Span attributes: the run id (what a client sees in X-Run-Id and the
# stream's log lines) and the Functions invocation id.
RUN_ID = "app.run.id"
INVOCATION_ID = "faas.invocation_id"
ENDPOINT = "app.endpoint"
OUTCOME = "app.run.outcome"
STATUS_CODE = "http.response.status_code"
ERROR_TYPE = "error.type"
# The error code again under the app's own name: Application Insights keeps
# custom attributes in customDimensions but drops standard ones (error.type,
# http.*, url.*) from there.
ERROR_CODE = "app.error.code"
TTFT = "app.run.time_to_first_token_ms"
OUT_TOKENS = "gen_ai.usage.output_tokens"

_lock = threading.Lock()
_state: _Telemetry | bool | None = False  # False: not decided yet; None: off


class RunObserver:
    """What the pipeline tells telemetry about one run. This base class is
    the no-op used when telemetry is off."""

    __slots__ = ()

    def begin(self) -> None:
        """The run starts streaming (called where it runs, so the framework's
        spans become its children)."""

    def first_text(self) -> None:
        """The first piece of answer text is ready."""

    def end(self, terminal: Any = None) -> None:
        """The run ended: with its terminal event, or ``None`` when it was
        cancelled (client gone, slow reader)."""


NOOP = RunObserver()


async def observe_run(req: Any, run_id: str, runner: Any, model: Any) -> RunObserver:
    """The observer for one run of ``runner`` (``run_agent`` ->
    endpoint ``agent``) for request ``req`` with ``model`` (its settings):
    :data:`NOOP` unless telemetry is on. The first call configures
    telemetry in a worker thread (importing an exporter takes a while), so
    other streams on this event loop keep flowing meanwhile."""
    state = _state
    if state is False:
        import anyio.to_thread

        state = await anyio.to_thread.run_sync(_configure_once)
    if state is None:
        return NOOP
    headers = req.headers
    return _Run(
        state,
        headers,
        req.method,
        req.url.path,
        run_id,
        headers.get("x-ms-invocation-id"),
        _endpoint(runner),
        model.provider,
        model.model,
    )


async def observe_refusal(
    req: Any, run_id: str, runner: Any, response: Any, started_ns: int, code: str | None = None
) -> None:
    """Record ``response`` (status 400 or above) refusing ``req`` before its
    run started: a ``SERVER`` span from ``started_ns`` (when the request
    arrived) to now, and a count. ``code`` is the error code when the
    response has no JSON error body. Does nothing when telemetry is off;
    never raises."""
    state = await _state_for_answers()
    if state is None:
        return
    try:
        state.record_refusal(req, run_id, runner, response.status_code, code or _error_code(response), started_ns)
    except Exception:
        logger.exception("telemetry: could not record a refused request")


async def observe_resume(req: Any, response: Any, started_ns: int) -> None:
    """Record a request to resume a run (``GET /api/runs/{token}/stream``, or
    a stream endpoint's ``Last-Event-ID``): a ``SERVER`` span from
    ``started_ns`` to the answer (the stream then goes on under the run's
    own spans) with the run's id when one was found (``X-Run-Id``), and a
    count by outcome: ``resumed`` (200), ``nothing_to_resume`` (204: an
    unknown, expired or finished run) or ``refused`` (4xx, 5xx). Does
    nothing when telemetry is off; never raises."""
    state = await _state_for_answers()
    if state is None:
        return
    try:
        status = response.status_code
        outcome = "resumed" if status < 300 and status != 204 else "nothing_to_resume" if status < 400 else "refused"
        code = _error_code(response) if status >= 400 else None
        state.record_resume(req, response.headers.get("x-run-id"), status, outcome, code, started_ns)
    except Exception:
        logger.exception("telemetry: could not record a resume")


async def _state_for_answers() -> _Telemetry | None:
    """The telemetry state for recording an answer that started no run;
    ``None`` when off, decided without importing anything heavy while
    telemetry is not wanted (such answers stay as cheap as without it)."""
    state = _state
    if state is False:
        if not _wanted():
            return None  # and stays undecided: the first run configures (and turns off the framework's layers)
        import anyio.to_thread

        state = await anyio.to_thread.run_sync(_configure_once)
    return state  # type: ignore[return-value]


def _wanted() -> bool:
    """Whether :func:`_configure` would turn telemetry on, decided without
    importing the framework or the SDK: a refusal (a 4xx, /api/health's
    neighbours) must stay as cheap as it is without telemetry."""
    try:
        settings = telemetry_settings()
    except SettingsError:
        return False
    if settings.disabled:
        return False
    if settings.wanted:
        return True
    from opentelemetry import trace

    return not _is_default_provider(trace.get_tracer_provider())


def _error_code(response: Any) -> str:
    """The ``code`` of a JSON error body (``{"error": {"code": ...}}``), else
    the status (what ``error.type`` holds when there is nothing better)."""
    import json

    try:
        code = json.loads(response.body)["error"]["code"]
    except (AttributeError, KeyError, TypeError, ValueError):
        code = None
    return code if isinstance(code, str) and code else str(response.status_code)


def _configure_once() -> _Telemetry | None:
    global _state
    with _lock:
        if _state is False:
            try:
                _state = _configure()
            except Exception:  # telemetry must never take a run down with it
                logger.exception("telemetry could not be configured; continuing without it")
                _state = None
    return _state  # type: ignore[return-value]


def _configure() -> _Telemetry | None:
    try:
        settings = telemetry_settings()
    except SettingsError as exc:
        logger.error("telemetry is off: %s", exc)
        return None
    from opentelemetry import metrics, trace

    existing = not _is_default_provider(trace.get_tracer_provider())
    if settings.disabled or not (settings.wanted or existing):
        # Nobody listens: spare every model call, tool call and agent run the
        # framework's tracing layers (spans nobody records, histograms).
        from agent_framework.observability import disable_instrumentation

        disable_instrumentation()
        return None
    if existing:
        logger.info("telemetry: using the process's OpenTelemetry providers")
    elif settings.connection_string:
        _configure_azure_monitor(settings.connection_string)
        logger.info("telemetry: exporting to Application Insights")
    else:
        _configure_from_otel_variables()
        logger.info("telemetry: exporting as %s ask", ", ".join(settings.otel_exporters))
    add_span_processor = getattr(trace.get_tracer_provider(), "add_span_processor", None)
    if add_span_processor is not None:  # an SDK provider (ours, the distro's, or the host's)
        add_span_processor(_run_attributes())

    from agent_framework.observability import enable_instrumentation

    enable_instrumentation(enable_sensitive_data=settings.sensitive_data)
    return _Telemetry(trace.get_tracer(INSTRUMENTATION_NAME), metrics.get_meter(INSTRUMENTATION_NAME))


#: Attributes every span of a run carries, copied from parent to child.
INHERITED = (RUN_ID, INVOCATION_ID)


def _run_attributes() -> Any:
    """A span processor that gives each span started under a run's spans
    the run id and the invocation id: the framework's model-call and
    tool-call spans then carry them too, so one query on ``app.run.id``
    finds every span of a run. Per span started, with telemetry on only."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor

    class RunAttributes(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            attributes = getattr(trace.get_current_span(parent_context), "attributes", None)
            if attributes:
                for key in INHERITED:
                    value = attributes.get(key)
                    if value is not None:
                        span.set_attribute(key, value)

    return RunAttributes()


def _is_default_provider(provider: Any) -> bool:
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

    return isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; in Azure the app's name.
    name = os.environ.get("OTEL_SERVICE_NAME") or os.environ.get("WEBSITE_SITE_NAME") or DEFAULT_SERVICE_NAME
    return Resource.create({"service.name": name})


def _configure_azure_monitor(connection_string: str) -> None:
    """The Azure Monitor distro, sending traces and metrics. Logs are not
    sent from here: the Functions host already ships the worker's logs.
    The distro's auto-instrumentations are off: HTTP server and client
    instrumentation would wrap every streamed chunk, and the framework's
    spans already cover the model calls."""
    # Resource detection from the environment only: the distro's default also
    # probes the VM metadata endpoint, a network round trip at cold start
    # that a function app gains nothing from.
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_app_service")
    # The host already ships the app's logs; the distro reads only this
    # variable (not its disable_logging argument) to leave them alone.
    os.environ.setdefault("OTEL_LOGS_EXPORTER", "none")
    from azure.monitor.opentelemetry import configure_azure_monitor

    _quiet_exporter_logs()
    off = {"enabled": False}
    # The distro's default sampler keeps about 5 spans a second, dropping
    # parts of runs at random; every run whole is the point here. An
    # OTEL_TRACES_SAMPLER set by the operator still wins.
    sampling = {} if os.environ.get("OTEL_TRACES_SAMPLER") else {"sampling_ratio": 1.0}
    configure_azure_monitor(
        connection_string=connection_string,
        **sampling,
        resource=_resource(),
        instrumentation_options={
            name: off
            for name in (
                "azure_sdk",
                "django",
                "fastapi",
                "flask",
                "httpx",
                "logging",
                "psycopg2",
                "requests",
                "urllib",
                "urllib3",
            )
        },
    )


def _quiet_exporter_logs() -> None:
    """The Azure SDK logs every export request and response at INFO: a log
    line per batch in the app's logs. Warnings and errors still show."""
    for name in ("azure.core.pipeline.policies.http_logging_policy", "azure.monitor.opentelemetry.exporter"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _configure_from_otel_variables() -> None:
    """Tracer and meter providers with the exporters ``OTEL_TRACES_EXPORTER``
    and ``OTEL_METRICS_EXPORTER`` name (``console``, ``otlp``, ...), found
    the standard way: by their entry points."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = _resource()
    tracer_provider = TracerProvider(resource=resource)
    for exporter in _exporters("opentelemetry_traces_exporter", "OTEL_TRACES_EXPORTER", "TRACES"):
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    readers = [
        PeriodicExportingMetricReader(exporter)
        for exporter in _exporters("opentelemetry_metrics_exporter", "OTEL_METRICS_EXPORTER", "METRICS")
    ]
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


#: What ``otlp`` means for each OTLP protocol (``OTEL_EXPORTER_OTLP_PROTOCOL``):
#: the entry point name of the exporter, and the package that provides it.
OTLP_EXPORTERS = {
    "http/protobuf": ("otlp_proto_http", "opentelemetry-exporter-otlp-proto-http"),
    "grpc": ("otlp_proto_grpc", "opentelemetry-exporter-otlp-proto-grpc"),
}


def _exporters(group: str, variable: str, signal: str) -> list[Any]:
    """The exporters ``variable`` names for ``signal`` (``TRACES`` or
    ``METRICS``). Unset, it is ``otlp`` when an OTLP endpoint is set and
    ``none`` otherwise. ``otlp`` takes the protocol the specification makes
    the default, HTTP/protobuf (the exporter this app installs), unless
    ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL`` asks for another."""
    from importlib.metadata import entry_points

    endpoint = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    default = "otlp" if endpoint else "none"
    names = [n.strip() for n in os.environ.get(variable, default).split(",") if n.strip()]
    found = []
    for name in names:
        if name == "none":
            continue
        package = None
        if name == "otlp":
            protocol = (
                os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            ).strip()
            if protocol not in OTLP_EXPORTERS:
                logger.error(
                    "telemetry: OTLP protocol %s is not supported (http/protobuf or grpc)", one_line(protocol, 40)
                )
                continue
            name, package = OTLP_EXPORTERS[protocol]
        points = list(entry_points(group=group, name=name))
        if not points:
            logger.error(
                "telemetry: %s names no installed exporter (%s)",
                variable,
                f"add {package} to requirements.txt" if package else f"no package provides {one_line(name, 40)!r}",
            )
            continue
        found.append(points[0].load()())
    return found


class _Telemetry:
    """The tracer and the run metrics, created once per process."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        self.tracer = tracer
        self.started = meter.create_counter("stream.runs.started", unit="{run}", description="Runs started")
        self.finished = meter.create_counter(
            "stream.runs.finished", unit="{run}", description="Runs finished, by outcome and error code"
        )
        self.duration = meter.create_histogram("stream.run.duration", unit="s", description="Run duration")
        self.ttft = meter.create_histogram(
            "stream.run.time_to_first_token", unit="s", description="From the run's start to its first answer text"
        )
        self.tokens_out = meter.create_counter(
            "stream.run.output_tokens", unit="{token}", description="Output tokens the model reported"
        )
        self.active = meter.create_up_down_counter("stream.active", unit="{stream}", description="Streams in progress")
        self.refused = meter.create_counter(
            "stream.runs.refused",
            unit="{request}",
            description="Requests refused before their run started",
        )
        self.resumes = meter.create_counter(
            "stream.resumes", unit="{request}", description="Requests to resume a run, by outcome"
        )

    def record_refusal(self, req: Any, run_id: str, runner: Any, status: int, code: str, started_ns: int) -> None:
        """One refused request: its ``SERVER`` span (in the caller's trace,
        when it sent ``traceparent``) and its count."""
        endpoint = _endpoint(runner)
        self._answer_span(req, run_id, {ENDPOINT: endpoint, OUTCOME: "refused"}, status, code, started_ns)
        self.refused.add(1, {ENDPOINT: endpoint, STATUS_CODE: status, ERROR_TYPE: code})

    def record_resume(
        self, req: Any, run_id: str | None, status: int, outcome: str, code: str | None, started_ns: int
    ) -> None:
        """One request to resume a run: its ``SERVER`` span and its count."""
        self._answer_span(req, run_id, {ENDPOINT: "resume", OUTCOME: outcome}, status, code, started_ns)
        self.resumes.add(1, {OUTCOME: outcome, STATUS_CODE: status, **({ERROR_TYPE: code} if code else {})})

    def _answer_span(
        self, req: Any, run_id: str | None, extra: dict[str, Any], status: int, code: str | None, started_ns: int
    ) -> None:
        """A ``SERVER`` span from ``started_ns`` to now for ``req``, answered
        with ``status`` (and error ``code``) without starting a run."""
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Status, StatusCode

        headers = req.headers
        path = req.url.path
        attributes: dict[str, Any] = {
            **extra,
            STATUS_CODE: status,
            "http.request.method": req.method,
            "url.path": path,
            "http.route": path,
        }
        if run_id:
            attributes[RUN_ID] = run_id
        if code:
            attributes[ERROR_TYPE] = attributes[ERROR_CODE] = code
        invocation_id = headers.get("x-ms-invocation-id")
        if invocation_id:
            attributes[INVOCATION_ID] = invocation_id
        span = self.tracer.start_span(
            f"{req.method} {path}",
            context=propagate.extract(headers),
            kind=trace.SpanKind.SERVER,
            start_time=started_ns,
            attributes=attributes,
        )
        if status >= 500:  # a 4xx is the client's doing: not an error of this server (HTTP conventions)
            span.set_status(Status(StatusCode.ERROR, code or str(status)))
        span.end()


def _endpoint(runner: Any) -> str:
    """``run_agent`` -> ``agent``: the endpoint a runner serves."""
    return getattr(runner, "__name__", "run").removeprefix("run_")


class _Run(RunObserver):
    __slots__ = (
        "_attributes",
        "_context",
        "_first_text",
        "_headers",
        "_metric_attributes",
        "_name",
        "_path",
        "_request",
        "_run",
        "_started",
        "_started_ns",
        "_state",
        "_token",
    )

    def __init__(
        self,
        state: _Telemetry,
        headers: Mapping[str, str],
        method: str,
        path: str,
        run_id: str,
        invocation_id: str | None,
        endpoint: str,
        provider: str,
        model: str,
    ) -> None:
        self._state = state
        self._headers = headers
        self._started_ns = time.time_ns()  # the request arrived
        self._started = 0.0
        self._first_text: float | None = None
        self._name = f"{method} {path}"
        self._path = path
        self._request: Any = None
        self._run: Any = None
        self._token: Any = None
        self._metric_attributes = {ENDPOINT: endpoint, "gen_ai.provider.name": provider}
        self._attributes: dict[str, Any] = {
            RUN_ID: run_id,
            ENDPOINT: endpoint,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "http.request.method": method,
        }
        if invocation_id:
            self._attributes[INVOCATION_ID] = invocation_id

    # Telemetry never takes a run down: a failure here is logged, not raised.
    def begin(self) -> None:
        try:
            self._begin()
        except Exception:
            logger.exception("telemetry: could not start the run's spans")

    def end(self, terminal: Any = None) -> None:
        try:
            self._end(terminal)
        except Exception:
            logger.exception("telemetry: could not end the run's spans")

    def _begin(self) -> None:
        from opentelemetry import context, propagate, trace

        tracer = self._state.tracer
        parent = propagate.extract(self._headers)
        self._request = tracer.start_span(
            self._name,
            context=parent,
            kind=trace.SpanKind.SERVER,
            start_time=self._started_ns,
            attributes={**self._attributes, "url.path": self._path, "http.route": self._path},
        )
        endpoint = self._attributes[ENDPOINT]
        self._run = tracer.start_span(
            f"run {endpoint}", context=trace.set_span_in_context(self._request), attributes=self._attributes
        )
        # Current for the rest of the run: the framework's spans nest under it.
        self._token = context.attach(trace.set_span_in_context(self._run))
        self._started = time.monotonic()
        self._state.started.add(1, self._metric_attributes)
        self._state.active.add(1, self._metric_attributes)

    def first_text(self) -> None:
        if self._first_text is None and self._run is not None:
            self._first_text = time.monotonic() - self._started
            self._state.ttft.record(self._first_text, self._metric_attributes)
            self._run.set_attribute(TTFT, round(self._first_text * 1000, 1))

    def _end(self, terminal: Any) -> None:
        if self._run is None:
            return
        from opentelemetry import context, trace
        from opentelemetry.trace import Status, StatusCode

        run, request, self._run = self._run, self._request, None
        code = getattr(terminal, "code", None)
        outcome = "cancelled" if terminal is None else "error" if code else "done"
        # On the request span too: a stream that ended in error is still an
        # HTTP 200, and the request row is the one an operator sees first.
        for span in (run, request):
            span.set_attribute(OUTCOME, outcome)
            if code:
                span.set_attributes({ERROR_TYPE: code, ERROR_CODE: code})
        if code:
            run.set_status(Status(StatusCode.ERROR, code))
        usage = getattr(terminal, "usage", None) or {}
        for key, attribute in (("input_tokens", "gen_ai.usage.input_tokens"), ("output_tokens", OUT_TOKENS)):
            if isinstance(usage.get(key), int):
                run.set_attribute(attribute, usage[key])
        state = self._state
        attributes = {**self._metric_attributes, OUTCOME: outcome, ERROR_TYPE: code or ""}
        state.finished.add(1, attributes)
        state.duration.record(time.monotonic() - self._started, attributes)
        state.active.add(-1, self._metric_attributes)
        if isinstance(usage.get("output_tokens"), int):
            state.tokens_out.add(usage["output_tokens"], self._metric_attributes)
        # Detach only where attached (a generator closed from elsewhere is not).
        if trace.get_current_span() is run:
            context.detach(self._token)
        run.end()
        request.set_attribute(STATUS_CODE, 200)
        request.end()


def reset_for_tests() -> None:
    """Forget the configuration decision (tests only)."""
    global _state
    with _lock:
        _state = False
