"""An OTLP/HTTP collector on 127.0.0.1 that fails on demand, for the collector fault tests.

It keeps one port for its whole life, so an exporter pointed at it sees the same endpoint
go down, stall, refuse and come back: `ok` stores exports like a collector's receiver,
`refuse` answers 503, `stall` reads the request and answers nothing until the mode
changes, and `down` stops listening (connections are refused) until the mode changes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from tests.helpers.otlp_receiver import Store

MODES = ("ok", "refuse", "stall", "down")


class FaultyCollector(Store):
    """An OTLP/HTTP metrics endpoint whose behaviour `mode` sets, at any time."""

    def __init__(self, mode: str = "ok") -> None:
        super().__init__()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._mode = "down"
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._open: set[socket.socket] = set()
        self.answered = {"ok": 0, "refuse": 0, "stall": 0}
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self._changed:
            self._mode = mode
            self._changed.notify_all()
        if mode == "down":
            self._stop()
        elif self._server is None:
            self._start()

    def _start(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with collector._changed:
                    collector._open.add(self.connection)

            def finish(self) -> None:
                with collector._changed:
                    collector._open.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                mode = collector.mode
                if mode == "stall":
                    collector.answered["stall"] += 1
                    with collector._changed:  # answer nothing until told otherwise
                        collector._changed.wait_for(lambda: collector.mode != "stall", 60)
                    self.close_connection = True
                    return
                if mode == "refuse":
                    collector.answered["refuse"] += 1
                    self._reply(503, b"")
                    return
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                collector.add(request, {k.lower(): v for k, v in self.headers.items()})
                collector.answered["ok"] += 1
                self._reply(
                    200, metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                )

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        for _ in range(100):  # the port was just released by a server of ours: bind again
            try:
                server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise OSError(f"cannot listen on 127.0.0.1:{self.port} again")
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._changed:  # kept-alive connections too: down means down
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def total(self, name: str) -> float:
        """The newest cumulative total of metric `name`, summed over its series."""
        found = [value for (metric, _), value in self.latest().items() if metric == name]
        return float(sum(v[0] if isinstance(v, tuple) else v for v in found))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.mode = "down"
