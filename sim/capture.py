"""Capture files of the simulator: the frames it sent, with their exchange-time offsets.

Format: records back to back, each ``offset_us:uint64 BE | length:uint32 BE |
frame``; ``offset_us`` is exchange time in microseconds since the first frame.
``--record FILE`` writes one, ``--replay FILE`` sends one again at its pace.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

_HEADER = struct.Struct(">QI")


class CaptureWriter:
    """Appends frames to a capture file; ``at`` is the exchange time (epoch seconds) of each frame."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._t0: float | None = None

    def write(self, frame: bytes, at: float) -> None:
        self._t0 = self._t0 if self._t0 is not None else at
        self._file.write(_HEADER.pack(int((at - self._t0) * 1e6), len(frame)) + frame)
        self._file.flush()  # a capture is readable up to its last frame while (and if) the simulator dies

    def close(self) -> None:
        self._file.close()


def read_capture(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(offset_us, frame)`` of every complete record of a capture's bytes, in order."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        at_us, length = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        yield at_us, data[start: start + length]
        offset = start + length
