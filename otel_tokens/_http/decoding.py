"""Undo a response's Content-Encoding (gzip, deflate, br) for the meter's own copy, in
bounded pieces, so that a compression bomb costs the caller's thread no more than a bound."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

#: How much a compressed body may decode to at most, for our copy: a gzip bomb of a few
#: kilobytes must not cost the caller's thread gigabytes of work (flagged `missing`).
MAX_DECODED_BYTES = 128 * 1024 * 1024
#: The most one chunk may decode to in one piece (a bomb in one chunk, bounded too).
_DECODED_PIECE = 1024 * 1024
#: The most a stream's chunk may decode to (its events are parsed: kept small).
_MAX_DECODED_CHUNK = 16 * 1024 * 1024

Step = Callable[[bytes], Iterator[bytes]]


class Decoder:
    """Undo the response's Content-Encoding for our copy (the caller still gets raw bytes),
    in pieces of at most a MiB, and no more than MAX_DECODED_BYTES in all."""

    def __init__(self, encoding: str) -> None:
        self.failed = False
        self._decoded = 0
        self._steps: list[Step] = []
        for name in reversed([e.strip().lower() for e in encoding.split(",") if e.strip()]):
            if name in ("gzip", "x-gzip", "deflate"):
                self._steps.append(_zlib_step())
            elif name == "br":
                step = _brotli_step()
                if step is None:
                    self.failed = True
                else:
                    self._steps.append(step)
            elif name != "identity":
                self.failed = True

    def pieces(self, chunk: bytes) -> Iterator[bytes]:
        """The decoded bytes of `chunk`, a piece at a time.

        Raises:
            ValueError: the body decodes to more than MAX_DECODED_BYTES.
        """
        for piece in self._through(chunk, 0):
            self._decoded += len(piece)
            if self._decoded > MAX_DECODED_BYTES:
                msg = f"the body decodes to more than {MAX_DECODED_BYTES} bytes"
                raise ValueError(msg)
            yield piece

    def _through(self, data: bytes, step: int) -> Iterator[bytes]:
        if step == len(self._steps):
            yield data
            return
        for piece in self._steps[step](data):
            yield from self._through(piece, step + 1)

    def __call__(self, chunk: bytes) -> bytes:
        """The decoded bytes of one chunk of a stream (at most 16 MiB).

        Raises:
            ValueError: they are more.
        """
        pieces, size = [], 0
        for piece in self.pieces(chunk):
            size += len(piece)
            if size > _MAX_DECODED_CHUNK:
                msg = f"a chunk decodes to more than {_MAX_DECODED_CHUNK} bytes"
                raise ValueError(msg)
            pieces.append(piece)
        return b"".join(pieces)


def _zlib_step() -> Step:
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)

    def step(data: bytes) -> Iterator[bytes]:
        piece = decompressor.decompress(data, _DECODED_PIECE)
        while piece:
            yield piece
            rest = decompressor.unconsumed_tail
            piece = decompressor.decompress(rest, _DECODED_PIECE) if rest else b""

    return step


def _brotli_step() -> Step | None:
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        return None
    decompressor = brotli.Decompressor()

    def step(data: bytes) -> Iterator[bytes]:
        yield decompressor.process(data)

    return step
