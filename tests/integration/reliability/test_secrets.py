"""An API key that enters otel_tokens leaves it as its keyed fingerprint and nothing else.

A key gets in through `Usage.api_key`, `tracker.track(api_key=...)`, an `Authorization:
Bearer` header, `x-api-key` (Anthropic), `api-key` (Azure), `x-goog-api-key` and `?key=`
(Gemini), the request extension `{"otel_tokens": {"api_key": ...}}`, and a custom meter's
`record(api_key=...)`. Every key used here holds one random token, and that token must be in
0 bytes of what the package writes or hands out: the Prometheus text, the raw OTLP/HTTP
bodies (gzip too), the worker files, the ledger (the SQLite file with its -wal and -shm, every
row of every otel_tokens_* table in PostgreSQL), a ledger snapshot, the CLI's output, the
log, exception messages and tracebacks, and the repr and str of every object it makes. It is
looked for as it is, hex-encoded and base64-encoded (at each of the three alignments, so that
it is found inside a longer encoded string). Each check also asserts what must be there (the
key's fingerprint, the requests counted), so none of them passes by seeing nothing.

What is not looked at: the log records of the HTTP client libraries themselves (`httpx2`
logs each request's URL, Gemini's `?key=` included, at INFO; that is the caller's client).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import io
import logging
import secrets
import socket
import threading
import traceback
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client.parser import text_string_to_metric_families

from otel_tokens import (
    TokenTracker,
    Usage,
    UsageLedger,
    WorkerMetricsServer,
    cli,
    configure,
)
from otel_tokens._base.fingerprint import SECRET_ENV, KeyFingerprinter
from otel_tokens._http.meter import ResponseMeter
from otel_tokens._http.route import recognise
from otel_tokens._ledger.reading import MissingSecretError
from otel_tokens.httpx import AsyncMeteredTransport, MeteredTransport
from otel_tokens.testing import InMemoryMetrics
from tests.conftest import SECRET
from tests.helpers.fake_providers import FakeProviders

#: In every key of this module, and in nothing else: what must never come out.
TOKEN = secrets.token_hex(16)
FINGERPRINT = KeyFingerprinter(SECRET)
OTHER_SECRET = "another-secret-of-enough-bytes!!"
API_KEY_ID = "llm.api_key.id"
CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
GEMINI = "/v1beta/models/gemini-2.5-flash"
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}
#: Loggers of the HTTP client libraries, which log what the caller sends (not ours).
CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "h11", "h2", "hpack")
pytestmark = pytest.mark.filterwarnings(
    "ignore:The model 'claude-sonnet-4-5' is deprecated:DeprecationWarning"
)


def key(name: str) -> str:
    """A distinctive fake API key, one per way in, so that each one's fingerprint is found."""
    return f"sk-LEAKCHECK-{TOKEN}-{name}"


# The detector


def _forms(secret: bytes) -> dict[str, bytes]:
    forms = {"raw": secret, "hex": secret.hex().encode()}
    for skip in range(3):  # base64 of a longer string holds one of these three, whole
        part = secret[skip:]
        part = part[: len(part) // 3 * 3]
        forms[f"base64@{skip}"] = base64.b64encode(part)
        forms[f"base64url@{skip}"] = base64.urlsafe_b64encode(part)
    return forms


FORMS = _forms(TOKEN.encode())
CASELESS = ("raw", "hex")  # a key upper- or lower-cased, hex in either case


def _bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)


def found_forms(data: bytes | str) -> list[str]:
    """The forms of the key's token found in `data`."""
    raw = _bytes(data)
    lowered = raw.lower()
    return [
        name
        for name, form in FORMS.items()
        if (form.lower() in lowered if name in CASELESS else form in raw)
    ]


def assert_no_key(where: str, data: bytes | str) -> None:
    found = found_forms(data)
    if found:
        raw = _bytes(data)
        at = max(raw.lower().find(FORMS[found[0]].lower()), 0)
        excerpt = raw[max(0, at - 120) : at + 120]
        pytest.fail(f"the API key is in {where} ({', '.join(found)}): ...{excerpt!r}...")


def assert_shown_without_key(what: str, obj: object) -> None:
    assert_no_key(f"repr() of {what}", repr(obj))
    assert_no_key(f"str() of {what}", str(obj))


def assert_exception_without_key(exc: BaseException) -> None:
    what = type(exc).__name__
    assert_shown_without_key(what, exc)
    assert_no_key(f"the args of {what}", repr(exc.args))
    assert_no_key(f"the traceback of {what}", "".join(traceback.format_exception(exc)))


def assert_logs_without_key(caplog: pytest.LogCaptureFixture) -> int:
    """Every log record but the HTTP clients', formatted as a handler would (tracebacks too),
    and its raw arguments; how many were looked at."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    looked = 0
    for record in caplog.records:
        if record.name.split(".", 1)[0] in CLIENT_LOGGERS:
            continue
        where = f"a log record of {record.name!r} ({record.levelname})"
        assert_no_key(where, formatter.format(record))
        assert_no_key(where + ", its args", repr(record.args))
        looked += 1
    return looked


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="otel_tokens")


def test_the_detector_finds_the_key_in_every_form() -> None:
    secret = key("detector").encode()
    assert found_forms(b"x" + secret + b"y") == ["raw"]
    assert found_forms(secret.upper()) == ["raw"]
    assert found_forms(secret.hex()) == ["hex"]
    assert found_forms(secret.hex().upper()) == ["hex"]
    for prefix in (b"", b"a", b"ab"):  # every alignment inside a longer base64 string
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            assert found_forms(encode(prefix + secret + b"tail"))
    assert not found_forms(FINGERPRINT(key("detector")))
    assert not found_forms(f"sk-LEAKCHECK-{secrets.token_hex(16)}")


# Traffic: every way in, on one tracker


@dataclass
class Fed:
    """What `feed()` sent: the key of each counted request, by way in, and what it dropped."""

    counted: dict[str, str] = field(default_factory=dict)
    uncounted: dict[str, str] = field(default_factory=dict)  # dropped, or overridden
    meter_key: str = ""
    dropped: int = 0

    def fingerprints(self) -> Counter[str]:
        return Counter(FINGERPRINT(k) for k in self.counted.values())


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProviders]:
    with FakeProviders() as running:
        yield running


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def feed(tracker: TokenTracker, server: FakeProviders) -> Fed:
    """One counted request through each way a key enters, and three bad records with keys."""
    fed = Fed()

    def counted(name: str, suffix: str = "") -> str:
        fed.counted[name] = key(name) + suffix
        return fed.counted[name]

    def uncounted(name: str) -> str:
        fed.uncounted[name] = key(name)
        return fed.uncounted[name]

    tracker.record(
        Usage(
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=120,
            output_tokens=30,
            latency_s=0.4,
            api_key=counted("usage"),
        )
    )
    with tracker.track(
        provider="anthropic", model="claude-sonnet-4-5", api_key=counted("track")
    ) as req:
        req.input_tokens, req.output_tokens = 900, 40
    # Bad records that carry a key: dropped, counted and warned about.
    tracker.record(
        Usage(provider="openai", model="gpt-4o", input_tokens=-1, api_key=uncounted("bad_tokens"))
    )
    as_bytes = uncounted("bad_type").encode()  # how an ASGI server hands on a header
    tracker.record(Usage(provider="openai", model="gpt-4o", api_key=as_bytes))  # type: ignore[arg-type]
    with tracker.track(provider="openai", model="gpt-4o", api_key=uncounted("bad_track")) as req:
        req.output_tokens = -3
    fed.dropped = 3
    searches = tracker.custom_meter(
        "web_search.calls", unit="{call}", aggregation="count", dimensions=["engine"]
    )
    fed.meter_key = key("custom_meter")
    searches.record(dimensions={"engine": "bing"}, api_key=fed.meter_key)

    base = server.base_url
    stream_chat = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    transport = MeteredTransport(tracker, transport=httpx2.HTTPTransport())
    with httpx2.Client(transport=transport, timeout=10.0) as client:

        def post(path: str, body: dict[str, Any], headers: dict[str, str], **kw: Any) -> None:
            client.post(base + path, json=body, headers=headers, **kw).raise_for_status()

        def stream(path: str, body: dict[str, Any], headers: dict[str, str], **kw: Any) -> None:
            with client.stream("POST", base + path, json=body, headers=headers, **kw) as reply:
                assert reply.status_code == 200
                assert reply.read()

        post("/v1/chat/completions", CHAT, {"Authorization": f"Bearer {counted('bearer')}"})
        # A lower-case scheme with spaces after it: the credential is the key all the same.
        stream(
            "/v1/chat/completions",
            stream_chat,
            {"authorization": f"bearer   {counted('bearer_stream')}"},
        )
        post(
            "/openai/deployments/gpt-4o/chat/completions",
            CHAT,
            {"api-key": counted("azure_api_key")},
            params={"api-version": "2024-10-21"},
        )
        post(
            "/v1/chat/completions",
            CHAT,
            {"Authorization": f"Bearer {counted('bearer_gzip')}", "x-test-behavior": "gzip"},
        )
        post("/v1/messages", MESSAGES, {"x-api-key": counted("x_api_key"), **ANTHROPIC_VERSION})
        reply = client.post(
            base + "/v1/messages",
            json=MESSAGES,
            headers={
                "x-api-key": counted("x_api_key_429"),
                "x-test-behavior": "429",
                **ANTHROPIC_VERSION,
            },
        )
        assert reply.status_code == 429
        post(GEMINI + ":generateContent", GEMINI_BODY, {"x-goog-api-key": counted("goog")})
        # In the query, percent-encoded (the characters need it), as the SDKs send it.
        post(GEMINI + ":generateContent", GEMINI_BODY, {}, params={"key": counted("query", "+/=")})
        stream(
            GEMINI + ":streamGenerateContent",
            GEMINI_BODY,
            {},
            params={"alt": "sse", "key": counted("query_stream")},
        )
        # A gateway's own upstream key in the header, the caller's in the extension.
        post(
            "/v1/chat/completions",
            CHAT,
            {"Authorization": f"Bearer {uncounted('upstream')}"},
            extensions={"otel_tokens": {"api_key": counted("extension"), "user_tier": "pro"}},
        )
        with (
            contextlib.suppress(httpx2.HTTPError),  # the server cuts the stream halfway
            client.stream(
                "POST",
                base + "/v1/chat/completions",
                json=stream_chat,
                headers={
                    "Authorization": f"Bearer {counted('cut_stream')}",
                    "x-test-behavior": "drop",
                },
            ) as reply,
        ):
            for _ in reply.iter_bytes():
                pass
        with pytest.raises(httpx2.ConnectError):
            client.post(
                f"http://127.0.0.1:{_closed_port()}/v1/chat/completions",
                json=CHAT,
                headers={"Authorization": f"Bearer {counted('refused')}"},
            )
    asyncio.run(_async_request(tracker, base, counted("async")))
    return fed


async def _async_request(tracker: TokenTracker, base: str, api_key: str) -> None:
    transport = AsyncMeteredTransport(tracker, transport=httpx2.AsyncHTTPTransport())
    async with httpx2.AsyncClient(transport=transport, timeout=10.0) as client:
        reply = await client.post(
            base + "/v1/messages",
            json=MESSAGES,
            headers={"x-api-key": api_key, **ANTHROPIC_VERSION},
        )
        reply.raise_for_status()


def _samples(text: str, name: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def _check_prometheus_text(text: str, fed: Fed) -> None:
    assert_no_key("the Prometheus text", text)
    by_key: Counter[str] = Counter()
    for sample in _samples(text, "llm_requests_total"):
        by_key[sample.labels.get("llm_api_key_id", "")] += int(sample.value)
    assert by_key == fed.fingerprints()  # every request counted, each under its key's id
    dropped = sum(s.value for s in _samples(text, "otel_tokens_records_dropped_total"))
    assert dropped == fed.dropped
    (meter,) = _samples(text, "web_search_calls_total")
    assert meter.labels["engine"] == "bing" and meter.value == 1  # the key is the ledger's
    assert "llm_api_key_id" not in meter.labels


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())


# Where the metrics go


def test_the_prometheus_text_holds_fingerprints_only(
    server: FakeProviders, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = configure(exporters="prometheus", prometheus_port=0)
    try:
        tracker = telemetry.tracker(opt_in_attributes=[API_KEY_ID], api_key_secret=SECRET)
        fed = feed(tracker, server)
        assert telemetry.prometheus_url is not None
        _check_prometheus_text(_get(telemetry.prometheus_url), fed)
        assert_shown_without_key("Telemetry", telemetry)
        assert_shown_without_key("TokenTracker", tracker)
    finally:
        telemetry.shutdown()
    assert assert_logs_without_key(caplog) >= 1  # the drops were warned about


class RawOtlpReceiver:
    """An OTLP/HTTP endpoint on 127.0.0.1 keeping each POST's headers and body as sent."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        posts, lock = self.posts, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _otlp_requests_by_key(body: bytes) -> Counter[str]:
    by_key: Counter[str] = Counter()
    for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != "llm.requests":
                    continue
                for point in metric.sum.data_points:
                    labels = {a.key: a.value.string_value for a in point.attributes}
                    by_key[labels.get(API_KEY_ID, "")] += point.as_int or int(point.as_double)
    return by_key


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_the_otlp_bodies_hold_fingerprints_only(
    server: FakeProviders,
    compression: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    receiver = RawOtlpReceiver()
    try:
        telemetry = configure(
            exporters="otlp",
            otlp_endpoint=receiver.endpoint,
            export_interval_s=3600,
            otlp_timeout_s=5,
        )
        try:
            tracker = telemetry.tracker(opt_in_attributes=[API_KEY_ID], api_key_secret=SECRET)
            fed = feed(tracker, server)
            assert telemetry.force_flush(timeout_s=10)
        finally:
            telemetry.shutdown(timeout_s=10)
    finally:
        receiver.close()
    assert receiver.posts
    last: Counter[str] = Counter()
    with_requests = b""
    for headers, sent in receiver.posts:
        assert_no_key("the OTLP request headers", repr(headers))
        assert_no_key("an OTLP body as sent", sent)
        encoding = headers.get("content-encoding", "")
        assert encoding == ("gzip" if compression == "gzip" else "")
        body = gzip.decompress(sent) if encoding == "gzip" else sent
        body = zlib.decompress(body) if encoding == "deflate" else body
        assert_no_key("a decompressed OTLP body", body)
        if counted := _otlp_requests_by_key(body):
            last, with_requests = counted, body
    assert last == fed.fingerprints()  # cumulative: the last export holds every request
    assert FINGERPRINT(fed.counted["bearer"]).encode() in with_requests
    assert_logs_without_key(caplog)


def test_the_worker_files_and_their_sum_hold_fingerprints_only(
    server: FakeProviders, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "workers"
    telemetry = configure(exporters="prometheus", prometheus_multiproc_dir=directory)
    try:
        fed = feed(telemetry.tracker(opt_in_attributes=[API_KEY_ID], api_key_secret=SECRET), server)
    finally:
        assert telemetry.shutdown(timeout_s=10)  # writes the worker's file
    written = b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())
    assert_no_key("the worker files", written)
    assert FINGERPRINT(fed.counted["goog"]).encode() in written
    with WorkerMetricsServer(directory, port=0) as summed:
        _check_prometheus_text(_get(summed.url), fed)
    assert_logs_without_key(caplog)


# The ledger


def _sqlite_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


def _postgres_rows(url: str) -> dict[str, str]:
    """Each otel_tokens_* table of the test's schema: every row as text, and every text
    column of it as stored."""
    import psycopg
    from psycopg import sql

    found: dict[str, str] = {}
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name LIKE 'otel\\_tokens\\_%'"
            )
        ]
        for table in tables:
            columns = [
                r[0]
                for r in db.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = %s AND data_type IN "
                    "('text', 'character varying', 'character', 'json', 'jsonb', 'bytea')",
                    (table,),
                )
            ]
            rows = db.execute(sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(table)))
            text = "\n".join(r[0] for r in rows)
            if columns:
                query = sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
                )
                text += "\n" + "\n".join(repr(row) for row in db.execute(query))
            found[table] = text
    return found


def test_the_ledger_and_its_snapshot_hold_fingerprints_only(
    server: FakeProviders, target: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = UsageLedger(target, api_key_secret=SECRET, flush_interval_s=0.05)
    metrics = InMemoryMetrics(opt_in_attributes=[API_KEY_ID], api_key_secret=SECRET, ledger=ledger)
    try:
        fed = feed(metrics.tracker, server)
        direct, on_ledger_meter = key("ledger_record"), key("ledger_meter")
        ledger.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=7, api_key=direct))
        ledger.record(
            Usage(
                provider="openai", model="gpt-4o-mini", input_tokens=-7, api_key=key("ledger_bad")
            )
        )  # dropped and warned
        images = ledger.custom_meter("images", unit="{image}", dimensions=["size"])
        images.record(2, dimensions={"size": "1024"}, api_key=on_ledger_meter)
        images.record(-2, dimensions={"size": "1024"}, api_key=key("ledger_meter_bad"))
        metrics.tracker.flush()  # the tracker's queue, then the ledger's
        assert ledger.drops() == {"negative_tokens": 1, "invalid_event": 1}

        # First what the package wrote, as it lies: the key must not be there, its id must.
        expected = fed.fingerprints() + Counter({FINGERPRINT(direct): 1})
        some_id = FINGERPRINT(fed.counted["bearer_stream"]).encode()
        if target.startswith("postgresql"):
            tables = _postgres_rows(target)
            assert {
                "otel_tokens_requests",
                "otel_tokens_hourly",
                "otel_tokens_events",
                "otel_tokens_event_hourly",
                "otel_tokens_settings",
            } <= set(tables)
            for table, text in tables.items():
                assert_no_key(f"the PostgreSQL table {table}", text)
            assert some_id.decode() in tables["otel_tokens_requests"]
            assert FINGERPRINT(fed.meter_key) in tables["otel_tokens_events"]
        else:
            files = _sqlite_bytes(Path(target))
            assert {"usage.db", "usage.db-wal", "usage.db-shm"} <= set(files)
            for name, data in files.items():
                assert_no_key(f"{name}, open", data)
            assert some_id in b"".join(files.values())

        snapshot = tmp_path / "snapshot.jsonl"
        counts = ledger.export(snapshot)
        assert counts["requests"] == sum(expected.values()) and counts["events"] == 2
        assert_no_key("the snapshot file", snapshot.read_bytes())
        assert some_id in snapshot.read_bytes()
        exported = io.StringIO()
        ledger.export(exported)
        assert_no_key("a snapshot written to an open file", exported.getvalue())

        # What the ledger answers: every counted request and event, under its key's id.
        per_key = {row.group["key"]: row.requests for row in ledger.usage("all", by=["key"])}
        assert per_key == dict(expected)
        (one,) = ledger.usage("all", api_key=fed.counted["x_api_key"], by=["key"])
        assert one.requests == 1 and one.group == {"key": FINGERPRINT(fed.counted["x_api_key"])}
        (meter_row,) = ledger.meter_usage("web_search.calls", "all", api_key=fed.meter_key)
        assert meter_row.value == 1
        (image_row,) = ledger.meter_usage("images", "all", by=["key"], api_key=on_ledger_meter)
        assert image_row.value == 2 and image_row.group == {"key": FINGERPRINT(on_ledger_meter)}
        for shown in (one, meter_row, image_row, ledger, images):
            assert_shown_without_key(type(shown).__name__, shown)
    finally:
        metrics.shutdown()
        closed = ledger.close()
    assert closed
    if not target.startswith("postgresql"):
        files = _sqlite_bytes(Path(target))
        for name, data in files.items():
            assert_no_key(f"{name}, closed", data)
        assert some_id in b"".join(files.values())
    assert assert_logs_without_key(caplog) >= 2  # the drops of both were warned about


# Bad input, exceptions, the command line


def test_warnings_and_exceptions_about_input_with_a_key_leave_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    api_key = key("exceptions")
    raised: list[BaseException] = []
    bad = (
        {"input_tokens": -1},
        {"input_tokens": "12"},
        {"status": "exploded"},
        {"cache_read_tokens": 5},
        {"model": ""},
        {"latency_s": float("nan")},
        {"error_type": "timeout"},  # on a success
    )
    for fields in bad:
        usage = Usage(**{"provider": "openai", "model": "gpt-4o", "api_key": api_key, **fields})
        assert_shown_without_key("Usage", usage)
        with pytest.raises(ValueError) as caught:
            usage.validate()
        raised.append(caught.value)
    wrong_type = Usage(provider="openai", model="gpt-4o", api_key=api_key.encode())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api_key must be a str, got bytes") as caught:
        wrong_type.validate()
    raised.append(caught.value)

    path = tmp_path / "usage.db"
    with UsageLedger(path, api_key_secret=SECRET, flush_interval_s=0.05) as first:
        first.custom_meter("web_search.calls", unit="{call}", aggregation="count")
        first.record(Usage(provider="openai", model="gpt-4o", input_tokens=3, api_key=api_key))
    # Without its secret, a ledger whose key ids were made with one cannot look a key up.
    reopened = UsageLedger(path, flush_interval_s=0.05)
    try:
        for look_up in (
            lambda: reopened.usage("all", api_key=api_key),
            lambda: reopened.reset(api_key=api_key),
            lambda: reopened.meter_usage("web_search.calls", "all", api_key=api_key),
        ):
            with pytest.raises(MissingSecretError) as missing:
                look_up()
            raised.append(missing.value)
        with pytest.raises(ValueError, match="another API key fingerprint secret") as other:
            InMemoryMetrics(ledger=reopened, api_key_secret=OTHER_SECRET)
        raised.append(other.value)
        metrics = InMemoryMetrics(ledger=reopened)  # warned: stored without the key
        metrics.tracker.record(
            Usage(provider="openai", model="gpt-4o", input_tokens=4, api_key=key("no_secret"))
        )
        metrics.tracker.record(
            Usage(provider="openai", model="gpt-4o", input_tokens=-4, api_key=key("no_secret_bad"))
        )
        metrics.tracker.flush()
        assert metrics.value("llm.requests") == 1
        assert metrics.value("otel_tokens.records.dropped", reason="negative_tokens") == 1
        assert sorted(reopened.key_ids()) == sorted(["", FINGERPRINT(api_key)])
        metrics.shutdown()
    finally:
        reopened.close()
    with pytest.raises(ValueError, match=r"llm\.api_key\.id needs a secret") as no_secret:
        InMemoryMetrics(opt_in_attributes=[API_KEY_ID])
    raised.append(no_secret.value)

    for exc in raised:
        assert_exception_without_key(exc)
    for name, data in _sqlite_bytes(path).items():
        assert_no_key(name, data)
    messages = " ".join(r.getMessage() for r in caplog.records if r.name == "otel_tokens")
    assert "stored without their key" in messages and "stored without a key" in messages
    assert "dropped a usage record" in messages
    assert assert_logs_without_key(caplog) >= 3


def test_the_command_line_takes_a_key_and_shows_only_its_id(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, api_key = tmp_path / "usage.db", key("cli")
    with UsageLedger(path, api_key_secret=SECRET, flush_interval_s=0.05) as ledger:
        ledger.record(Usage(provider="openai", model="gpt-4o", input_tokens=5, api_key=api_key))
    where = ["--ledger", str(path)]
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert cli.main(["usage", *where, "--period", "all", "--key", api_key]) == 2
    said = capsys.readouterr()
    assert "error" in said.err and SECRET_ENV in said.err
    assert_no_key("the CLI's error", said.out + said.err)

    monkeypatch.setenv(SECRET_ENV, SECRET)
    for shape in ("table", "json", "csv"):
        command = ["usage", *where, "--period", "all", "--by", "key", "--key", api_key]
        assert cli.main([*command, "--format", shape]) == 0
        said = capsys.readouterr()
        assert_no_key(f"the CLI's usage as {shape}", said.out + said.err)
        assert FINGERPRINT(api_key) in said.out
    assert cli.main(["export", *where, "-o", "-"]) == 0
    said = capsys.readouterr()
    assert_no_key("the CLI's export", said.out + said.err)
    assert FINGERPRINT(api_key) in said.out
    assert cli.main(["reset", *where, "--key", api_key]) == 0
    said = capsys.readouterr()
    assert "deleted 1 requests" in said.out
    assert_no_key("the CLI's reset", said.out + said.err)
    assert_logs_without_key(caplog)


# repr() and str() of everything made with a key


def test_nothing_made_with_a_key_shows_it(
    server: FakeProviders, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api_key = key("repr")
    fingerprinter = KeyFingerprinter(SECRET)
    assert_shown_without_key("KeyFingerprinter", fingerprinter)
    assert SECRET not in repr(fingerprinter) + str(fingerprinter)
    assert_shown_without_key("Usage", Usage(provider="openai", model="gpt-4o", api_key=api_key))

    requests = {
        "authorization": ("/v1/chat/completions", {"authorization": f"Bearer {api_key}"}, ""),
        "x-api-key": ("/v1/messages", {"x-api-key": api_key, **ANTHROPIC_VERSION}, ""),
        "api-key": ("/openai/deployments/gpt-4o/chat/completions", {"api-key": api_key}, ""),
        "x-goog-api-key": (GEMINI + ":generateContent", {"x-goog-api-key": api_key}, ""),
        "?key=": (GEMINI + ":streamGenerateContent", {}, f"alt=sse&key={quote(api_key)}"),
    }
    for way, (path, headers, query) in requests.items():
        route = recognise(
            "POST",
            "127.0.0.1",
            path,
            query=query,
            headers=headers,
            body=b'{"model": "gpt-4.1", "stream": true}',
        )
        assert route is not None and route.api_key == api_key  # it did take the key
        assert_shown_without_key(f"the Route of a key in {way}", route)

    ledger = UsageLedger(tmp_path / "usage.db", api_key_secret=SECRET, flush_interval_s=0.05)
    telemetry = configure(exporters="none")
    try:
        tracker = telemetry.tracker(
            opt_in_attributes=[API_KEY_ID], api_key_secret=SECRET, ledger=ledger
        )
        with tracker.track(provider="openai", model="gpt-4o", api_key=api_key) as tracked:
            tracked.input_tokens = 10
            assert_shown_without_key("a TrackedRequest, open", tracked)
        assert_shown_without_key("a TrackedRequest, done", tracked)
        meter = tracker.custom_meter("tool.calls", unit="{call}", aggregation="count")
        meter.record(api_key=api_key)
        assert_shown_without_key("CustomMeter", meter)
        ledger_meter = ledger.custom_meter("audio.seconds", unit="s")
        ledger_meter.record(3.5, api_key=api_key)
        assert_shown_without_key("a ledger's CustomMeter", ledger_meter)

        for transport_key in ("header", "extension"):
            transport = MeteredTransport(tracker, transport=httpx2.HTTPTransport())
            with httpx2.Client(transport=transport, timeout=10.0) as client:
                if transport_key == "header":
                    request = client.build_request(
                        "POST",
                        server.base_url + "/v1/messages",
                        json=MESSAGES,
                        headers={"x-api-key": api_key, **ANTHROPIC_VERSION},
                    )
                else:
                    request = client.build_request(
                        "POST",
                        server.base_url + "/v1/messages",
                        json=MESSAGES,
                        headers=ANTHROPIC_VERSION,
                        extensions={"otel_tokens": {"api_key": api_key}},
                    )
                response = transport.handle_request(request)
                try:
                    stream = response.stream
                    response_meter = stream._meter
                    assert isinstance(response_meter, ResponseMeter)
                    assert response_meter._route.api_key == (
                        api_key if transport_key == "header" else None
                    )  # what the meter was made from held the key
                    assert response_meter._fields["api_key_id"] == FINGERPRINT(api_key)
                    assert_no_key("what a ResponseMeter hands on", repr(response_meter._fields))
                    assert_shown_without_key("ResponseMeter", response_meter)
                    assert_shown_without_key("the metered byte stream", stream)
                    assert_shown_without_key("MeteredTransport", transport)
                    response.read()
                finally:
                    response.close()
        assert_shown_without_key("AsyncMeteredTransport", AsyncMeteredTransport(tracker))
        tracker.flush()
        (row,) = ledger.usage("all", by=["key"])
        assert row.requests == 3 and row.group == {"key": FINGERPRINT(api_key)}
        for what, obj in (
            ("UsageTotals", row),
            ("UsageLedger", ledger),
            ("TokenTracker", tracker),
            ("Telemetry", telemetry),
        ):
            assert_shown_without_key(what, obj)
    finally:
        telemetry.shutdown()
        ledger.close()
    assert_logs_without_key(caplog)


# Leaks found


@pytest.mark.parametrize("where", ["ledger", "tracker"])
def test_a_custom_meter_key_of_the_wrong_type_is_warned_about_without_it(
    where: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # bytes are what an ASGI gateway reads headers as: an easy key to pass as it is.
    api_key = key("meter_bytes").encode()
    with UsageLedger(tmp_path / "usage.db", api_key_secret=SECRET) as ledger:
        if where == "ledger":
            meter = ledger.custom_meter("web_search.calls", unit="{call}", aggregation="count")
            meter.record(api_key=api_key)  # type: ignore[arg-type]
            ledger.flush()
            assert ledger.drops() == {"invalid_event": 1}
        else:
            metrics = InMemoryMetrics(api_key_secret=SECRET, ledger=ledger)
            meter = metrics.tracker.custom_meter(
                "web_search.calls", unit="{call}", aggregation="count"
            )
            meter.record(api_key=api_key)  # type: ignore[arg-type]
            assert metrics.value("otel_tokens.records.dropped", reason="invalid_event") == 1
            metrics.shutdown()
    warned = [r for r in caplog.records if r.name == "otel_tokens" and "api_key" in r.getMessage()]
    assert warned  # the drop was warned about, naming the field
    assert_logs_without_key(caplog)
