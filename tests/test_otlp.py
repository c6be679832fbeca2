"""Telemetry through the standard OTLP variables, as an operator without
Application Insights sets them: ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at
a collector (``tests/otlp_collector.py``, a fake on loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import OFFLINE_VALUES
from tests.otlp_collector import FakeCollector, attributes
from tests.support import AppServer, stream_events

SECRET = "Zanzibar-5c1e"  # a place name no span may carry unless asked to


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    fake = FakeCollector()
    try:
        yield fake
    finally:
        fake.close()


def run_against_collector(collector: FakeCollector, extra: dict[str, str]) -> tuple[str, str]:
    """Serve the app with only the OTLP endpoint set (plus ``extra``), make
    one run and one refused request, and wait for both to reach the
    collector. Returns (the run's id, the refused request's id)."""
    env = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"}
    values = {
        **OFFLINE_VALUES,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_SERVICE_NAME": "otlp-test",
        **extra,
    }
    with AppServer(values, env=env) as app, httpx.Client(base_url=app.url, timeout=30) as client:
        response, events = stream_events(
            client, "/api/agent/stream", json_body={"message": f"What is the weather in {SECRET}?"}
        )
        assert events[-1].event == "done"
        refused = client.post("/api/agent/stream", json={"message": ""})
        assert refused.status_code == 400
        run_id, refused_id = response.headers["x-run-id"], refused.headers["x-run-id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = {span.name for _, span in collector.spans()}
            finished = collector.metric_points("stream.runs.finished")
            if (
                {"run agent", "chat offline-demo"} <= names
                and finished
                and collector.metric_points("stream.runs.refused")
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the collector did not get the run; app log:\n{app.logs()}")
    assert not collector.unexpected
    return run_id, refused_id


def test_runs_reach_an_otlp_collector_with_their_ids_and_no_prompt_text(collector: FakeCollector) -> None:
    run_id, refused_id = run_against_collector(collector, {})
    assert collector.content_types == {"application/x-protobuf"}  # OTLP over HTTP/protobuf
    spans = collector.spans()
    assert {resource["service.name"] for resource, _ in spans} == {"otlp-test"}
    by_name: dict[str, list[Any]] = {}
    for _, span in spans:
        by_name.setdefault(span.name, []).append(span)

    (run,) = by_name["run agent"]
    run_attributes = attributes(run.attributes)
    assert run_attributes["app.run.id"] == run_id
    assert run_attributes["faas.invocation_id"] == run_id
    assert run_attributes["app.run.outcome"] == "done"
    assert run_attributes["gen_ai.usage.output_tokens"] > 0
    requests = {attributes(s.attributes)["app.run.id"]: s for s in by_name["POST /api/agent/stream"]}
    assert set(requests) == {run_id, refused_id}
    assert run.parent_span_id == requests[run_id].span_id
    # The model calls and the tool call, in the run's trace.
    assert len(by_name["chat offline-demo"]) == 2
    assert len(by_name["execute_tool get_weather"]) == 1
    assert {s.trace_id for s in by_name["chat offline-demo"]} == {run.trace_id}
    below = [*by_name["chat offline-demo"], *by_name["execute_tool get_weather"], *by_name["invoke_agent weather"]]
    assert {attributes(s.attributes)["app.run.id"] for s in below} == {run_id}
    refused = attributes(requests[refused_id].attributes)
    assert refused["error.type"] == "empty_message" and refused["http.response.status_code"] == 400

    (finished,) = collector.metric_points("stream.runs.finished")[-1:]
    assert finished["attributes"]["app.run.outcome"] == "done" and finished["value"] == 1
    (refusals,) = collector.metric_points("stream.runs.refused")[-1:]
    assert refusals["attributes"]["error.type"] == "empty_message"
    assert collector.metric_points("stream.run.time_to_first_token")

    # No prompt, completion or tool argument anywhere in what was sent.
    assert not any(SECRET.encode() in body for body in collector.raw)


def test_sensitive_data_on_request_reaches_the_collector(collector: FakeCollector) -> None:
    run_against_collector(collector, {"ENABLE_SENSITIVE_DATA": "true"})
    chats = [span for _, span in collector.spans() if span.name == "chat offline-demo"]
    assert any(SECRET in str(attributes(span.attributes)) for span in chats)


def test_otlp_takes_the_protocol_asked_for(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``otlp`` is HTTP/protobuf unless a protocol variable says otherwise; a
    protocol whose exporter is not installed is named in the log, not a crash."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    import telemetry

    def traces_exporters() -> list[Any]:
        return telemetry._exporters("opentelemetry_traces_exporter", "OTEL_TRACES_EXPORTER", "TRACES")

    assert traces_exporters() == []  # no endpoint, no exporter named: none
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    (exporter,) = traces_exporters()
    assert isinstance(exporter, OTLPSpanExporter)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with caplog.at_level("ERROR", logger="telemetry"):
        assert traces_exporters() == []
    assert "opentelemetry-exporter-otlp-proto-grpc" in caplog.text
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")  # the signal's own wins
    assert len(traces_exporters()) == 1
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    caplog.clear()
    with caplog.at_level("ERROR", logger="telemetry"):
        assert traces_exporters() == []
    assert "http/json is not supported" in caplog.text
