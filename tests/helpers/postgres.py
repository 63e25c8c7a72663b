"""Whether a PostgreSQL server can be used: the tests' check, which the ledger benchmark
runs too before it uses one."""

from __future__ import annotations


def postgres_problem(url: str) -> str:
    """Why PostgreSQL cannot be used ("" when it can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'otel_tokens[postgres]')"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL server answers at {url}: {str(exc).strip()}"
    return ""
