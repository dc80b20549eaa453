"""Column layouts of the tables the writer fills (pure data, no I/O).

Staged columns are ``(numpy field, staging SQL type, target column, SQL expression from staging alias s)``:
epoch seconds and microseconds travel as bigint and become ``timestamptz`` in SQL (exact, integer
arithmetic); NaN floats become NULL; the freshness codes and flags become text and booleans. Rollup and
instrument columns are ``(column, SQL type)``: they are staged as records.
"""

from __future__ import annotations

from pipeline.records.ticks import FORWARD_SOURCES, GREEK_FIELDS
from pipeline.records.time_units import label_of

TABLE_INTERVALS_S = (60, 300, 900)  # the intervals the migrations create tables for
BAR_TABLES = {interval: f"bars_{label_of(interval)}" for interval in TABLE_INTERVALS_S}

EPOCH_S_SQL = "('epoch'::timestamptz + s.{col} * interval '1 second')"
EPOCH_US_SQL = "('epoch'::timestamptz + s.{col} * interval '1 microsecond')"
FLOAT_SQL = "NULLIF(s.{col}, 'NaN'::float8)"
_FLAG = "CASE WHEN s.{col} = 'NaN'::float8 THEN NULL ELSE s.{col} <> 0 END"
_SOURCE = f"CASE s.forward_source {' '.join(f'WHEN {c} THEN {n!r}' for c, n in FORWARD_SOURCES.items())} END"
_FRESHNESS_COLUMNS = [  # pipeline.records.ticks: mid_iv a float, forward_source text, the flags boolean
    ("mid_iv", "float8", "mid_iv", FLOAT_SQL.format(col="mid_iv")),
    ("forward_source", "float8", "forward_source", _SOURCE),
    ("stale", "float8", "stale", _FLAG.format(col="stale")),
    ("near_expiry", "float8", "near_expiry", _FLAG.format(col="near_expiry")),
]

# Staging tables: (numpy column, staging SQL type, target column, SQL expression from staging alias s).
BAR_COLUMNS = [
    ("instrument_token", "bigint", "instrument_token", "s.instrument_token"),
    ("bucket", "bigint", "bucket", EPOCH_S_SQL.format(col="bucket")),
    *[(c, "float8", c, FLOAT_SQL.format(col=c)) for c in ("open", "high", "low", "close")],
    *[(c, "bigint", c, f"s.{c}") for c in ("volume", "oi", "oi_open", "oi_high", "oi_low")],
    ("vwap", "float8", "vwap", FLOAT_SQL.format(col="vwap")),
    ("tick_count", "integer", "tick_count", "s.tick_count"),
    *[(c, "float8", c, FLOAT_SQL.format(col=c)) for c in GREEK_FIELDS],
    *_FRESHNESS_COLUMNS,
    ("last_recv_ts", "bigint", "last_recv_ts", EPOCH_US_SQL.format(col="last_recv_ts")),
]

TICK_COLUMNS = [
    ("exchange_ts", "bigint", "exchange_ts", EPOCH_S_SQL.format(col="exchange_ts")),
    ("recv_ts", "bigint", "recv_ts", EPOCH_US_SQL.format(col="recv_ts")),
    ("instrument_token", "bigint", "instrument_token", "s.instrument_token"),
    ("last_price", "float8", "last_price", FLOAT_SQL.format(col="last_price")),
    ("volume", "bigint", "volume", "s.volume"),
    ("oi", "bigint", "oi", "s.oi"),
    ("bid", "float8", "bid", FLOAT_SQL.format(col="bid")),
    ("ask", "float8", "ask", FLOAT_SQL.format(col="ask")),
    ("last_trade_ts", "bigint", "last_trade_ts", f"CASE WHEN s.last_trade_ts > 0 THEN {EPOCH_S_SQL.format(col='last_trade_ts')} END"),
    *[(c, "float8", c, FLOAT_SQL.format(col=c)) for c in GREEK_FIELDS],
    *_FRESHNESS_COLUMNS,
    ("record_recv_ts", "bigint", "record_recv_ts", EPOCH_US_SQL.format(col="record_recv_ts")),
]

INSTRUMENT_COLUMNS = [
    ("instrument_token", "bigint"),
    ("exchange_token", "text"),
    ("tradingsymbol", "text"),
    ("name", "text"),
    ("expiry", "date"),
    ("strike", "float8"),
    ("tick_size", "float8"),
    ("lot_size", "integer"),
    ("instrument_type", "text"),
    ("segment", "text"),
    ("exchange", "text"),
    ("last_price", "float8"),
]

_SIDE = [("close", "float8"), ("volume", "bigint"), ("oi", "bigint"), ("oi_change", "bigint"),
         ("iv", "float8"), ("delta", "float8"), ("mid_iv", "float8"), ("gex", "float8"), ("buildup", "text")]
STRIKE_COLUMNS = [
    ("underlying", "text"), ("expiry", "date"), ("strike", "float8"), ("bucket", "timestamptz"),
    ("forward", "float8"),
    *[(f"call_{n}", t) for n, t in _SIDE],
    *[(f"put_{n}", t) for n, t in _SIDE],
    ("last_recv_ts", "timestamptz"),
]
CHAIN_COLUMNS = [
    ("underlying", "text"), ("expiry", "date"), ("bucket", "timestamptz"),
    ("total_call_oi", "bigint"), ("total_put_oi", "bigint"), ("pcr", "float8"), ("max_pain", "float8"),
    ("atm_strike", "float8"), ("atm_iv", "float8"), ("forward", "float8"),
    ("call_volume", "bigint"), ("put_volume", "bigint"), ("strikes_listed", "bigint"), ("strikes_covered", "bigint"),
    ("rr25", "float8"), ("bf25", "float8"), ("gex", "float8"), ("gex_flip", "float8"),
    ("parity_violations", "bigint"), ("crossed_quotes", "bigint"), ("butterfly_violations", "bigint"),
    ("strikes_quoted", "bigint"),
    ("last_recv_ts", "timestamptz"),
]
VOL_INDEX_COLUMNS = [
    ("underlying", "text"), ("bucket", "timestamptz"), ("vix", "float8"), ("near_expiry", "date"),
    ("next_expiry", "date"), ("near_variance", "float8"), ("next_variance", "float8"), ("forward_near", "float8"),
    ("forward_next", "float8"), ("strikes_used_near", "bigint"), ("strikes_used_next", "bigint"),
    ("last_recv_ts", "timestamptz"),
]
