"""The app under the real Azure Functions Python worker library
(``azure-functions-runtime``, the library the Python 3.13 worker runs), not
only under ``devhost/``: indexing, the HTTP-streaming server the worker
starts, and invocations that stream.

It runs in its own Python 3.13 environment, ``.venv-worker313`` (``make
test`` builds it: ``make worker313``), driven by
``tests/worker313/driver.py``, which plays the host. Without that
environment the test fails saying how to get it; deselect it on purpose
with ``-m "not worker313"``.
"""

from __future__ import annotations

import ast
import json
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.agui_support import run_input, user
from tests.otlp_collector import FakeCollector, attributes
from tests.support import ROOT, hermetic_environ, parse_sse

pytestmark = pytest.mark.worker313

WORKER_PYTHON = ROOT / ".venv-worker313" / "bin" / "python"
DRIVER = ROOT / "tests" / "worker313" / "driver.py"
# Variables that make the worker believe it runs in Azure (this machine sets CONTAINER_NAME).
AZURE_MARKERS = ("CONTAINER_NAME", "WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME", "FUNCTIONS_WORKER_DIRECTORY")


def declared_functions() -> set[str]:
    """The functions ``function_app.py`` declares (``@app.route``), read from
    its source: what the worker must index."""
    tree = ast.parse((ROOT / "function_app.py").read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        and any(
            isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "route"
            for d in node.decorator_list
        )
    }


class Worker:
    """The driver process: indexing result first, then one JSON line per
    answered invocation."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.init = self.next(60)
        uri = self.init.get("capabilities", {}).get("HttpUri")
        if uri:  # the worker starts its HTTP server as a task: it listens a moment after answering
            self._wait_until_listening(uri)

    def _wait_until_listening(self, uri: str, timeout: float = 30) -> None:
        host, port = uri.removeprefix("http://").rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the worker's HTTP server never listened; its log:\n{self.log()}") from None
                time.sleep(0.05)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout: float = 30) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the worker did not answer; its log:\n{self.log()}") from None

    def log(self) -> str:
        return (ROOT / "test-output" / "worker313.log").read_text(errors="replace")

    def invoke(self, function: str, method: str, path: str, params: dict[str, str] | None = None) -> str:
        """Send the host's InvocationRequest (with the route's parameters, as
        the host passes them) and return its invocation id."""
        invocation_id = str(uuid.uuid4())
        command = {"invoke": function, "invocation_id": invocation_id, "method": method, "url": path}
        command["params"] = params or {}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return invocation_id


@pytest.fixture(scope="module")
def collector() -> Iterator[FakeCollector]:
    """Where the worker's telemetry goes: it runs with telemetry on, as in Azure."""
    fake = FakeCollector()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture(scope="module")
def worker(collector: FakeCollector) -> Iterator[Worker]:
    if not WORKER_PYTHON.exists():
        pytest.fail(
            "The Python 3.13 worker environment is missing: run `make worker313` (it needs python3.13, e.g. "
            "`pyenv install 3.13` or `apt-get install python3.13`), or deselect with -m 'not worker313'."
        )
    env = {k: v for k, v in hermetic_environ().items() if k not in AZURE_MARKERS}
    env.update({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "30", "PYTHONUNBUFFERED": "1"})
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"})
    (ROOT / "test-output").mkdir(exist_ok=True)
    with (ROOT / "test-output" / "worker313.log").open("w") as log:
        process = subprocess.Popen(
            [str(WORKER_PYTHON), str(DRIVER), str(ROOT)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            yield Worker(process)
        finally:
            process.stdin.close()  # type: ignore[union-attr]
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_the_worker_indexes_the_app_and_starts_its_streaming_server(worker: Worker) -> None:
    init = worker.init
    assert init["init"] == "Success" and init["metadata"] == "Success", worker.log()
    assert init["capabilities"]["HttpUri"].startswith("http://127.0.0.1:")  # HTTP streaming is on
    functions = init["functions"]
    assert set(functions) == declared_functions()
    assert all(f["load"] == "Success" for f in functions.values())
    routes = {name: next(b for b in f["bindings"] if b["type"] == "httpTrigger") for name, f in functions.items()}
    assert routes["stream_agent"]["route"] == "agent/stream" and routes["stream_agent"]["authLevel"] == "FUNCTION"
    assert routes["health"]["authLevel"] == "ANONYMOUS"


def test_an_invocation_streams_through_the_workers_server(worker: Worker) -> None:
    uri = worker.init["capabilities"]["HttpUri"]
    invocation_id = worker.invoke("stream_agent", "POST", "/api/agent/stream")
    answered_at = None
    with (
        httpx.Client(base_url=uri, timeout=30) as client,
        client.stream(
            "POST",
            "/api/agent/stream",
            json={"message": "What is the weather in Oslo?"},
            headers={"x-ms-invocation-id": invocation_id},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-run-id"] == invocation_id  # the run id is the invocation id
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if answered_at is None and not worker.lines.empty():
                answered_at = len(lines)
    events = parse_sse(lines)
    answer = worker.next()
    assert answer == {"invocation_id": invocation_id, "status": "Success", "error": ""}
    # The worker answered the invocation while the body was still streaming:
    # the host's invocation (and functionTimeout) ends before the stream does.
    assert answered_at is not None and answered_at < len(lines)
    names = [e.event for e in events]
    assert names[0] == "agent_started" and names[-1] == "done"
    assert "tool_call" in names and "tool_result" in names
    assert "Oslo" in "".join(e.data["text"] for e in events if e.event == "message")


def test_an_agui_run_streams_token_by_token_under_the_worker(worker: Worker) -> None:
    """AG-UI goes through the same streaming server: the worker answers the
    invocation while the body still streams, and the text comes in pieces."""
    uri = worker.init["capabilities"]["HttpUri"]
    invocation_id = worker.invoke("agui_agent", "POST", "/api/agent/ag-ui")
    body = run_input([user("What is the weather in Oslo?")])
    answered_at = None
    lines: list[str] = []
    with (
        httpx.Client(base_url=uri, timeout=30) as client,
        client.stream("POST", "/api/agent/ag-ui", json=body, headers={"x-ms-invocation-id": invocation_id}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            lines.append(line)
            if answered_at is None and not worker.lines.empty():
                answered_at = len(lines)
    assert worker.next() == {"invocation_id": invocation_id, "status": "Success", "error": ""}
    assert answered_at is not None and answered_at < len(lines)
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    types = [e["type"] for e in events]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert events[0]["threadId"] == body["threadId"] and events[0]["runId"] == body["runId"]
    assert "TOOL_CALL_RESULT" in types
    pieces = [e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT"]
    assert len(pieces) > 5 and "Oslo" in "".join(pieces)


def test_a_run_resumes_under_the_worker(worker: Worker) -> None:
    """``runs/{token}/stream`` under the worker's own HTTP server: the
    invocation carries the route's parameters, as the host sends them, and
    the replay is the stream the first request got, event for event."""
    uri = worker.init["capabilities"]["HttpUri"]
    invocation_id = worker.invoke("stream_agent", "POST", "/api/agent/stream")
    body = {"message": "What is the weather in Oslo?"}
    with httpx.Client(base_url=uri, timeout=30) as client:
        first = client.post("/api/agent/stream", json=body, headers={"x-ms-invocation-id": invocation_id})
        assert first.status_code == 200 and worker.next()["status"] == "Success"
        token = first.headers["x-run-token"]
        original = parse_sse(first.text.splitlines())
        path = f"/api/runs/{token}/stream"
        invocation_id = worker.invoke("resume_stream", "GET", path, params={"token": token})
        again = client.get(path, headers={"x-ms-invocation-id": invocation_id})
        assert again.status_code == 200, again.text
        assert worker.next()["status"] == "Success"
    replayed = parse_sse(again.text.splitlines())
    assert [(e.event, e.data) for e in replayed] == [(e.event, e.data) for e in original]


def test_bad_input_is_a_json_error_under_the_worker_too(worker: Worker) -> None:
    uri = worker.init["capabilities"]["HttpUri"]
    invocation_id = worker.invoke("stream_agent", "POST", "/api/agent/stream")
    response = httpx.post(
        f"{uri}/api/agent/stream",
        content=b"{not json",
        headers={"x-ms-invocation-id": invocation_id, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert worker.next()["status"] == "Success"


def test_health_under_the_worker(worker: Worker) -> None:
    uri = worker.init["capabilities"]["HttpUri"]
    invocation_id = worker.invoke("health", "GET", "/api/health")
    started = time.monotonic()
    response = httpx.get(f"{uri}/api/health", headers={"x-ms-invocation-id": invocation_id}, timeout=30)
    model = {"configured": True, "provider": "offline", "model": "offline-demo"}
    assert response.json() == {"status": "ok", "model": model}
    assert worker.next(timeout=max(1.0, 30 - (time.monotonic() - started)))["invocation_id"] == invocation_id


def test_runs_are_traced_with_the_hosts_invocation_id_under_the_worker(
    worker: Worker, collector: FakeCollector
) -> None:
    """Under the real worker the request, the run and the framework's model
    and tool calls nest in one trace, each carrying the invocation id the
    host gave (what Application Insights joins the host's own rows on); a
    refused request is traced too."""
    uri = worker.init["capabilities"]["HttpUri"]
    invocation_id = worker.invoke("stream_agent", "POST", "/api/agent/stream")
    body = {"message": "What is the weather in Oslo?"}
    with httpx.Client(base_url=uri, timeout=30) as client:
        response = client.post("/api/agent/stream", json=body, headers={"x-ms-invocation-id": invocation_id})
        assert response.status_code == 200 and "event: done" in response.text
        worker.next()
        refused_id = worker.invoke("stream_agent", "POST", "/api/agent/stream")
        refused = client.post("/api/agent/stream", json={"message": ""}, headers={"x-ms-invocation-id": refused_id})
        assert refused.status_code == 400
        worker.next()

    def spans_of(run_id: str) -> list[tuple[str, Any]]:
        return [
            (span.name, span)
            for _, span in collector.spans()
            if attributes(span.attributes).get("app.run.id") == run_id
        ]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = [name for name, _ in spans_of(invocation_id)]
        if "execute_tool get_weather" in names and names.count("chat offline-demo") == 2 and spans_of(refused_id):
            break
        time.sleep(0.2)
    spans = dict(spans_of(invocation_id))
    assert {"POST /api/agent/stream", "run agent", "invoke_agent weather", "execute_tool get_weather"} <= set(spans), (
        worker.log()
    )
    assert all(attributes(s.attributes)["faas.invocation_id"] == invocation_id for _, s in spans_of(invocation_id))
    assert len({s.trace_id for _, s in spans_of(invocation_id)}) == 1
    assert spans["run agent"].parent_span_id == spans["POST /api/agent/stream"].span_id
    ((name, refusal),) = spans_of(refused_id)
    assert name == "POST /api/agent/stream"
    assert attributes(refusal.attributes)["app.error.code"] == "empty_message"
