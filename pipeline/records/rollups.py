"""OI rollup rows: the strike and chain records on the ``bars-rollups`` topic, and their row form.

Definitions of every column: ``pipeline.core.rollups`` (where they are computed)
and docs/design.md. Units: ``bucket`` epoch seconds (interval start), ``interval_s``
seconds, ``last_recv_ts`` epoch microseconds, prices and strikes in rupees, OI
and volume in contracts; ``underlying``/``expiry`` are ASCII bytes
('YYYY-MM-DD'). A side with no known bar holds NaN floats and ``MISSING_INT``
ints (NULL in SQL, null in JSON).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
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
        ("parity_violations", "<i8"),
        ("crossed_quotes", "<i8"),
        ("butterfly_violations", "<i8"),
        ("strikes_quoted", "<i8"),
        ("last_recv_ts", "<i8"),
    ]
)


#: The live volatility index of an underlying per bucket (``pipeline.core.vol_index_live``); ``expiry`` of
#: the key unused (empty): the row is per underlying.
VOL_INDEX_DTYPE = np.dtype(
    [("underlying", "S24"), ("interval_s", "<i4"), ("bucket", "<i8"), ("vix", "<f8"),
     ("near_expiry", "S10"), ("next_expiry", "S10"), ("near_variance", "<f8"), ("next_variance", "<f8"),
     ("forward_near", "<f8"), ("forward_next", "<f8"), ("strikes_used_near", "<i8"), ("strikes_used_next", "<i8"),
     ("last_recv_ts", "<i8")]
)


def encode_rollups(underlying: str, strike_rows: np.ndarray, chain_rows: np.ndarray,
                   vol_index_rows: np.ndarray | None = None) -> bytes:
    """One ``rollups`` topic record: a strike batch (kind 4), a chain batch (kind 5) and a volatility index
    batch (kind 7)."""
    vix = np.empty(0, VOL_INDEX_DTYPE) if vol_index_rows is None else vol_index_rows
    return (encode_batch(RecordKind.STRIKE_BARS, underlying, strike_rows, STRIKE_BAR_DTYPE)
            + encode_batch(RecordKind.CHAIN_BARS, underlying, chain_rows, CHAIN_BAR_DTYPE)
            + encode_batch(RecordKind.VOL_INDEX, underlying, vix, VOL_INDEX_DTYPE))


def decode_rollups(payload: bytes) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(underlying, strike_rows, chain_rows, vol_index_rows)`` (the last empty for a record written
    before the volatility index); raises ``BatchFormatError`` on a bad payload."""
    batches = decode_batches(payload, {RecordKind.STRIKE_BARS: STRIKE_BAR_DTYPE, RecordKind.CHAIN_BARS: CHAIN_BAR_DTYPE,
                                       RecordKind.VOL_INDEX: VOL_INDEX_DTYPE})
    kinds = [kind for kind, _, _ in batches]
    if kinds not in ([RecordKind.STRIKE_BARS, RecordKind.CHAIN_BARS],
                     [RecordKind.STRIKE_BARS, RecordKind.CHAIN_BARS, RecordKind.VOL_INDEX]):
        raise BatchFormatError("a rollups record is a strike batch, a chain batch and a volatility index batch")
    keys = {key for _, key, _ in batches}
    if len(keys) != 1:
        raise BatchFormatError(f"rollups record has several keys ({sorted(keys)!r})")
    vix = batches[2][2] if len(batches) == 3 else np.empty(0, VOL_INDEX_DTYPE)
    return batches[0][1], batches[0][2], batches[1][2], vix


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


def rows_of(dtype: np.dtype, interval_s: int, mappings: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """The inverse of :func:`row_dicts`: rows of ``dtype`` (a rollup dtype) of one interval from mappings of
    column values (for tools and tests that build rows by hand). A column not given is missing (NaN, ``MISSING_INT``,
    b""); None likewise. Dates may be ``datetime.date``, ``numpy.datetime64`` or 'YYYY-MM-DD'; ``bucket`` epoch
    seconds or a ``datetime``; ``last_recv_ts`` epoch microseconds or a ``datetime``."""
    mappings = list(mappings)
    out = np.zeros(len(mappings), dtype)
    for name in dtype.names:
        kind = dtype[name].kind
        if kind == "f":
            out[name] = np.nan
        elif dtype[name] == np.int64 and name != "bucket":
            out[name] = MISSING_INT
    out["interval_s"] = interval_s
    for i, row in enumerate(mappings):
        for name, value in row.items():
            if value is not None:
                out[name][i] = _plain(name, value, dtype[name].kind)
    return out


def _plain(name: str, value: Any, kind: str) -> Any:
    """One hand-given value as the dtype stores it (see :func:`rows_of`)."""
    if isinstance(value, dt.datetime):
        seconds = value.timestamp()
        return round(seconds * 1_000_000) if name == "last_recv_ts" else int(seconds)
    if kind == "S":
        if isinstance(value, np.datetime64):
            value = str(value.astype("datetime64[D]"))
        return value if isinstance(value, bytes) else str(value).encode()
    return value


__all__ = ["CHAIN_BAR_DTYPE", "MISSING_INT", "STRIKE_BAR_DTYPE", "VOL_INDEX_DTYPE", "decode_rollups", "encode_rollups",
           "row_dicts", "rows_of"]
