"""In-process tests: no server, no subprocess, no database server."""
