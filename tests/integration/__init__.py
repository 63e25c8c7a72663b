"""Tests against real servers, databases, subprocesses and tools, on 127.0.0.1."""
