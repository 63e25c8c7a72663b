"""The ledger's tables, as numbered migrations written once for SQLite and PostgreSQL.

`otel_tokens_requests` holds one row per request; `otel_tokens_hourly` the same numbers
summed per key x provider x model x scenario x status x UTC hour, kept up to date in the
transaction that inserts the requests, so that a period query reads hours, not requests.
`otel_tokens_team_hourly` sums the requests that name a team per team x status x hour the same
way: a table of its own, so that replicas still running a version without teams go on
writing the hourly table as they know it while others upgrade. `otel_tokens_budgets` holds
the budgets set on keys, teams or everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

#: The columns of a request row, in the order the writer passes them.
REQUEST_COLUMNS = (
    "uid", "at_us", "key_id", "provider", "model", "request_model", "operation", "scenario",
    "user_tier", "status", "error_type", "streamed", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "system_tokens",
    "cost_pico", "latency_s", "team",
)  # fmt: skip
#: Token columns, summed in the hourly table under the same names.
TOKEN_COLUMNS = (
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "system_tokens",
)  # fmt: skip
#: What a query may group by, besides time.
DIMENSIONS = ("key_id", "provider", "model", "scenario", "status")
HOURLY_KEY = ("key_id", "hour", "provider", "model", "scenario", "status")
#: What the team table may be grouped by, and its key.
TEAM_DIMENSIONS = ("team", "status")
TEAM_HOURLY_KEY = ("team", "hour", "status")
#: The columns of a custom meter's event row, in the order the writer passes them; d1..d4
#: hold the values of the meter's dimensions, in the order it defines them.
EVENT_COLUMNS = ("meter", "uid", "at_us", "key_id", "d1", "d2", "d3", "d4", "value_micro")
EVENT_DIMENSIONS = ("d1", "d2", "d3", "d4")
EVENT_HOURLY_KEY = ("meter", "key_id", "hour", *EVENT_DIMENSIONS)
US_PER_HOUR = 3_600_000_000
#: The ledger's idempotency window: records of one request id whose times are less than
#: this apart count once; two windows apart or more, each counts (`uid_window_indexes`).
IDEMPOTENCY_WINDOW_US = US_PER_HOUR


#: The table of the ledger's own settings (which secret its key ids are made with).
SETTINGS = "otel_tokens_settings"
#: The columns of a budget row; the first four name it.
BUDGET_COLUMNS = ("scope", "subject", "period", "unit", "amount", "tz", "set_at_us")


_REQUEST_INDEXES = (
    "CREATE INDEX otel_tokens_requests_key_at ON otel_tokens_requests (key_id, at_us)",
    "CREATE INDEX otel_tokens_requests_at ON otel_tokens_requests (at_us)",
)


def uid_window_indexes() -> list[str]:
    """The two unique indexes that make a request id count once within
    `IDEMPOTENCY_WINDOW_US`: each on (a cell of time, uid), the cells two windows wide, the
    second grid's edges a window after the first's. The edges of the two grids together
    are a window apart, so two times less than a window apart have no edge of one of the
    grids between them: they share a cell there, and the database refuses the second row.
    Times two windows apart or more share no cell. Both indexes grow at the end of time,
    as requests come: an insert touches the pages of the last days, where a unique index
    on the id alone put each row on a random page of an index as large as the ledger."""
    window, span = IDEMPOTENCY_WINDOW_US, 2 * IDEMPOTENCY_WINDOW_US
    return [
        "CREATE UNIQUE INDEX otel_tokens_requests_uid_even ON otel_tokens_requests "
        f"((at_us / {span}), uid)",
        "CREATE UNIQUE INDEX otel_tokens_requests_uid_odd ON otel_tokens_requests "
        f"(((at_us + {window}) / {span}), uid)",
    ]


_Row = TypeVar("_Row", bound=Sequence[Any])
_AT = REQUEST_COLUMNS.index("at_us")
_UID = REQUEST_COLUMNS.index("uid")


def in_id_order(row: Sequence[Any]) -> tuple[int, str]:
    """Where a request row (`REQUEST_COLUMNS` order) sits in the first of the request id
    indexes: by the cell of its time, then by id."""
    return row[_AT] // (2 * IDEMPOTENCY_WINDOW_US), row[_UID]


def write_order(rows: Sequence[_Row]) -> list[_Row]:
    """Request rows sorted as the first request id index holds them (`in_id_order`), so
    that each insert lands next to the last one, on a page just read, not on a random one
    (a third less time per row in SQLite here). The records of one id stay together in the
    order they came, where the first one sorts, so that the first recorded is the one kept,
    as across batches."""
    if len({row[_UID] for row in rows}) == len(rows):
        return sorted(rows, key=in_id_order)
    first: dict[str, tuple[int, str]] = {}
    for row in rows:
        first.setdefault(row[_UID], in_id_order(row))
    return sorted(rows, key=lambda row: first[row[_UID]])  # stable: one id's in order


def _migrations(
    autoincrement: str, big: str, real: str, *, private: str, rebuild: bool
) -> list[list[str]]:
    tokens = ",\n".join(f"    {name} {big} NOT NULL" for name in TOKEN_COLUMNS)

    def requests_table(name: str, uid: str, team: str = "") -> str:
        return f"CREATE TABLE {name} (\n    id {autoincrement},\n    {uid},\n{columns}{team}\n)"

    columns = f"""    at_us {big} NOT NULL,
    key_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    request_model TEXT,
    operation TEXT NOT NULL,
    scenario TEXT NOT NULL,
    user_tier TEXT NOT NULL,
    status TEXT NOT NULL,
    error_type TEXT,
    streamed SMALLINT NOT NULL,
{tokens},
    cost_pico {big},
    latency_s {real}"""
    dims = ",\n".join(f"    {name} TEXT NOT NULL" for name in EVENT_DIMENSIONS)
    # The sums of an hour, the same in the hourly table and the team table.
    sums = ",\n".join([f"    requests {big} NOT NULL", tokens] + [
        f"    {name} {big} NOT NULL" for name in ("cost_pico", "unpriced_tokens", "last_at_us")
    ])  # fmt: skip
    return [
        [  # 1: requests and their hourly sums
            requests_table("otel_tokens_requests", "uid TEXT NOT NULL UNIQUE"),
            *_REQUEST_INDEXES,
            f"""CREATE TABLE otel_tokens_hourly (
    key_id TEXT NOT NULL,
    hour {big} NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    scenario TEXT NOT NULL,
    status TEXT NOT NULL,
{sums},
    PRIMARY KEY ({", ".join(HOURLY_KEY)})
)""",
            "CREATE INDEX otel_tokens_hourly_hour ON otel_tokens_hourly (hour)",
        ],
        [  # 2: custom meters, their events and the events' hourly sums
            """CREATE TABLE otel_tokens_meters (
    name TEXT PRIMARY KEY,
    unit TEXT NOT NULL,
    aggregation TEXT NOT NULL,
    dimensions TEXT NOT NULL,
    currency TEXT,
    description TEXT NOT NULL
)""",
            f"""CREATE TABLE otel_tokens_events (
    id {autoincrement},
    meter TEXT NOT NULL,
    uid TEXT NOT NULL,
    at_us {big} NOT NULL,
    key_id TEXT NOT NULL,
{dims},
    value_micro {big} NOT NULL,
    UNIQUE (meter, uid)
)""",
            "CREATE INDEX otel_tokens_events_key_at ON otel_tokens_events (meter, key_id, at_us)",
            "CREATE INDEX otel_tokens_events_at ON otel_tokens_events (at_us)",
            f"""CREATE TABLE otel_tokens_event_hourly (
    meter TEXT NOT NULL,
    key_id TEXT NOT NULL,
    hour {big} NOT NULL,
{dims},
    events {big} NOT NULL,
    value_micro {big} NOT NULL,
    last_at_us {big} NOT NULL,
    last_value_micro {big} NOT NULL,
    PRIMARY KEY ({", ".join(EVENT_HOURLY_KEY)})
)""",
            "CREATE INDEX otel_tokens_event_hourly_hour ON otel_tokens_event_hourly (meter, hour)",
        ],
        [  # 3: settings, one JSON value per name
            f"CREATE TABLE {SETTINGS} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            *([private] if private else []),
        ],
        [  # 4: a team on every request, the hourly sums of those that name one; budgets
            "ALTER TABLE otel_tokens_requests ADD COLUMN team TEXT NOT NULL DEFAULT ''",
            f"""CREATE TABLE otel_tokens_team_hourly (
    team TEXT NOT NULL,
    hour {big} NOT NULL,
    status TEXT NOT NULL,
{sums},
    PRIMARY KEY ({", ".join(TEAM_HOURLY_KEY)})
)""",
            f"""CREATE TABLE otel_tokens_budgets (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    period TEXT NOT NULL,
    unit TEXT NOT NULL,
    amount TEXT NOT NULL,
    tz TEXT NOT NULL,
    set_at_us {big} NOT NULL,
    PRIMARY KEY (scope, subject, period, unit)
)""",
        ],
        [  # 5: a request id counts once within the idempotency window
            *(_rebuilt_without_unique_uid(requests_table) if rebuild else []),
            *uid_window_indexes(),
            # PostgreSQL drops the constraint; SQLite cannot, and rebuilt the table instead
            *(
                []
                if rebuild
                else [
                    "ALTER TABLE otel_tokens_requests DROP CONSTRAINT IF EXISTS "
                    "otel_tokens_requests_uid_key"
                ]
            ),
        ],
    ]


def _rebuilt_without_unique_uid(requests_table: Callable[..., str]) -> list[str]:
    """SQLite cannot drop the unique constraint of a column: copy the table into one
    without it (ids and all), drop the old one (and its indexes), and index the copy. The
    copy has the columns of the old table in its order (migrations 1 and 4 made them), so
    SQLite copies its records as they are: 10 million in 8 s here, the whole step 90 s."""
    return [
        requests_table("otel_tokens_requests_v5", "uid TEXT NOT NULL",
                       ",\n    team TEXT NOT NULL DEFAULT ''"),
        "INSERT INTO otel_tokens_requests_v5 SELECT * FROM otel_tokens_requests",
        "DROP TABLE otel_tokens_requests",
        "ALTER TABLE otel_tokens_requests_v5 RENAME TO otel_tokens_requests",
        *_REQUEST_INDEXES,
    ]  # fmt: skip


# A SQLite ledger is a file only its owner can read. In PostgreSQL, say so of the settings,
# which may hold a secret, whatever default privileges the schema grants.
SQLITE_MIGRATIONS = _migrations("INTEGER PRIMARY KEY", "INTEGER", "REAL", private="", rebuild=True)
POSTGRES_MIGRATIONS = _migrations(
    "BIGSERIAL PRIMARY KEY", "BIGINT", "DOUBLE PRECISION",
    private=f"REVOKE ALL ON {SETTINGS} FROM PUBLIC", rebuild=False,
)  # fmt: skip
LATEST_VERSION = len(SQLITE_MIGRATIONS)
assert len(POSTGRES_MIGRATIONS) == LATEST_VERSION


def migrate(
    execute: Callable[[str, Sequence[Any]], Any],
    migrations: list[list[str]],
    *,
    description: str,
    placeholder: str,
) -> None:
    """Bring a ledger's tables to the latest version, inside the caller's transaction.

    Raises:
        ValueError: the ledger has a newer version than this code knows.
    """
    execute("CREATE TABLE IF NOT EXISTS otel_tokens_schema (version INTEGER NOT NULL)", ())
    version = execute("SELECT MAX(version) FROM otel_tokens_schema", ()).fetchone()[0] or 0
    if version > len(migrations):
        msg = (
            f"the ledger {description!r} has schema version {version}, newer than this "
            f"otel_tokens knows ({len(migrations)}): upgrade otel_tokens"
        )
        raise ValueError(msg)
    for number in range(version + 1, len(migrations) + 1):
        for statement in migrations[number - 1]:
            execute(statement, ())
        execute(f"INSERT INTO otel_tokens_schema (version) VALUES ({placeholder})", (number,))


def hourly_upsert(
    source: str, *, greatest: str, table: str = "otel_tokens_hourly",
    key: Sequence[str] = HOURLY_KEY,
) -> str:  # fmt: skip
    """SQL that adds the request rows of `source` (a table or a WHERE-filtered select) to
    the hourly sums in `table` by `key`; `greatest` is the dialect's two-argument maximum
    (MAX or GREATEST)."""
    sums = ", ".join(f"SUM({name})" for name in TOKEN_COLUMNS)
    updates = ", ".join(
        f"{name} = {table}.{name} + excluded.{name}"
        for name in ("requests", *TOKEN_COLUMNS, "cost_pico", "unpriced_tokens")
    )
    groups = ", ".join(f"at_us / {US_PER_HOUR}" if name == "hour" else name for name in key)
    return f"""INSERT INTO {table} ({", ".join(key)}, requests,
    {", ".join(TOKEN_COLUMNS)}, cost_pico, unpriced_tokens, last_at_us)
SELECT {groups}, COUNT(*), {sums},
    COALESCE(SUM(cost_pico), 0),
    SUM(CASE WHEN cost_pico IS NULL THEN input_tokens + output_tokens ELSE 0 END),
    MAX(at_us)
FROM {source}
GROUP BY {groups}
ORDER BY {groups}
ON CONFLICT ({", ".join(key)}) DO UPDATE SET {updates},
    last_at_us = {greatest}({table}.last_at_us, excluded.last_at_us)"""


def names_a_team(rows: Sequence[Sequence[Any]]) -> bool:
    """Whether a request of `rows` (`REQUEST_COLUMNS` order) names a team: only then has the
    team table anything to add."""
    return any(row[_TEAM] for row in rows)


_TEAM = REQUEST_COLUMNS.index("team")


def team_hourly_upsert(source: str, *, greatest: str) -> str:
    """SQL that adds the rows of `source` (already limited to rows with a team) to the team
    table's hourly sums."""
    return hourly_upsert(source, greatest=greatest, table="otel_tokens_team_hourly",
                         key=TEAM_HOURLY_KEY)  # fmt: skip


def event_hourly_upsert(*, greatest: str) -> str:
    """SQL that adds one row of an event batch's hourly sums (`EVENT_HOURLY_KEY`, events,
    value sum, last time, value at the last time) to `otel_tokens_event_hourly`. The later
    event's value wins; at the same microsecond, the larger value, so that the order events
    are written in (and merged from snapshots) does not matter."""
    table = "otel_tokens_event_hourly"
    newer = (
        f"excluded.last_at_us > {table}.last_at_us OR (excluded.last_at_us = "
        f"{table}.last_at_us AND excluded.last_value_micro > {table}.last_value_micro)"
    )
    columns = [*EVENT_HOURLY_KEY, "events", "value_micro", "last_at_us", "last_value_micro"]
    return f"""INSERT INTO {table} ({", ".join(columns)})
VALUES ({", ".join("?" for _ in columns)})
ON CONFLICT ({", ".join(EVENT_HOURLY_KEY)}) DO UPDATE SET
    events = {table}.events + excluded.events,
    value_micro = {table}.value_micro + excluded.value_micro,
    last_value_micro = CASE WHEN {newer} THEN excluded.last_value_micro
        ELSE {table}.last_value_micro END,
    last_at_us = {greatest}({table}.last_at_us, excluded.last_at_us)"""
