"""OTLP metrics receivers on 127.0.0.1 for tests: gRPC and HTTP/protobuf, as a collector has.

No collector binary can be installed here, so these stand in for its receivers: they accept
real exports from the real exporters and keep the decoded requests for assertions.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

Key = tuple[str, frozenset[tuple[str, Any]]]


def _value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


class Store:
    def __init__(self) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def add(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, headers: dict[str, str]
    ) -> None:
        with self._lock:
            self.requests.append(request)
            self.headers.append(headers)

    def latest(self) -> dict[Key, Any]:
        """The newest point of each metric series (cumulative exports: the newest is the total)."""
        points: dict[Key, Any] = {}
        with self._lock:
            requests = list(self.requests)
        for request in requests:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        for key, value in _metric_points(metric):
                            points[key] = value
        return points

    def resources(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {a.key: _value(a.value) for a in rm.resource.attributes}
                for request in self.requests
                for rm in request.resource_metrics
            ]

    def totals_by_instance(self, name: str) -> dict[str, list[float]]:
        """Each sender's (`service.instance.id`) total of metric `name`, summed over its
        points (a histogram's: its count), in the order its exports arrived."""
        with self._lock:
            requests = list(self.requests)
        totals: dict[str, list[float]] = {}
        for request in requests:
            for rm in request.resource_metrics:
                resource = {a.key: _value(a.value) for a in rm.resource.attributes}
                found = [
                    value[0] if isinstance(value, tuple) else value
                    for sm in rm.scope_metrics
                    for metric in sm.metrics
                    if metric.name == name
                    for _, value in _metric_points(metric)
                ]
                if found:
                    totals.setdefault(str(resource["service.instance.id"]), []).append(sum(found))
        return totals

    def wait_for(self, name: str, seconds: float = 15.0) -> dict[Key, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            points = self.latest()
            if any(key[0] == name for key in points):
                return points
            time.sleep(0.05)
        msg = f"no export of {name!r} arrived within {seconds}s"
        raise AssertionError(msg)


def _metric_points(metric: Any) -> list[tuple[Key, Any]]:
    kind = metric.WhichOneof("data")
    found = []
    for point in getattr(metric, kind).data_points:
        attributes = frozenset((a.key, _value(a.value)) for a in point.attributes)
        if kind == "histogram":
            value: Any = (
                point.count,
                point.sum,
                tuple(point.bucket_counts),
                tuple(point.explicit_bounds),
            )
        else:
            value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
        found.append(((metric.name, attributes), value))
    return found


class GrpcReceiver(Store):
    """An OTLP/gRPC metrics endpoint on 127.0.0.1 at a free port."""

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
                receiver.add(request, dict(context.invocation_metadata()))
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server.start()

    def close(self) -> None:
        self._server.stop(grace=None)


class HttpReceiver(Store):
    """An OTLP/HTTP protobuf metrics endpoint on 127.0.0.1 at a free port (POST /v1/metrics)."""

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.add(request, {k.lower(): v for k, v in self.headers.items()})
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
