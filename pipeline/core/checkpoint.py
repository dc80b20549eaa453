"""Checkpoints of some underlyings' engines: bytes in, the same engines' state out.

A checkpoint holds, for a set of underlyings, each engine's explicit state
(``UnderlyingEngine.to_state``: the bars' open ticks, watermark, per-instrument
volume baselines and redelivery marks, closed buckets retained for late
corrections; the rollups' carry-forward history; the quality counts; the
underlying's price book with each row's token), every name under its
underlying (``NIFTY/bars/...``). The agent stores it with the offset of the
first record it does not reflect (``sinks.checkpoint_store``).

Bytes: ``pipeline.core.state`` (a numpy archive read without pickle) with
format number :data:`FORMAT`. Formats 1-3 (before 4) were pickled Python
objects; they are refused with that reason, like any other format, and the
partition starts fresh from its committed offset (a clean start: the rollups
are seeded from the stored bars). ``FORMAT`` is bumped whenever a state's names
or meaning change; a format this worker cannot read is never guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.core.state import (
    State,
    StateError,
    decode_state,
    encode_state,
    nest,
    prefixes,
    sub,
)

FORMAT = 4  # 4: explicit state (arrays and scalars); 1-3: pickled objects
LEGACY_MAGIC = b"SFCP"  # formats 1-3


class CheckpointError(StateError):
    """A checkpoint that cannot be restored here (another format, other bar settings, corrupt)."""


def encode_checkpoint(states: Mapping[str, State]) -> bytes:
    """One checkpoint of the engines' ``states`` (underlying -> ``to_state()``)."""
    merged: State = {}
    for underlying, state in states.items():
        if "/" in underlying:
            raise ValueError(f"an underlying name cannot hold '/': {underlying!r}")
        merged.update(nest(underlying, state))
    return encode_state(merged, FORMAT)


def decode_checkpoint(blob: bytes) -> dict[str, State]:
    """underlying -> state of a checkpoint of this :data:`FORMAT`; :class:`CheckpointError` otherwise."""
    if blob[:len(LEGACY_MAGIC)] == LEGACY_MAGIC:
        fmt = int.from_bytes(blob[4:6], "big") if len(blob) >= 6 else 0
        raise CheckpointError(f"checkpoint format {fmt} holds pickled objects, which this worker no longer "
                              f"reads (format {FORMAT}: explicit state)")
    try:
        fmt, state = decode_state(blob)
    except StateError as exc:
        raise CheckpointError(str(exc)) from None
    if fmt != FORMAT:
        raise CheckpointError(f"checkpoint format {fmt}, this worker reads format {FORMAT}")
    return {underlying: sub(state, underlying) for underlying in prefixes(state)}


__all__ = ["FORMAT", "CheckpointError", "decode_checkpoint", "encode_checkpoint"]
