"""UsageLedger on SQLite and PostgreSQL: how fast it takes records, how fast it answers.

For each backend (`--backend sqlite|postgres|both`; PostgreSQL is skipped with a message
when no server answers at `--postgres`) this measures:

1. Sustained ingest: `--ingest` realistic requests (a few providers, models and scenarios,
   one of 100 API key ids, a unique request id each) are built first, then timed from the
   first `UsageLedger.record()` to `ledger.flush()` returning, when all are committed. The
   ledger runs with its default queue and batch and `when_full="block"`, so the caller
   waits for room rather than dropping: the rate is the writer's sustained throughput.
   Once into an empty ledger with live timestamps (at=now: the hours being written are
   few), once replaying requests spread over the last 30 days (every batch touches many
   hours), and once into the seeded ledger of item 2 (live, its indexes large). The
   stored count is checked against what was sent.
2. Period queries over `--requests` stored requests (10 million by default): the median
   and 95th percentile of `ledger.usage("30d", key_id=K)` and of `ledger.usage("30d",
   key_id=K, by=["model", "day"])`, K going round the 100 keys, the two queries taking
   turns; the first of each is reported apart (cold caches). Seeding that many through
   record() would take long, so the ledger is opened once (its migrations make the
   tables), a pool of requests is recorded through a scratch ledger (so every column is
   exactly what the ledger writes, cost included), and the requests table is filled
   from that pool with set-based SQL, spread evenly over the last 30 days, each row with
   a unique 32-hex request id and one of the 100 keys. The hourly table is then built
   from the requests with the ledger's own `hourly_upsert` SQL, the statistics refreshed
   (ANALYZE; VACUUM ANALYZE on PostgreSQL, as autovacuum would), and the two tables are
   checked to agree: in total, and per model for one key through `ledger.usage()`
   against a sum over its requests. PostgreSQL runs in a fresh schema per ledger, dropped
   at the end. `--keep PATH` (SQLite) and `--keep-schema NAME` (PostgreSQL) keep the seeded
   ledger and reuse it while it holds `--requests` requests seeded less than a day ago.

Targets (from the issue): ingest >= 50,000 records/s into SQLite; queries < 50 ms. Run
from the repository root (a 10M seed takes minutes per backend):

    python benchmarks/bench_ledger.py [--backend both] [--requests 10_000_000]
        [--ingest 200_000] [--queries 200] [--batch-size N] [--keep PATH]
        [--keep-schema NAME] [--postgres URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_tokens import PriceTable, Usage, UsageLedger
from otel_tokens._ledger.schema import REQUEST_COLUMNS, US_PER_HOUR, hourly_upsert
from tests.helpers.postgres import postgres_problem

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
INGEST_TARGET = 50_000  # records/s into SQLite
QUERY_TARGET_MS = 50.0
DAYS = 30
KEYS = 100
POOL = 4096  # distinct request templates the seed repeats
SEED_CHUNK = 1_000_000  # requests per seeding transaction
US_PER_S = 1_000_000
QUERIES: list[tuple[str, list[str]]] = [
    ('usage("30d", key_id=K)', []),
    ('usage("30d", key_id=K, by=["model", "day"])', ["model", "day"]),
]

#: (provider, model, scenario, weight): what a gateway's traffic is made of. The last
#: model has no price, so that unpriced tokens are summed too.
MIX = [
    ("openai", "gpt-4.1-mini", "chat", 30),
    ("openai", "gpt-4.1", "chat", 10),
    ("openai", "gpt-5-mini", "agent", 10),
    ("anthropic", "claude-sonnet-4-5", "claude_code", 20),
    ("anthropic", "claude-haiku-4-5", "claude_code", 10),
    ("gcp.gemini", "gemini-2.5-flash", "chat", 10),
    ("gcp.gemini", "gemini-2.5-flash", "batch", 5),
    ("vllm", "Qwen/Qwen3-32B", "batch", 5),
]
#: The request columns a seeded row takes from its template (the others are its own).
_OWN = ("uid", "at_us", "key_id")
TEMPLATE_COLUMNS = [name for name in REQUEST_COLUMNS if name not in _OWN]
Row = tuple[Any, ...]


def key_ids(namespace: str) -> list[str]:
    """100 API key fingerprints (16 hex digits), the same for the same namespace."""
    return [hashlib.sha256(f"{namespace}-{i}".encode()).hexdigest()[:16] for i in range(KEYS)]


def make_usages(count: int, keys: Sequence[str], seed: int) -> list[Usage]:
    """`count` requests of the traffic mix, each with a key and a unique request id."""
    rng = random.Random(seed)
    weights = [w for *_, w in MIX]
    usages = []
    for provider, model, scenario, _ in rng.choices(MIX, weights, k=count):
        status = rng.choices(["success", "error", "canceled"], [95, 4, 1])[0]
        input_tokens = int(rng.lognormvariate(7.5, 1.2)) + 1  # median ~1,800
        cached = rng.randint(0, input_tokens) if rng.random() < 0.6 else 0
        output_tokens = 0 if status == "error" else int(rng.lognormvariate(5.5, 1.0))
        usages.append(
            Usage(
                provider=provider,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cached,
                status=status,
                error_type=rng.choice(["rate_limited", "timeout"]) if status == "error" else None,
                latency_s=round(rng.uniform(0.2, 20.0), 3),
                streamed=rng.random() < 0.7,
                scenario=scenario,
                api_key_id=rng.choice(keys),
                request_id=uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            )
        )
    return usages


def percentile(values: Sequence[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


# Ingest


@dataclass
class Ingest:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def ingest(target: str, usages: list[Usage], *, spread: bool, batch_size: int | None) -> Ingest:
    """Time record() of every usage until flush() returns; check all are stored.

    `spread`: timestamps spread evenly over the last 30 days, oldest first (a replay);
    else each is stamped when recorded.
    """
    now = datetime.now(timezone.utc)
    step = timedelta(days=DAYS) / len(usages)
    ats = [now - timedelta(days=DAYS) + i * step if spread else None for i in range(len(usages))]
    if batch_size is None:
        ledger = UsageLedger(target, when_full="block")
    else:
        ledger = UsageLedger(target, when_full="block", batch_size=batch_size)
    try:
        keys = sorted({u.api_key_id or "" for u in usages})
        before = _requests_of(ledger, keys)
        started = time.perf_counter()
        for usage, at in zip(usages, ats, strict=True):
            ledger.record(usage, at=at)
        ledger.flush()
        elapsed = time.perf_counter() - started
        stored = _requests_of(ledger, keys) - before
        if stored != len(usages) or ledger.drops():
            sys.exit(f"ingest into {target}: stored {stored} of {len(usages)}: {ledger.drops()}")
    finally:
        ledger.close()
    return Ingest(len(usages), elapsed)


def _requests_of(ledger: UsageLedger, keys: Sequence[str]) -> int:
    return sum(t.requests for key in keys for t in ledger.usage("all", key_id=key))


# Seeding


def templates(scratch: Path) -> list[Row]:
    """POOL request rows as the ledger writes them (TEMPLATE_COLUMNS order), made by
    recording usages through a scratch ledger and reading its table back."""
    today = datetime.now(timezone.utc).date()
    usages = make_usages(POOL, ["0" * 16], seed=1)
    prices = PriceTable.bundled()
    for usage in usages:  # a seeded row keeps its template's cost whatever its day
        if prices.cost_pico(usage, on=today) != prices.cost_pico(
            usage, on=today - timedelta(days=DAYS + 1)
        ):
            sys.exit(f"{usage.model} changed price in the last {DAYS} days: pick another model")
    with UsageLedger(scratch) as ledger:
        for usage in usages:
            ledger.record(usage)
    with closing(sqlite3.connect(scratch)) as db:
        sql = f"SELECT {', '.join(TEMPLATE_COLUMNS)} FROM otel_tokens_requests ORDER BY id"
        rows = db.execute(sql).fetchall()
    assert len(rows) == POOL
    return rows


def _hex8(expr: str, dialect: str) -> str:
    return f"printf('%08x', {expr})" if dialect == "sqlite" else f"lpad(to_hex({expr}), 8, '0')"


def _seed_select(dialect: str, numbers: str) -> str:
    """The SELECT of seeded request rows from request numbers `i` of `numbers`: a unique
    random-looking uid (the first 8 hex digits are a bijection of i), a time growing with
    i (start and step are the first two parameters), a key and a template picked by
    multiplicative hashes of i."""

    modulo = "%" if dialect == "sqlite" else "%%"  # psycopg's placeholders begin with %

    def mix(factor: int) -> str:
        return f"((i * {factor}) {modulo} 4294967296)"

    parts = [_hex8(mix(f), dialect) for f in (2654435761, 1597334677, 2246822519, 805459861)]
    uid = f"printf('%s%s%s%s', {', '.join(parts)})" if dialect == "sqlite" else " || ".join(parts)
    mark = "?" if dialect == "sqlite" else "%s"
    rest = ", ".join(f"t.{name}" for name in TEMPLATE_COLUMNS)
    return f"""SELECT {uid}, {mark} + i * {mark}, k.key_id, {rest}
FROM {numbers}
JOIN bench_templates AS t ON t.t = ({mix(3266489917)} >> 8) {modulo} {POOL}
JOIN bench_keys AS k ON k.k = ({mix(2246822519)} >> 12) {modulo} {KEYS}"""


def _insert_columns() -> str:
    return ", ".join([*_OWN, *TEMPLATE_COLUMNS])


@dataclass
class Seed:
    requests: int
    hourly: int
    seconds: dict[str, float]  # by step
    size_bytes: int
    reused: str = ""


def _settle() -> float:
    """Write the seed's dirty pages to disk before anything is timed (the seed writes
    gigabytes without syncing, which the kernel would otherwise write back during the
    ingest that follows); how long that took."""
    started = time.perf_counter()
    os.sync()
    return time.perf_counter() - started


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    for low in range(0, total, SEED_CHUNK):
        yield low, min(total, low + SEED_CHUNK)


def seed_sqlite(path: Path, total: int, pool: list[Row], keys: Sequence[str]) -> Seed:
    UsageLedger(path).close()  # the ledger makes its tables
    end_us = int(time.time() * US_PER_S)
    step = DAYS * 86_400 * US_PER_S // total
    seconds: dict[str, float] = {}
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -2000000",
                       "temp_store = MEMORY"):  # fmt: skip
            db.execute(f"PRAGMA {pragma}")
        db.execute(f"CREATE TEMP TABLE bench_templates (t INTEGER PRIMARY KEY, "
                   f"{', '.join(TEMPLATE_COLUMNS)})")  # fmt: skip
        db.executemany(
            f"INSERT INTO bench_templates VALUES ({', '.join('?' * (1 + len(pool[0])))})",
            [(i, *row) for i, row in enumerate(pool)],
        )
        db.execute("CREATE TEMP TABLE bench_keys (k INTEGER PRIMARY KEY, key_id TEXT)")
        db.executemany("INSERT INTO bench_keys VALUES (?, ?)", enumerate(keys))
        numbers = "n"
        insert = (
            f"INSERT INTO otel_tokens_requests ({_insert_columns()})\n"
            "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)\n"
            + _seed_select("sqlite", numbers)
        )
        indexes = [sql for (sql,) in db.execute(_SQLITE_INDEXES)]
        started = time.perf_counter()
        for (name,) in db.execute(_SQLITE_INDEX_NAMES).fetchall():
            db.execute(f"DROP INDEX {name}")
        for low, high in _chunks(total):
            db.execute("BEGIN")
            db.execute(insert, (low, high, end_us - DAYS * 86_400 * US_PER_S, step))
            db.execute("COMMIT")
            _progress(f"  sqlite seed: {high:,} / {total:,} requests")
        seconds["requests"] = time.perf_counter() - started
        started = time.perf_counter()
        for sql in indexes:  # the ledger's own definitions, built once over all rows
            db.execute(sql)
        seconds["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        db.execute("BEGIN")
        db.execute(hourly_upsert("otel_tokens_requests WHERE id > 0", greatest="MAX"))
        db.execute("COMMIT")
        seconds["hourly"] = time.perf_counter() - started
        started = time.perf_counter()
        db.execute("ANALYZE")
        db.execute("PRAGMA journal_mode = WAL")
        seconds["analyze"] = time.perf_counter() - started
        hourly = db.execute("SELECT COUNT(*) FROM otel_tokens_hourly").fetchone()[0]
    seconds["sync"] = _settle()
    return Seed(total, hourly, seconds, path.stat().st_size)


#: The request table's indexes, as the ledger made them: the seed drops them and builds
#: them again once all rows are in, which is faster than keeping them up row by row.
_SQLITE_INDEXES = (
    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'otel_tokens_requests' "
    "AND sql IS NOT NULL"
)
_SQLITE_INDEX_NAMES = _SQLITE_INDEXES.replace("SELECT sql", "SELECT name", 1)
_POSTGRES_INDEXES = (
    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'otel_tokens_requests' "
    "AND schemaname = current_schema() AND indexname <> 'otel_tokens_requests_pkey'"
)


def reuse_reason(fetch: Callable[[str], list[Row]], total: int, where: str) -> str:
    """Why the seeded ledger `fetch` reads can be reused ("" if it cannot): it holds
    `total` requests, the last seeded less than a day ago."""
    try:
        count, last = fetch("SELECT COUNT(*), MAX(at_us) FROM otel_tokens_requests")[0]
    except Exception:  # no ledger there (yet)
        return ""
    age_h = (time.time() * US_PER_S - (last or 0)) / US_PER_HOUR
    if count != total or age_h > 24:
        return ""
    return f"reusing {where}, seeded {age_h:.1f} h ago"


def seed_postgres(url: str, total: int, pool: list[Row], keys: Sequence[str]) -> Seed:
    import psycopg

    UsageLedger(url).close()
    end_us = int(time.time() * US_PER_S)
    step = DAYS * 86_400 * US_PER_S // total
    seconds: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SET work_mem = '1GB'")
        db.execute("SET maintenance_work_mem = '1GB'")
        db.execute("SET synchronous_commit = off")
        columns = ", ".join(TEMPLATE_COLUMNS)
        db.execute(f"CREATE TEMP TABLE bench_templates AS SELECT 0 AS t, {columns} "
                   "FROM otel_tokens_requests WITH NO DATA")  # fmt: skip
        with db.cursor() as cursor, cursor.copy("COPY bench_templates FROM STDIN") as copy:
            for i, template in enumerate(pool):
                copy.write_row((i, *template))
        db.execute("CREATE TEMP TABLE bench_keys (k INTEGER PRIMARY KEY, key_id TEXT)")
        with db.cursor() as cursor:
            cursor.executemany("INSERT INTO bench_keys VALUES (%s, %s)", list(enumerate(keys)))
        db.execute("ANALYZE bench_templates")
        db.execute("ANALYZE bench_keys")
        insert = (
            f"INSERT INTO otel_tokens_requests ({_insert_columns()})\n"
            + _seed_select("postgres", "generate_series(%s::bigint, %s::bigint - 1) AS g(i)")
            + "\nORDER BY i"
        )
        indexes = db.execute(_POSTGRES_INDEXES).fetchall()
        started = time.perf_counter()
        for name, _ in indexes:
            db.execute(f"DROP INDEX {name}")
        for low, high in _chunks(total):
            db.execute(insert, (end_us - DAYS * 86_400 * US_PER_S, step, low, high))
            _progress(f"  postgres seed: {high:,} / {total:,} requests")
        seconds["requests"] = time.perf_counter() - started
        started = time.perf_counter()
        for _, definition in indexes:  # the ledger's own definitions, built once
            db.execute(definition)
        seconds["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        db.execute(hourly_upsert("otel_tokens_requests", greatest="GREATEST"))
        seconds["hourly"] = time.perf_counter() - started
        started = time.perf_counter()
        db.execute("VACUUM ANALYZE otel_tokens_requests")
        db.execute("VACUUM ANALYZE otel_tokens_hourly")
        seconds["vacuum analyze"] = time.perf_counter() - started
        db.execute("CHECKPOINT")
        seconds["sync"] = _settle()
        row = db.execute(
            "SELECT (SELECT COUNT(*) FROM otel_tokens_hourly), "
            "pg_total_relation_size('otel_tokens_requests') "
            "+ pg_total_relation_size('otel_tokens_hourly')"
        ).fetchone()
        assert row is not None
    return Seed(total, int(row[0]), seconds, int(row[1]))


_TOTALS = {
    "requests": ("COUNT(*)", "SUM(requests)"),
    "input": ("SUM(input_tokens)", "SUM(input_tokens)"),
    "output": ("SUM(output_tokens)", "SUM(output_tokens)"),
    "cache_read": ("SUM(cache_read_tokens)", "SUM(cache_read_tokens)"),
    "cost": ("COALESCE(SUM(cost_pico), 0)", "SUM(cost_pico)"),
    "unpriced": (
        "SUM(CASE WHEN cost_pico IS NULL THEN input_tokens + output_tokens ELSE 0 END)",
        "SUM(unpriced_tokens)",
    ),
    "last": ("MAX(at_us)", "MAX(last_at_us)"),
}


def check_seed(fetch: Callable[[str], list[Row]], ledger: UsageLedger, keys: Sequence[str]) -> None:
    """The hourly table agrees with the requests: in total, and per model for one key
    over whole days through `ledger.usage()` against a sum over the key's requests."""
    requests_side = ", ".join(a for a, _ in _TOTALS.values())
    hourly_side = ", ".join(b for _, b in _TOTALS.values())
    want = [int(v) for v in fetch(f"SELECT {requests_side} FROM otel_tokens_requests")[0]]
    got = [int(v) for v in fetch(f"SELECT {hourly_side} FROM otel_tokens_hourly")[0]]
    if got != want:
        named = [dict(zip(_TOTALS, sums, strict=True)) for sums in (got, want)]
        sys.exit(f"seeded hourly sums {named[0]} != the requests' {named[1]}")
    today = datetime.now(timezone.utc).date()
    first, last = today - timedelta(days=20), today - timedelta(days=10)
    start, end = (_midnight_us(d) for d in (first, last + timedelta(days=1)))
    key = keys[0]
    rows = fetch(
        "SELECT model, COUNT(*), SUM(input_tokens), COALESCE(SUM(cost_pico), 0) "
        f"FROM otel_tokens_requests WHERE key_id = '{key}' AND at_us >= {start} "
        f"AND at_us < {end} GROUP BY model"
    )
    direct = {str(m): (int(n), int(i), int(c)) for m, n, i, c in rows}
    through = {
        t.group["model"]: (t.requests, t.input_tokens, t.cost_pico)
        for t in ledger.usage(f"{first}..{last}", key_id=key, by=["model"])
    }
    if through != direct:
        sys.exit(f"ledger.usage() {through} != the requests' own sums {direct}")


def _midnight_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()) * US_PER_S


# Queries


@dataclass
class Latency:
    first_ms: float
    median_ms: float
    p95_ms: float
    count: int


def time_queries(ledger: UsageLedger, keys: Sequence[str], count: int) -> list[Latency]:
    """Each query of QUERIES `count` times (plus a first, reported apart), taking turns,
    round the keys."""
    times: list[list[float]] = [[] for _ in QUERIES]
    for i in range(count + 1):
        for j, (_, by) in enumerate(QUERIES):
            key = keys[(i + j * 37) % len(keys)]
            started = time.perf_counter()
            found = ledger.usage("30d", key_id=key, by=by)
            times[j].append((time.perf_counter() - started) * 1000)
            if not found:
                sys.exit(f"no usage found for key {key}")
    return [
        Latency(ms[0], statistics.median(ms[1:]), percentile(ms[1:], 95), count) for ms in times
    ]


# Backends


def schema_url(url: str, schema: str) -> str:
    """`url` with its search_path set to `schema`."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def postgres_schema(url: str, keep: str | None = None) -> Iterator[str]:
    """A schema as a URL whose search_path is it: a fresh one, dropped afterwards; or
    `keep`, made if missing and left in place."""
    import psycopg

    name = keep or f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
        try:
            yield schema_url(url, name)
        finally:
            if not keep:
                admin.execute(f"DROP SCHEMA {name} CASCADE")


def report_ingest(backend: str, what: str, result: Ingest) -> None:
    met = "met" if result.rate >= INGEST_TARGET else "NOT met"
    whose = "" if backend == "sqlite" else " (SQLite's)"
    print(
        f"{backend} ingest, {what}: {result.count:,} records in {result.seconds:.2f} s = "
        f"{result.rate:,.0f} records/s (target{whose} >= {INGEST_TARGET:,}/s: {met})",
        flush=True,
    )


def report_seed(backend: str, seed: Seed) -> None:
    if seed.reused:
        print(f"{backend} seed: {seed.requests:,} requests, {seed.reused}", flush=True)
        return
    steps = ", ".join(f"{name} {s:.1f} s" for name, s in seed.seconds.items())
    print(
        f"{backend} seed: {seed.requests:,} requests, {seed.hourly:,} hourly rows, "
        f"{seed.size_bytes / 1e6:,.0f} MB in {sum(seed.seconds.values()):.1f} s ({steps})",
        flush=True,
    )


def report_queries(backend: str, latencies: list[Latency]) -> None:
    for (name, _), lat in zip(QUERIES, latencies, strict=True):
        met = "met" if lat.p95_ms < QUERY_TARGET_MS else "NOT met"
        print(
            f"{backend} query {name}: median {lat.median_ms:.2f} ms, p95 {lat.p95_ms:.2f} ms, "
            f"first {lat.first_ms:.2f} ms, {lat.count} queries over {KEYS} keys "
            f"(target < {QUERY_TARGET_MS:.0f} ms: {met})",
            flush=True,
        )


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> None:
    ingest_keys = key_ids("bench-ingest")
    live = make_usages(args.ingest, ingest_keys, seed=2)
    replay = make_usages(args.ingest, ingest_keys, seed=3)
    pool = templates(workdir / f"{backend}-templates.db")
    if backend == "sqlite":
        targets = [str(workdir / "ingest-live.db"), str(workdir / "ingest-replay.db")]
        for target, usages, what in zip(targets, (live, replay), _EMPTY, strict=True):
            result = ingest(target, usages, spread=usages is replay, batch_size=args.batch_size)
            report_ingest(backend, what, result)
        path = Path(args.keep) if args.keep else workdir / "seeded.db"
        reused = ""
        if path.exists():
            with closing(sqlite3.connect(path)) as db:
                reused = reuse_reason(_reader(db), args.requests, str(path))
        if reused:
            seed = Seed(args.requests, 0, {}, path.stat().st_size, reused)
        else:
            for name in (str(path), f"{path}-wal", f"{path}-shm"):
                Path(name).unlink(missing_ok=True)
            seed = seed_sqlite(path, args.requests, pool, key_ids("bench-seed"))
        with closing(sqlite3.connect(path)) as db:
            _finish(backend, target=str(path), seed=seed, fetch=_reader(db), args=args, live=live,
                    kept=bool(args.keep))  # fmt: skip
        return
    for usages, what in zip((live, replay), _EMPTY, strict=True):
        with postgres_schema(args.postgres) as url:
            result = ingest(url, usages, spread=usages is replay, batch_size=args.batch_size)
            report_ingest(backend, what, result)
    import psycopg

    with (
        postgres_schema(args.postgres, args.keep_schema) as url,
        psycopg.connect(url, autocommit=True) as pg,
    ):

        def fetch(sql: str) -> list[Row]:
            return pg.execute(sql).fetchall()

        reused = reuse_reason(fetch, args.requests, f"schema {args.keep_schema}")
        if reused:
            seed = Seed(args.requests, 0, {}, 0, reused)
        else:
            if args.keep_schema:  # a kept schema of another size or day: start it again
                pg.execute(f"DROP SCHEMA {args.keep_schema} CASCADE")
                pg.execute(f"CREATE SCHEMA {args.keep_schema}")
            seed = seed_postgres(url, args.requests, pool, key_ids("bench-seed"))
        _finish(backend, target=url, seed=seed, fetch=fetch, args=args, live=live,
                kept=bool(args.keep_schema))  # fmt: skip


def _reader(db: sqlite3.Connection) -> Callable[[str], list[Row]]:
    def fetch(sql: str) -> list[Row]:
        return db.execute(sql).fetchall()

    return fetch


_EMPTY = ("live (at=now), empty ledger", f"replay (at= over {DAYS} days), empty ledger")


def _finish(
    backend: str,
    *,
    target: str,
    seed: Seed,
    fetch: Callable[[str], list[Row]],
    args: argparse.Namespace,
    live: list[Usage],
    kept: bool,
) -> None:
    """Check the seeded ledger, time its queries, then ingest into it (and take that out of
    a ledger that is `kept`)."""
    report_seed(backend, seed)
    seed_keys = key_ids("bench-seed")
    with UsageLedger(target) as ledger:
        check_seed(fetch, ledger, seed_keys)
        report_queries(backend, time_queries(ledger, seed_keys, args.queries))
    fresh = [replace_id(u) for u in live]  # the live requests again, under new ids
    report_ingest(backend, f"live (at=now), into the {seed.requests:,}-request ledger",
                  ingest(target, fresh, spread=False, batch_size=args.batch_size))  # fmt: skip
    # Without request ids, the ledger numbers rows itself: inserts at one end of the index.
    unnamed = [dataclasses.replace(u, request_id=None) for u in live]
    what = f"live (at=now), no request ids, into the {seed.requests:,}-request ledger"
    report_ingest(backend, what, ingest(target, unnamed, spread=False, batch_size=args.batch_size))
    if kept:  # leave a kept ledger as it was seeded
        with UsageLedger(target) as ledger:
            for key in key_ids("bench-ingest"):
                ledger.reset(key_id=key)


def replace_id(usage: Usage) -> Usage:
    return dataclasses.replace(usage, request_id=uuid.uuid4().hex)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--requests",
        type=int,
        default=10_000_000,
        help="requests stored for the queries (default 10_000_000)",
    )
    parser.add_argument(
        "--ingest",
        type=int,
        default=200_000,
        help="records timed through record() (default 200_000)",
    )
    parser.add_argument(
        "--queries", type=int, default=200, help="timed runs of each query (default 200)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="the ledger's batch_size (default: its own)"
    )
    parser.add_argument(
        "--keep", metavar="PATH", help="keep the seeded SQLite ledger here and reuse it"
    )
    parser.add_argument(
        "--keep-schema",
        metavar="NAME",
        help="keep the seeded PostgreSQL ledger in this schema and reuse it",
    )
    parser.add_argument(
        "--postgres",
        default=POSTGRES,
        metavar="URL",
        help=f"the PostgreSQL server (default {POSTGRES})",
    )
    args = parser.parse_args()
    if args.requests < 1000 or args.ingest < 100 or args.queries < 2:
        parser.error("need --requests >= 1000, --ingest >= 100, --queries >= 2")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory(prefix="bench_ledger_") as workdir:
        for backend in backends:
            if backend == "postgres":
                problem = postgres_problem(args.postgres)
                if problem:
                    print(f"postgres: skipped: {problem}", flush=True)
                    continue
            run_backend(backend, args, Path(workdir))


if __name__ == "__main__":
    main()
