"""OI rollup rows: the strike and chain records on the ``bars-rollups`` topic, and their row form.

Definitions of every column: ``pipeline.core.rollups`` (where they are computed)
and DESIGN.md. Units: ``bucket`` epoch seconds (interval start), ``interval_s``
seconds, ``last_recv_ts`` epoch microseconds, prices and strikes in rupees, OI
and volume in contracts; ``underlying``/``expiry`` are ASCII bytes
('YYYY-MM-DD'). A side with no known bar holds NaN floats and ``MISSING_INT``
ints (NULL in SQL, null in JSON).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.records.columnar import BatchFormatError, decode_batches, encode_batch
from pipeline.records.kinds import RecordKind

MISSING_INT = np.iinfo(np.int64).min  # an int column of a side with no known bar (NULL downstream)

_KEY = [("underlying", "S24"), ("expiry", "S10"), ("interval_s", "<i4"), ("bucket", "<i8")]
_SIDE = [("close", "<f8"), ("volume", "<i8"), ("oi", "<i8"), ("oi_change", "<i8"), ("iv", "<f8"), ("delta", "<f8"),
         ("mid_iv", "<f8"), ("gex", "<f8"), ("buildup", "S14")]

STRIKE_BAR_DTYPE = np.dtype(
    _KEY
    + [("strike", "<f8"), ("forward", "<f8")]
    + [(f"call_{n}", t) for n, t in _SIDE]
    + [(f"put_{n}", t) for n, t in _SIDE]
    + [("last_recv_ts", "<i8")]
)
CHAIN_BAR_DTYPE = np.dtype(
    _KEY
    + [
        ("total_call_oi", "<i8"),
        ("total_put_oi", "<i8"),
        ("pcr", "<f8"),
        ("max_pain", "<f8"),
        ("atm_strike", "<f8"),
        ("atm_iv", "<f8"),
        ("forward", "<f8"),
        ("call_volume", "<i8"),
        ("put_volume", "<i8"),
        ("strikes_listed", "<i8"),
        ("strikes_covered", "<i8"),
        ("rr25", "<f8"),
        ("bf25", "<f8"),
        ("gex", "<f8"),
        ("gex_flip", "<f8"),
        ("last_recv_ts", "<i8"),
    ]
)


def encode_rollups(underlying: str, strike_rows: np.ndarray, chain_rows: np.ndarray) -> bytes:
    """One ``rollups`` topic record: a strike batch (kind 4) followed by a chain batch (kind 5)."""
    return encode_batch(RecordKind.STRIKE_BARS, underlying, strike_rows, STRIKE_BAR_DTYPE) + encode_batch(
        RecordKind.CHAIN_BARS, underlying, chain_rows, CHAIN_BAR_DTYPE
    )


def decode_rollups(payload: bytes) -> tuple[str, np.ndarray, np.ndarray]:
    """Return ``(underlying, strike_rows, chain_rows)``; raises ``BatchFormatError`` on a bad payload."""
    batches = decode_batches(payload, {RecordKind.STRIKE_BARS: STRIKE_BAR_DTYPE, RecordKind.CHAIN_BARS: CHAIN_BAR_DTYPE})
    if [kind for kind, _, _ in batches] != [RecordKind.STRIKE_BARS, RecordKind.CHAIN_BARS]:
        raise BatchFormatError("a rollups record is a strike batch followed by a chain batch")
    (_, key, strike_rows), (_, key2, chain_rows) = batches
    if key2 != key:
        raise BatchFormatError(f"rollups record has two keys ({key!r}, {key2!r})")
    return key, strike_rows, chain_rows


def row_dicts(rows: np.ndarray) -> list[dict[str, Any]]:
    """Rollup rows as plain dicts (for the SQL writer and JSON): strings decoded, NaN and
    ``MISSING_INT`` -> None, ``interval_s`` kept. Column-wise ``tolist()``, no per-value numpy."""
    names = rows.dtype.names or ()
    cols = []
    for name in names:
        col = rows[name]
        kind = col.dtype.kind
        if kind == "S":
            values = [v.decode() or None for v in col.tolist()]  # b"" (a label that does not apply) -> None
        elif kind == "f":
            values = [None if v != v else v for v in col.tolist()]
        elif kind in "iu":
            values = [None if v == MISSING_INT else v for v in col.tolist()]
        else:
            values = col.tolist()
        cols.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]


__all__ = ["CHAIN_BAR_DTYPE", "MISSING_INT", "STRIKE_BAR_DTYPE", "decode_rollups", "encode_rollups", "row_dicts"]
