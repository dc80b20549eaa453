"""Checkpoints of the process agent's working state: bytes in, the same state out.

A checkpoint holds, for a set of underlyings, everything ``TickProcessor``
needs to continue as if it had never stopped: the bar aggregator of the finest
interval (open ticks, watermark, per-instrument volume baselines and
redelivery marks, closed buckets retained for late corrections), the OI
rollups (carry-forward history), and the price book entries of the
underlying's instruments (``pipeline.core.price_book``: last trades and quotes with their
times, which the forwards and freshness flags of the next ticks read). The agent stores it
with the offset of the first record it does not reflect (``sinks.checkpoint_store``).

Format: ``b"SFCP"`` | format:uint16 BE | pickle (protocol 5) of a dict of plain
objects and numpy arrays. Pickle is used because the state is numpy arrays and
small Python containers of our own classes, and the bytes never leave our own
database; ``FORMAT`` is bumped whenever the state layout of those classes
changes, and a checkpoint of another format, of other bar settings, or that
does not unpickle raises :class:`CheckpointError` (the agent then starts the
underlyings fresh and says so).
"""

from __future__ import annotations

import pickle
import struct

from pipeline.core.price_book import BookEntries

MAGIC = b"SFCP"
FORMAT = 3  # 2: 5/15-minute bars combined from the 1-minute bars; 3: the price book keeps trade and quote times
_HEADER = struct.Struct(">4sH")


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored here (other format, other bar settings, corrupt)."""


def encode_checkpoint(config: object, states: dict[str, object], books: dict[str, BookEntries]) -> bytes:
    body = pickle.dumps({"config": config, "states": states, "books": books}, protocol=5)
    return _HEADER.pack(MAGIC, FORMAT) + body


def _bar_settings(config: object) -> tuple:
    """What a checkpoint's state depends on: the intervals, the grace and the late window (the other settings,
    e.g. the feed-gap or clock-skew rules, can change between a save and a restore)."""
    return tuple(getattr(config, name, None) for name in ("intervals_s", "grace_s", "late_window_s"))


def decode_checkpoint(blob: bytes, config: object) -> tuple[dict[str, object], dict[str, BookEntries]]:
    """``(states, books)`` of a checkpoint taken with the same ``config``; CheckpointError otherwise."""
    if len(blob) < _HEADER.size:
        raise CheckpointError(f"checkpoint too short ({len(blob)} bytes)")
    magic, fmt = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError("not a strikeflow checkpoint")
    if fmt != FORMAT:
        raise CheckpointError(f"checkpoint format {fmt}, this worker reads format {FORMAT}")
    try:
        payload = pickle.loads(memoryview(blob)[_HEADER.size:])
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not restorable here
        raise CheckpointError(f"checkpoint does not load ({type(exc).__name__}: {exc})") from None
    if _bar_settings(payload.get("config")) != _bar_settings(config):
        raise CheckpointError(f"checkpoint taken with bar settings {payload.get('config')}, this worker has {config}")
    return payload["states"], payload["books"]
