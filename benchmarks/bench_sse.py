"""What metering adds to reading an SSE stream: MeteredTransport vs the plain transport.

A server in another process (so it does not share our GIL) streams an OpenAI-style chat
completion of N chunks, one write per event, with the usage chunk at the end. The same
stream is read through a plain httpx2 transport and through MeteredTransport wrapping one,
alternately, many times. Each round reads the stream once each way, back to back, and
gives one ratio, so that what else the machine does drifts out of the comparison; the
median of those ratios is the result. Run from the repository root:

    python benchmarks/bench_sse.py [--events 1000] [--rounds 100] [--aa]

The last line is `metered/plain = X` (median of the per-round ratios); the target is < 1.05.
With `--aa` both readers use the plain transport, which shows the noise of the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time

_SERVER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    events = [bytes.fromhex(line) for line in sys.stdin.read().split()]
    framed = [b"%x\\r\\n%s\\r\\n" % (len(e), e) for e in events] + [b"0\\r\\n\\r\\n"]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else small writes wait for delayed ACKs (40 ms)
        def log_message(self, *args):
            pass
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for piece in framed:
                self.wfile.write(piece)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def openai_events(count: int) -> list[bytes]:
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1763891302,
            "model": "gpt-4.1-2025-04-14", "system_fingerprint": "fp_51e1070cf2"}  # fmt: skip
    events = []
    for i in range(count):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f" word{i}"}
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                 "usage": None}  # fmt: skip
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    usage = {"prompt_tokens": 1362, "completion_tokens": count,
             "prompt_tokens_details": {"cached_tokens": 1152}}  # fmt: skip
    last = {**head, "choices": [], "usage": usage}
    events.append(b"data: " + json.dumps(last, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument(
        "--aa", action="store_true", help="read through the plain transport both ways: the noise"
    )
    args = parser.parse_args()

    import httpx2
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_tokens import TokenTracker
    from otel_tokens.httpx import MeteredTransport

    events = openai_events(args.events)
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(" ".join(e.hex() for e in events))
    server.stdin.close()
    url = f"http://127.0.0.1:{server.stdout.readline().strip()}/v1/chat/completions"
    reader = InMemoryMetricReader()
    tracker = TokenTracker(MeterProvider(metric_readers=[reader]).get_meter("bench"))
    body = {"model": "gpt-4.1", "stream": True, "stream_options": {"include_usage": True}}
    clients = {
        "plain": httpx2.Client(transport=httpx2.HTTPTransport()),
        "metered": httpx2.Client(
            transport=httpx2.HTTPTransport() if args.aa else MeteredTransport(tracker)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for round_ in range(args.rounds + 3):
            for name, client in clients.items() if round_ % 2 else reversed(clients.items()):
                started = time.perf_counter()
                with client.stream("POST", url, json=body) as response:
                    size = sum(len(chunk) for chunk in response.iter_bytes())
                elapsed = time.perf_counter() - started
                if round_ >= 3:  # the first rounds warm up connections and caches
                    times[name].append(elapsed)
        tracker.flush()
    finally:
        server.kill()
        for client in clients.values():
            client.close()
    plain, metered = (statistics.median(times[n]) for n in ("plain", "metered"))
    ratios = sorted(m / p for p, m in zip(times["plain"], times["metered"], strict=True))
    per_event_us = (metered - plain) / len(events) * 1e6
    print(f"stream: {len(events)} events, {size:,} bytes, {args.rounds} rounds each")
    print(f"plain httpx2 transport: {plain * 1e3:.2f} ms per stream (median)")
    print(f"MeteredTransport:       {metered * 1e3:.2f} ms per stream (median)")
    print(f"added per event: {per_event_us:.2f} us")
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"per-round ratio quartiles: {quartiles[0]:.3f} .. {quartiles[2]:.3f}")
    print(f"metered/plain = {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
