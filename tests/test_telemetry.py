"""Telemetry over real runs: the app on the local host, with in-memory
OpenTelemetry exporters in its process (``tests/otel_host.py``), driven
over loopback HTTP; the spans and metrics it recorded are read back when it
stops."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import telemetry
from settings import SettingsError, telemetry_settings
from tests.conftest import OFFLINE_VALUES
from tests.support import ROOT, AppServer, hermetic_environ, parse_sse, stream_events

SECRET = "Zanzibar-7f3a"  # a place name no span may carry unless asked to


def run_host(
    tmp_path: Path,
    values: dict[str, str],
    requests: list[dict[str, Any]],
    drive: Callable[[httpx.Client], None] | None = None,
) -> tuple[list, dict, list]:
    """Serve the app with ``values``, POST each of ``requests`` to the agent
    endpoint (then call ``drive`` with the client, if given), stop the host,
    and return (responses, dump, events per run)."""
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "1", **values}}))
    dump = tmp_path / "otel.json"
    env = hermetic_environ()
    env.update({"PYTHONUNBUFFERED": "1", "OTEL_TEST_DUMP": str(dump)})
    port_file = tmp_path / "port"
    log = (tmp_path / "host.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.otel_host",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--settings",
            str(settings),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    results = []
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, (tmp_path / "host.log").read_text()
            assert time.monotonic() < deadline, "the host did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{int(port_file.read_text())}", timeout=30) as client:
            while True:
                assert process.poll() is None, (tmp_path / "host.log").read_text()
                try:
                    if client.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the host did not start"
                time.sleep(0.1)
            for body in requests:
                results.append(stream_events(client, "/api/agent/stream", json_body=body))
            if drive is not None:
                drive(client)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        log.close()
    assert dump.exists(), (tmp_path / "host.log").read_text()
    return [r for r, _ in results], json.loads(dump.read_text()), [e for _, e in results]


def children(spans: list[dict], parent: dict) -> list[dict]:
    return [s for s in spans if s["parent_id"] == parent["span_id"]]


def descendants(spans: list[dict], parent: dict) -> list[dict]:
    found, todo = [], [parent]
    while todo:
        for child in children(spans, todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def metric_points(dump: dict, name: str) -> list[dict]:
    points = []
    for resource in dump["metrics"].get("resource_metrics", []):
        for scope in resource["scope_metrics"]:
            for metric in scope["metrics"]:
                if metric["name"] == name:
                    points.extend(metric["data"]["data_points"])
    return points


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, dict, list]:
    return run_host(
        tmp_path_factory.mktemp("otel"),
        {},
        [{"message": f"What is the weather in {SECRET}?"}],
    )


def test_a_run_is_traced_request_run_model_and_tool_calls(default_run: tuple[list, dict, list]) -> None:
    (response,), dump, (events,) = default_run
    assert response.status_code == 200 and events[-1].event == "done"
    spans = dump["spans"]
    run_id = response.headers["x-run-id"]

    (request,) = [s for s in spans if s["name"] == "POST /api/agent/stream"]
    assert request["kind"] == "SERVER"
    assert request["attributes"]["app.run.id"] == run_id
    (run,) = children(spans, request)
    assert run["name"] == "run agent"
    attributes = run["attributes"]
    assert attributes["app.run.id"] == run_id
    assert attributes["faas.invocation_id"] == run_id  # the local host's invocation id is the run id
    assert attributes["app.run.outcome"] == "done"
    assert attributes["gen_ai.provider.name"] == "offline"
    usage = events[-1].data["usage"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"]
    assert attributes["gen_ai.usage.input_tokens"] == usage["input_tokens"]
    assert attributes["app.run.time_to_first_token_ms"] >= 0

    # The framework's GenAI spans nest under the run: the agent, each model
    # call (the offline model's too), and the tool call.
    below = descendants(spans, run)
    names = [s["name"] for s in below]
    assert "invoke_agent weather" in names
    assert names.count("chat offline-demo") == 2  # the tool call, then the answer
    (tool,) = [s for s in below if s["name"] == "execute_tool get_weather"]
    assert tool["attributes"]["gen_ai.tool.name"] == "get_weather"
    assert all(s["trace_id"] == request["trace_id"] for s in below)
    # Each of them carries the run id and the invocation id, as the run does.
    assert {(s["attributes"]["app.run.id"], s["attributes"]["faas.invocation_id"]) for s in below} == {(run_id, run_id)}


def test_a_workflow_run_nests_both_agents_under_the_run(tmp_path: Path) -> None:
    def workflow(client: httpx.Client) -> None:
        body = {"message": "Research the weather in Oslo and write a poem"}
        _, events = stream_events(client, "/api/workflow/stream", json_body=body)
        assert events[-1].event == "done"

    _, dump, _ = run_host(tmp_path, {}, [], drive=workflow)
    spans = dump["spans"]
    (run,) = [s for s in spans if s["name"] == "run workflow"]
    below = descendants(spans, run)
    agents = [s for s in below if s["name"].startswith("invoke_agent ")]
    assert sorted(a["name"] for a in agents) == ["invoke_agent researcher", "invoke_agent writer"]
    (researcher,) = [a for a in agents if a["name"] == "invoke_agent researcher"]
    assert "execute_tool get_weather" in [s["name"] for s in descendants(spans, researcher)]
    assert all(any(c["name"] == "chat offline-demo" for c in descendants(spans, a)) for a in agents)


def test_no_prompt_or_completion_text_in_spans_by_default(default_run: tuple[list, dict, list]) -> None:
    _, dump, _ = default_run
    assert SECRET not in json.dumps(dump["spans"])


def test_run_metrics_are_recorded(default_run: tuple[list, dict, list]) -> None:
    _, dump, (events,) = default_run
    (started,) = metric_points(dump, "stream.runs.started")
    assert started["value"] == 1 and started["attributes"]["app.endpoint"] == "agent"
    (finished,) = metric_points(dump, "stream.runs.finished")
    assert finished["value"] == 1
    assert finished["attributes"]["app.run.outcome"] == "done" and finished["attributes"]["error.type"] == ""
    (ttft,) = metric_points(dump, "stream.run.time_to_first_token")
    assert ttft["count"] == 1
    (tokens,) = metric_points(dump, "stream.run.output_tokens")
    assert tokens["value"] == events[-1].data["usage"]["output_tokens"]
    (active,) = metric_points(dump, "stream.active")
    assert active["value"] == 0  # one up, one down


def test_sensitive_data_on_request_puts_the_text_in_spans(tmp_path: Path) -> None:
    (response,), dump, _ = run_host(
        tmp_path, {"ENABLE_SENSITIVE_DATA": "true"}, [{"message": f"What is the weather in {SECRET}?"}]
    )
    assert response.status_code == 200
    chats = [s for s in dump["spans"] if s["name"] == "chat offline-demo"]
    assert any(SECRET in json.dumps(s["attributes"]) for s in chats)


def test_a_failed_run_is_an_error_span_and_counted_by_code(tmp_path: Path) -> None:
    _, dump, (events,) = run_host(
        tmp_path,
        {"RUN_DEADLINE_SECONDS": "0.3", "OFFLINE_MODEL_DELAY_MS": "100"},
        [{"message": "Write a long report on the weather in Oslo"}],
    )
    assert events[-1].event == "error" and events[-1].data["error"]["code"] == "timeout"
    (run,) = [s for s in dump["spans"] if s["name"] == "run agent"]
    assert run["status"] == "ERROR"
    assert run["attributes"]["app.run.outcome"] == "error" and run["attributes"]["error.type"] == "timeout"
    assert run["attributes"]["app.error.code"] == "timeout"
    # The request span says it too: the stream was an HTTP 200 all the same.
    (request,) = [s for s in dump["spans"] if s["span_id"] == run["parent_id"]]
    assert request["attributes"]["app.run.outcome"] == "error" and request["attributes"]["app.error.code"] == "timeout"
    assert request["attributes"]["http.response.status_code"] == 200
    (finished,) = metric_points(dump, "stream.runs.finished")
    assert finished["attributes"]["error.type"] == "timeout"


def test_a_run_cancelled_when_its_client_leaves_is_counted_as_cancelled(tmp_path: Path) -> None:
    def leave_early(client: httpx.Client) -> None:
        body = {"message": "Write a long report on the weather in Oslo"}
        with client.stream("POST", "/api/agent/stream", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data:") and '"text"' in line:
                    break  # the first text: then hang up mid-stream
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the host noticed; with no resume window it cancels the run
            if b"the client disconnected" in (tmp_path / "host.log").read_bytes():
                break
            time.sleep(0.05)

    # No resume window: a run whose client leaves is cancelled at once.
    values = {"OFFLINE_MODEL_DELAY_MS": "50", "RESUME_WINDOW_SECONDS": "0"}
    _, dump, _ = run_host(tmp_path, values, [], drive=leave_early)
    (run,) = [s for s in dump["spans"] if s["name"] == "run agent"]
    assert run["attributes"]["app.run.outcome"] == "cancelled" and "error.type" not in run["attributes"]
    (finished,) = metric_points(dump, "stream.runs.finished")
    assert finished["attributes"]["app.run.outcome"] == "cancelled"
    (active,) = metric_points(dump, "stream.active")
    assert active["value"] == 0  # the stream that went away is no longer counted


async def test_telemetry_is_off_without_an_exporter() -> None:
    # The environment holds no setting of the app here (tests/conftest.py).
    from agent_framework.observability import OBSERVABILITY_SETTINGS, enable_instrumentation

    telemetry.reset_for_tests()
    try:
        assert await telemetry.observe_run(object(), "r", object(), object()) is telemetry.NOOP
        assert not OBSERVABILITY_SETTINGS.ENABLED  # the framework's tracing layers step aside too
    finally:
        telemetry.reset_for_tests()
        enable_instrumentation(force=True)  # the framework's default, for the tests that follow


def test_telemetry_settings() -> None:
    assert not telemetry_settings({}).wanted
    assert telemetry_settings({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}).wanted
    assert telemetry_settings({"OTEL_TRACES_EXPORTER": "console"}).otel_exporters == ("OTEL_TRACES_EXPORTER",)
    assert not telemetry_settings({"OTEL_TRACES_EXPORTER": "none"}).wanted
    assert not telemetry_settings({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}).wanted
    assert telemetry_settings({"ENABLE_SENSITIVE_DATA": "TRUE"}).sensitive_data
    with pytest.raises(SettingsError, match="ENABLE_SENSITIVE_DATA") as caught:
        telemetry_settings({"ENABLE_SENSITIVE_DATA": "sometimes"})
    assert "sometimes" not in str(caught.value)


def test_importing_the_app_loads_no_telemetry_package() -> None:
    code = (
        "import sys, function_app; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'azure.monitor', 'telemetry'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().replace("'", '"')) in ([], ["telemetry"])


def console_objects(log: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporters printed into a log."""
    decoder, found, i = json.JSONDecoder(), [], 0
    while (start := log.find("\n{", i)) >= 0:
        try:
            obj, i = decoder.raw_decode(log, start + 1)
            found.append(obj)
        except ValueError:
            i = start + 1
    return found


def test_otel_console_exporters_print_runs_locally() -> None:
    env = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"}
    values = {**OFFLINE_VALUES, "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}
    with AppServer(values, env=env) as app, httpx.Client(base_url=app.url, timeout=30) as client:
        response, events = stream_events(client, "/api/agent/stream", json_body={"message": "Weather in Oslo?"})
        assert events[-1].event == "done"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            printed = console_objects(app.logs())
            runs = [o for o in printed if o.get("name") == "run agent"]
            metrics = {
                m["name"]
                for o in printed
                for r in o.get("resource_metrics", [])
                for sm in r["scope_metrics"]
                for m in sm["metrics"]
            }
            if runs and "stream.runs.finished" in metrics:
                break
            time.sleep(0.2)
        assert runs, app.logs()
        assert runs[0]["attributes"]["app.run.id"] == response.headers["x-run-id"]
        assert "stream.runs.finished" in metrics
        assert any(o.get("name") == "chat offline-demo" for o in printed)


class FakeIngestion:
    """Application Insights' ingestion endpoint on loopback: records every
    envelope the exporter sends and accepts it."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                items: list[Any] = []
                if self.path.endswith("/track"):
                    items = json.loads(body)
                    fake.envelopes.extend(items)
                reply = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("x-ms-qps-subscribed", "false")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, base_type: str) -> list[dict[str, Any]]:
        return [e["data"]["baseData"] for e in list(self.envelopes) if e.get("data", {}).get("baseType") == base_type]


def test_runs_reach_application_insights_through_the_distro(tmp_path: Path) -> None:
    ingestion = FakeIngestion()
    connection = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        f"IngestionEndpoint={ingestion.url};LiveEndpoint={ingestion.url}"
    )
    env = {
        # Export fast, and keep the SDK's own reporting and remote settings at home.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "TMPDIR": str(tmp_path),  # the exporter's retry storage
    }
    values = {**OFFLINE_VALUES, "APPLICATIONINSIGHTS_CONNECTION_STRING": connection}
    try:
        with AppServer(values, env=env) as app, httpx.Client(base_url=app.url, timeout=30) as client:
            # Several runs in quick succession: more spans a second than a sampler
            # that keeps ~5 a second lets through.
            run_ids = []
            for _ in range(4):
                response, events = stream_events(client, "/api/agent/stream", json_body={"message": "Weather in Oslo?"})
                assert events[-1].event == "done"
                run_ids.append(response.headers["x-run-id"])
            refused_id = client.post("/api/agent/stream", json={"messages": []}).headers["x-run-id"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                requests = [r for r in ingestion.of("RequestData") if r["properties"].get("app.run.id") in run_ids]
                runs = [d for d in ingestion.of("RemoteDependencyData") if d["name"] == "run agent"]
                metrics = {m["name"] for data in ingestion.of("MetricData") for m in data["metrics"]}
                refusals = [r for r in ingestion.of("RequestData") if r["properties"].get("app.run.id") == refused_id]
                if len(requests) == len(runs) == 4 and "stream.runs.finished" in metrics and refusals:
                    break
                time.sleep(0.2)
            assert requests, f"no request telemetry arrived; app log:\n{app.logs()}"
            assert {r["name"] for r in requests} == {"POST /api/agent/stream"}
            assert sorted(r["properties"]["app.run.id"] for r in runs) == sorted(run_ids)
            assert {r["properties"]["app.run.outcome"] for r in runs} == {"done"}
            # A refused request, as the README's queries find it: its code among the
            # custom dimensions (where error.type, a standard attribute, is not kept).
            (refused,) = refusals
            assert refused["responseCode"] == "400" and refused["success"] is False
            assert refused["properties"]["app.run.outcome"] == "refused"
            assert refused["properties"]["app.error.code"] == "missing_message"
            assert "error.type" not in refused["properties"]
            # The whole run: every span, not a sample (the distro's default keeps ~5 spans a second).
            dependencies = [d["name"] for d in ingestion.of("RemoteDependencyData")]
            expected = ["run agent", "invoke_agent weather", "chat offline-demo", "execute_tool get_weather"]
            assert sorted(dependencies) == sorted([*expected, "chat offline-demo"] * 4)
            # Every row of a run is found by its run id (the model and tool calls too).
            assert sorted(d["properties"]["app.run.id"] for d in ingestion.of("RemoteDependencyData")) == sorted(
                run_ids * 5
            )
            assert "stream.runs.finished" in metrics
            # Logs are the host's to ship, not sent twice. They would have come with
            # the spans (same 100 ms schedule); give a straggler a moment anyway.
            time.sleep(1)
            assert not ingestion.of("MessageData")
    finally:
        ingestion.server.shutdown()


def test_requests_refused_before_a_run_are_traced_and_counted(tmp_path: Path) -> None:
    """Bad input, a method that starts nothing and a full instance each
    leave a server span with the status, the error code, the run id and
    the invocation id, and a count; none of them a run."""
    answers: dict[str, httpx.Response] = {}
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"

    def refuse(client: httpx.Client) -> None:
        stream = "/api/agent/stream"
        parent = {"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"}
        answers["invalid_json"] = client.post(
            stream, content=b"{", headers={"content-type": "application/json", **parent}
        )
        answers["unsupported_media_type"] = client.post(stream, content=b"hi", headers={"content-type": "text/plain"})
        answers["body_too_large"] = client.post(stream, json={"message": "x" * 2000})
        answers["method_not_allowed"] = client.head(stream)
        answers["invalid_run_input"] = client.post("/api/agent/ag-ui", json={"messages": "no"})
        # One run holds the only slot: the next request is refused with 429.
        with client.stream("POST", stream, json={"message": "Write a long report on the weather in Oslo"}) as held:
            for line in held.iter_lines():
                if line.startswith("data:"):
                    break
            answers["too_many_runs"] = client.post(stream, json={"message": "Weather in Oslo?"})

    values = {"MAX_CONCURRENT_RUNS": "1", "MAX_BODY_BYTES": "1024", "OFFLINE_MODEL_DELAY_MS": "20"}
    _, dump, _ = run_host(tmp_path, values, [], drive=refuse)
    statuses = {code: response.status_code for code, response in answers.items()}
    assert statuses == {
        "invalid_json": 400,
        "unsupported_media_type": 415,
        "body_too_large": 413,
        "method_not_allowed": 405,
        "invalid_run_input": 400,
        "too_many_runs": 429,
    }
    refused = {
        s["attributes"]["error.type"]: s
        for s in dump["spans"]
        if s["kind"] == "SERVER" and "error.type" in s["attributes"]
    }
    assert set(refused) == set(answers)
    for code, span in refused.items():
        attributes = span["attributes"]
        assert attributes["http.response.status_code"] == statuses[code]
        assert attributes["app.run.outcome"] == "refused"
        assert attributes["app.endpoint"] == "agent"
        assert attributes["app.run.id"] and attributes["faas.invocation_id"] == attributes["app.run.id"]
        assert span["status"] == "UNSET"  # the client's error, not the server's
        assert span["name"] == f"{'HEAD' if code == 'method_not_allowed' else 'POST'} {attributes['url.path']}"
    assert refused["too_many_runs"]["attributes"]["app.run.id"] == answers["too_many_runs"].headers["x-run-id"]
    assert refused["invalid_run_input"]["attributes"]["url.path"] == "/api/agent/ag-ui"
    assert f"{refused['invalid_json']['trace_id']:032x}" == caller_trace  # the caller's trace goes on
    assert not [s for s in dump["spans"] if s["parent_id"] in {r["span_id"] for r in refused.values()}]

    counted = {
        (p["attributes"]["error.type"], p["attributes"]["http.response.status_code"]): p["value"]
        for p in metric_points(dump, "stream.runs.refused")
    }
    assert counted == {(code, status): 1 for code, status in statuses.items()}
    (started,) = metric_points(dump, "stream.runs.started")
    assert started["value"] == 1  # only the run that held the slot started


def test_requests_to_resume_a_run_are_traced_and_counted_by_outcome(tmp_path: Path) -> None:
    """A resume (the runs route, or a stream endpoint's Last-Event-ID) leaves
    a server span with its outcome, the resumed run's id and its own
    invocation id, and a count by outcome; none of them starts a run."""
    answers: dict[str, httpx.Response] = {}

    def resume(client: httpx.Client) -> None:
        with client.stream("POST", "/api/agent/stream", json={"message": "Weather in Oslo?"}) as first:
            events = parse_sse(list(first.iter_lines()))
        answers["first"] = first
        token, last = first.headers["x-run-token"], events[-1].id
        runs = f"/api/runs/{token}/stream"
        answers["resumed"] = client.get(runs, params={"after": f"{token}:2"})
        answers["finished"] = client.get(runs, headers={"Last-Event-ID": last})
        answers["bad_id"] = client.get(runs, params={"after": "nope"})
        answers["reconnect"] = client.get(
            "/api/agent/stream", params={"message": "hi"}, headers={"Last-Event-ID": "unknown-run:3"}
        )

    _, dump, _ = run_host(tmp_path, {}, [], drive=resume)
    assert {k: r.status_code for k, r in answers.items()} == {
        "first": 200,
        "resumed": 200,
        "finished": 204,
        "bad_id": 400,
        "reconnect": 204,
    }
    spans = [s for s in dump["spans"] if s["attributes"].get("app.endpoint") == "resume"]
    by_path = sorted(
        (s["attributes"]["app.run.outcome"], s["attributes"]["http.response.status_code"], s["attributes"]["url.path"])
        for s in spans
    )
    runs = f"/api/runs/{answers['first'].headers['x-run-token']}/stream"
    assert by_path == sorted(
        [
            ("resumed", 200, runs),
            ("nothing_to_resume", 204, runs),
            ("refused", 400, runs),
            ("nothing_to_resume", 204, "/api/agent/stream"),
        ]
    )
    (resumed,) = [s for s in spans if s["attributes"]["app.run.outcome"] == "resumed"]
    run_id = answers["first"].headers["x-run-id"]
    assert resumed["attributes"]["app.run.id"] == run_id == answers["resumed"].headers["x-run-id"]
    assert resumed["attributes"]["faas.invocation_id"] not in (None, run_id)  # the resume is a request of its own
    (refused,) = [s for s in spans if s["attributes"]["app.run.outcome"] == "refused"]
    assert refused["attributes"]["app.error.code"] == "invalid_event_id"
    counted = {
        (p["attributes"]["app.run.outcome"], p["attributes"]["http.response.status_code"]): p["value"]
        for p in metric_points(dump, "stream.resumes")
    }
    assert counted == {("resumed", 200): 1, ("nothing_to_resume", 204): 2, ("refused", 400): 1}
    (started,) = metric_points(dump, "stream.runs.started")
    assert started["value"] == 1
    assert not metric_points(dump, "stream.runs.refused")  # a resume is not a refused run
