"""Bytes on the wire to `Usage`: which API a request calls, the response meter, the SSE parser."""
