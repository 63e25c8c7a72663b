"""The byte streams a metered transport hands back: each passes the response's chunks to
the caller unchanged and to a `ResponseMeter` on the way, in the library's own stream class."""

from __future__ import annotations

import sys
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from otel_tokens._http.meter import LATER_BYTES, ResponseMeter

#: (metering mixin, library base class) → the class that combines them.
_stream_classes: dict[tuple[type, type], type] = {}


def wrap_stream(response: Any, meter: ResponseMeter, mixin: type) -> Any:
    """Wrap `response.stream` in a subclass of its own library's byte-stream class, which
    httpx and httpx2 check with isinstance()."""
    name = "SyncByteStream" if mixin is SyncStream else "AsyncByteStream"
    library = sys.modules.get(type(response).__module__.split(".", 1)[0])
    base = getattr(library, name, None)
    base = base if isinstance(base, type) else object
    cls = _stream_classes.get((mixin, base))
    if cls is None:
        cls = _stream_classes[(mixin, base)] = type("Metered" + name, (mixin, base), {})
    return cls(response.stream, meter)


class SyncStream:
    def __init__(self, inner: Any, meter: ResponseMeter) -> None:
        self._inner = inner
        self._meter = meter
        # A response dropped without close() still records (as canceled) when collected.
        weakref.finalize(self, meter.on_close)

    def __iter__(self) -> Iterator[bytes]:
        meter = self._meter
        chunks = iter(self._inner)
        try:
            for chunk in chunks:
                meter.on_chunk(chunk)
                yield chunk
                if meter.later is not None:
                    break
            ring, later = meter.ring, meter.later
            if ring is not None:  # the rest of a stream of one event per chunk: its last ones
                keep = ring.append
                for chunk in chunks:
                    keep(chunk)
                    meter.chunks += 1
                    yield chunk
            elif later is not None:  # the rest of a long stream: kept and read many at a time
                keep, size = later.append, 0
                for chunk in chunks:
                    keep(chunk)
                    meter.chunks += 1
                    yield chunk
                    size += len(chunk)
                    if size >= LATER_BYTES:
                        size = 0
                        meter.on_later()
        except GeneratorExit:
            raise
        except BaseException as exc:
            meter.on_error(exc)
            raise
        meter.on_end()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._meter.on_close()


class AsyncStream:
    def __init__(self, inner: Any, meter: ResponseMeter) -> None:
        self._inner = inner
        self._meter = meter
        weakref.finalize(self, meter.on_close)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        meter = self._meter
        chunks = aiter(self._inner)
        try:
            async for chunk in chunks:
                meter.on_chunk(chunk)
                yield chunk
                if meter.later is not None:
                    break
            ring, later = meter.ring, meter.later
            if ring is not None:  # as in SyncStream
                keep = ring.append
                async for chunk in chunks:
                    keep(chunk)
                    meter.chunks += 1
                    yield chunk
            elif later is not None:
                keep, size = later.append, 0
                async for chunk in chunks:
                    keep(chunk)
                    meter.chunks += 1
                    yield chunk
                    size += len(chunk)
                    if size >= LATER_BYTES:
                        size = 0
                        meter.on_later()
        except GeneratorExit:
            raise
        except BaseException as exc:
            meter.on_error(exc)
            raise
        meter.on_end()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._meter.on_close()
