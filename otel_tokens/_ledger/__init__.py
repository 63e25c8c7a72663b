"""Per-key usage that survives restarts: the writer, typed rows, SQLite and PostgreSQL stores,
queries, periods, snapshots.
"""
