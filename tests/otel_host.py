"""``python -m tests.otel_host --port N --settings FILE``: the local host
(``devhost``) with in-memory OpenTelemetry exporters installed before the
app loads, as a host that configures OpenTelemetry itself would. When the
server stops, every finished span and the metrics are written as JSON to
the file named by ``OTEL_TEST_DUMP``."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def span_record(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind.name,
        "span_id": span.context.span_id,
        "trace_id": span.context.trace_id,
        "parent_id": span.parent.span_id if span.parent else None,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
    }


def main() -> int:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    def dump(*_: object) -> None:
        data = reader.get_metrics_data()
        record = {
            "spans": [span_record(s) for s in spans.get_finished_spans()],
            "metrics": json.loads(data.to_json()) if data else {},
        }
        Path(os.environ["OTEL_TEST_DUMP"]).write_text(json.dumps(record, default=str))

    def dump_and_exit(*_: object) -> None:
        dump()
        sys.exit(0)

    # uvicorn shuts down on SIGTERM, then raises it again for the handler it
    # found: this one.
    signal.signal(signal.SIGTERM, dump_and_exit)
    from devhost.__main__ import main as serve

    code = serve(sys.argv[1:])
    dump()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
