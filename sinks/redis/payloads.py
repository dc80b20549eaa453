"""JSON payloads of the Redis messages: ticks, bars, chain rows (pure: no I/O).

Message shapes are documented in ``sinks/redis/__init__.py``. Missing numbers
(NaN) are JSON ``null``; messages never contain NaN/Infinity. Tick and bar
objects are built column-wise (one ``tolist()`` per column), and each tick is
encoded once, for its batch message and its snapshot field alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import OPTION_KINDS, InstrumentKind
from pipeline.records.rollups import row_dicts
from pipeline.records.ticks import CLOSE_FIELDS, FORWARD_SOURCES, GREEK_FIELDS
from pipeline.records.time_units import label_of
from sinks.redis.channels import Channels

#: Carried by every message as ``"schema_version"``; bumped when a message's shape changes incompatibly.
SCHEMA_VERSION = 1

# per-tick lookups on plain ints (an IntEnum call or ``in`` on enum members costs more than the lookup)
_OPTION_KINDS = frozenset(int(k) for k in OPTION_KINDS)
_NAMED_KINDS = frozenset((int(InstrumentKind.FUT), int(InstrumentKind.INDEX)))
_TYPE_NAME = {int(k): k.type_name for k in InstrumentKind}
_BAR_FLOATS = ("open", "high", "low", "close", "vwap")
_BAR_INTS = ("volume", "oi", "oi_open", "oi_high", "oi_low", "tick_count", "bucket", "last_recv_ts")


def float_list(values: np.ndarray) -> list[float | None]:
    """Floats as a list with NaN/inf -> None (vectorised; JSON-safe)."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if not bad.any():
        return values.tolist()
    out = values.astype(object)
    out[bad] = None
    return out.tolist()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return clean(float(value))
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def clean(value: Any) -> Any:
    """Recursively replace non-finite floats with None (for caller-supplied payloads)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating):
        return clean(float(value))
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    """Compact, strictly valid JSON (orjson): NaN and Infinity become ``null``, numpy numbers are numbers."""
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def source_list(codes: np.ndarray) -> list[str | None]:
    """``forward_source`` float codes -> their names (``FORWARD_SOURCES``), None where unknown."""
    return [FORWARD_SOURCES.get(int(c)) if c == c else None for c in np.asarray(codes, np.float64).tolist()]


def flag_list(values: np.ndarray) -> list[bool | None]:
    """0/1 float flags -> booleans, None where NaN (not an option)."""
    return [None if v != v else v != 0 for v in np.asarray(values, np.float64).tolist()]


def freshness_columns(rows: np.ndarray) -> list[tuple[str, list]]:
    """The freshness fields of priced ticks or bars as JSON-ready columns (``pipeline.records.ticks``)."""
    return [("mid_iv", float_list(rows["mid_iv"])), ("forward_source", source_list(rows["forward_source"])),
            ("stale", flag_list(rows["stale"])), ("near_expiry", flag_list(rows["near_expiry"]))]


def tick_objects(ticks: np.ndarray, index: InstrumentIndex | None) -> list[dict[str, Any]]:
    """PRICED_TICK_DTYPE (or TICK_DTYPE) rows -> JSON-ready dicts, column-wise where it matters."""
    n = len(ticks)
    if n == 0:
        return []
    tokens = ticks["instrument_token"]
    if index is not None and len(index):
        pos = index.positions(tokens)
    else:
        pos = np.full(n, -1, dtype=np.int64)
    known = pos >= 0
    safe = np.where(known, pos, 0)
    token_list = tokens.tolist()
    if index is not None and len(index):
        symbols = np.where(known, index.tradingsymbol[safe], None).tolist()
        kinds = np.where(known, index.kind[safe], 0).tolist()
        expiries = np.where(known, index.expiry[safe], "").tolist()
        strikes = float_list(np.where(known, index.strike[safe], np.nan))
    else:
        symbols, kinds, expiries, strikes = [None] * n, [0] * n, [""] * n, [None] * n
    symbols = [s if s is not None else str(t) for s, t in zip(symbols, token_list, strict=True)]
    base = [
        ("token", token_list),
        ("symbol", symbols),
        ("exchange_ts", ticks["exchange_ts"].tolist()),
        ("recv_ts", ticks["recv_ts"].tolist()),
        ("last_price", float_list(ticks["last_price"])),
        ("volume", ticks["volume"].tolist()),
        ("oi", ticks["oi"].tolist()),
        ("bid", float_list(ticks["bid"])),
        ("ask", float_list(ticks["ask"])),
    ]
    base_names = [name for name, _ in base]
    base_rows = zip(*(col for _, col in base), strict=True)
    has_greeks = all(name in ticks.dtype.names for name in CLOSE_FIELDS)
    option_cols = [(name, float_list(ticks[name])) for name in GREEK_FIELDS] + freshness_columns(ticks) \
        if has_greeks else []
    greek_names = [name for name, _ in option_cols]
    greek_rows = zip(*(col for _, col in option_cols), strict=True) if has_greeks else None
    out = []
    for i, row in enumerate(base_rows):
        obj = dict(zip(base_names, row, strict=True))
        greeks = next(greek_rows) if greek_rows is not None else None
        kind = kinds[i]
        if kind in _OPTION_KINDS:
            obj["expiry"] = expiries[i]
            obj["strike"] = strikes[i]
            obj["type"] = _TYPE_NAME[kind]
            if greeks is not None:
                obj.update(zip(greek_names, greeks, strict=True))
        elif kind in _NAMED_KINDS:
            obj["type"] = _TYPE_NAME[kind]
            if expiries[i]:
                obj["expiry"] = expiries[i]
        out.append(obj)
    return out


def bar_objects(bars: np.ndarray, index: InstrumentIndex | None = None) -> list[dict[str, Any]]:
    n = len(bars)
    if n == 0:
        return []
    cols: list[tuple[str, list]] = [("token", bars["instrument_token"].tolist())]
    if index is not None and len(index):
        pos = index.positions(bars["instrument_token"])
        known = pos >= 0
        safe = np.where(known, pos, 0)
        cols.append(("symbol", np.where(known, index.tradingsymbol[safe], None).tolist()))
    cols += [(name, bars[name].tolist()) for name in _BAR_INTS]
    cols += [(name, float_list(bars[name])) for name in _BAR_FLOATS]
    cols += [(name, float_list(bars[name])) for name in GREEK_FIELDS if name in bars.dtype.names]
    if "mid_iv" in bars.dtype.names:
        cols += freshness_columns(bars)
    if "correction" in bars.dtype.names:
        cols.append(("correction", (bars["correction"] != 0).tolist()))
    names = [name for name, _ in cols]
    return [dict(zip(names, row, strict=True)) for row in zip(*(c for _, c in cols), strict=True)]


def bar_messages(channels: Channels, underlying: str, bars: np.ndarray, index: InstrumentIndex | None = None
                 ) -> list[tuple[str, str]]:
    """[(channel, message JSON)] — one per timeframe present, in interval order."""
    out = []
    for interval in np.unique(bars["interval_s"]).tolist():
        chunk = bars[bars["interval_s"] == interval]
        payload = {"schema_version": SCHEMA_VERSION, "underlying": underlying, "timeframe": label_of(interval),
                   "interval_s": interval,
                   "bars": bar_objects(chunk, index)}
        out.append((channels.bars(interval, underlying), dumps(payload)))
    return out


def _row_messages(rows: np.ndarray, underlying: str, channel_of: Callable[[dict[str, Any]], str]) -> list[tuple[str, str]]:
    """[(channel, message JSON)] — one per rollup row, in row order, with its timeframe and the schema version."""
    out = []
    for row in row_dicts(rows):
        row["underlying"] = row["underlying"] or underlying
        row["timeframe"] = label_of(row["interval_s"])
        row["schema_version"] = SCHEMA_VERSION
        out.append((channel_of(row), dumps(row)))
    return out


def chain_messages(channels: Channels, underlying: str, chain_rows: np.ndarray) -> list[tuple[str, str]]:
    """One message per chain row (``pipeline.records.rollups.CHAIN_BAR_DTYPE``) on ``chain:<underlying>:<expiry>``."""
    return _row_messages(chain_rows, underlying, lambda row: channels.chain(row["underlying"], row["expiry"]))


def vix_messages(channels: Channels, underlying: str, rows: np.ndarray) -> list[tuple[str, str]]:
    """One message per volatility index row (``VOL_INDEX_DTYPE``) on ``vix:<underlying>``."""
    return _row_messages(rows, underlying, lambda row: channels.vix(row["underlying"]))
