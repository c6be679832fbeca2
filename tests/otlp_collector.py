"""A fake OpenTelemetry collector on loopback: OTLP over HTTP/protobuf
(``POST /v1/traces``, ``POST /v1/metrics``), decoded with the protocol's own
message types (``opentelemetry-proto``). What the app exports when
``OTEL_EXPORTER_OTLP_ENDPOINT`` names it."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

EXPORT = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


class FakeCollector:
    """An OTLP/HTTP collector on loopback: keeps every export request it
    receives (raw and decoded) and acknowledges it."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.content_types: set[str] = set()
        self.unexpected: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path not in EXPORT:
                    collector.unexpected.append(self.path)
                    self.send_response(404)
                    self.end_headers()
                    return
                request_type, response_type = EXPORT[self.path]
                message = request_type.FromString(body)
                collector.raw.append(body)
                collector.content_types.add(self.headers.get("content-type", ""))
                (collector.traces if self.path == "/v1/traces" else collector.metrics).append(message)
                reply = response_type().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """Every span received, with its resource's attributes."""
        found = []
        for request in list(self.traces):
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope.spans)
        return found

    def metric_points(self, name: str) -> list[dict[str, Any]]:
        """The data points of every export of metric ``name``, cumulative:
        the last export has the totals."""
        points = []
        for request in list(self.metrics):
            for resource_metrics in request.resource_metrics:
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name == name:
                            data = getattr(metric, metric.WhichOneof("data"))
                            points.extend(
                                {"attributes": attributes(p.attributes), "value": point_value(p)}
                                for p in data.data_points
                            )
        return points

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(key_values: Any) -> dict[str, Any]:
    found = {}
    for kv in key_values:
        kind = kv.value.WhichOneof("value")
        found[kv.key] = getattr(kv.value, kind) if kind else None
    return found


def point_value(point: Any) -> Any:
    if hasattr(point, "count") and not hasattr(point, "as_int"):
        return point.count  # a histogram: how many recorded
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
