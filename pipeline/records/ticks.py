"""Tick batches: the records on the Kafka ``ticks`` topic.

One record = the ticks of one underlying from one WebSocket frame, keyed by
the underlying (``NIFTY``, ``BANKNIFTY``), as one numpy structured array.

Units and conventions (every field, little-endian):

- ``instrument_token``: Kite instrument token.
- ``exchange_ts``: exchange timestamp, epoch **seconds** (UTC-based). Packets
  without one (ltp/quote mode) carry the receive time truncated to seconds.
- ``recv_ts``: receive time, epoch **microseconds**, strictly increasing in
  receive order within one ingestor process. It doubles as the receive
  sequence: ticks with equal ``exchange_ts`` are ordered by it, and a tick
  whose ``recv_ts`` is not newer than the last one processed for its
  instrument is a duplicate (at-least-once redelivery) and is dropped.
- ``last_price``, ``bid``, ``ask``: rupees (already divided by the segment
  divisor); ``bid``/``ask`` are the best depth level, NaN when unknown.
- ``volume``: cumulative traded volume of the day (contracts/shares).
- ``oi``: open interest (contracts), 0 when the mode carries none.
- ``mode``: 1 ltp, 2 quote, 3 full (as ``pipeline.feed.kite_codec``).
- ``last_trade_ts``: exchange time of the instrument's last trade, epoch
  **seconds** (Kite's "last trade time", full mode only); 0 when unknown.

``PRICED_TICK_DTYPE`` adds what the process agent computes for options
(NaN otherwise): ``forward`` (rupees), ``iv`` (annualised, 0.15 = 15 %),
``delta``/``gamma`` (w.r.t. the forward), ``theta`` (rupees per calendar
day), ``vega`` (rupees per volatility point, 0.01), ``rho`` (rupees per
percentage point of r, the forward held fixed), ``spot_delta`` (with respect to
the index, F = S e^{rt}: ``delta * e^{rt}``, N(d1) for a call, N(d1) - 1 for a
put: what broker screens call delta).

It also adds what the freshness rules of docs/design.md ("Fresh", "IV") decide,
in ``CLOSE_FIELDS`` after the Greeks: ``mid_iv`` (the IV of the mid of best
bid and ask, NaN when not two-sided, too wide or not fresh),
``forward_source`` (``FORWARD_SOURCES`` code: 1 future, 2 parity, 3 carry;
NaN when no forward), ``stale`` (1.0 when the option's last trade is older
than the freshness age, else 0.0) and ``near_expiry`` (1.0 in the last
minutes before 15:30 IST on expiry day). The codes and flags are held as
float64 so that every field a bar takes from its last tick travels as one float
matrix (``pipeline.core.bars``); the sinks turn them into text and booleans.
"""

from __future__ import annotations

import numpy as np

from pipeline.records.columnar import BatchFormatError, decode_batch, encode_batch
from pipeline.records.kinds import RecordKind

#: ``mode`` values (Kite's subscription modes; only full mode carries depth, OI and the last trade time).
MODE_LTP, MODE_QUOTE, MODE_FULL = 1, 2, 3

TICK_DTYPE = np.dtype(
    [
        ("instrument_token", "<u4"),
        ("mode", "u1"),
        ("exchange_ts", "<i8"),
        ("recv_ts", "<i8"),
        ("last_price", "<f8"),
        ("volume", "<i8"),
        ("oi", "<i8"),
        ("bid", "<f8"),
        ("ask", "<f8"),
        ("last_trade_ts", "<i8"),
    ]
)

GREEK_FIELDS = ("forward", "iv", "delta", "gamma", "theta", "vega", "rho", "spot_delta")

#: Float codes of ``forward_source`` (docs/design.md "Pricing model": which forward priced the option).
FORWARD_SOURCES = {1: "future", 2: "parity", 3: "carry"}
FORWARD_FUTURE, FORWARD_PARITY, FORWARD_CARRY = 1.0, 2.0, 3.0

#: What a bar takes from its last tick: the Greeks, then the freshness fields.
CLOSE_FIELDS = (*GREEK_FIELDS, "mid_iv", "forward_source", "stale", "near_expiry")

PRICED_TICK_DTYPE = np.dtype(TICK_DTYPE.descr + [(name, "<f8") for name in CLOSE_FIELDS])

# A clock record on the ``ticks`` topic: no tick, only "the exchange clock of this underlying has reached
# ``exchange_ts``" (epoch seconds), sent by the ingestor while an underlying is quiet, so bars close on time.
CLOCK_DTYPE = np.dtype([("exchange_ts", "<i8")])


def encode_ticks(underlying: str, ticks: np.ndarray) -> bytes:
    """Serialise a ``TICK_DTYPE`` array for the ``ticks`` topic."""
    return encode_batch(RecordKind.TICKS, underlying, ticks, TICK_DTYPE)


def decode_ticks(payload: bytes) -> tuple[str, np.ndarray]:
    """Return ``(underlying, ticks)``; raises ``BatchFormatError`` on a bad payload."""
    _, underlying, ticks = decode_batch(payload, {RecordKind.TICKS: TICK_DTYPE})
    return underlying, ticks


def implausible_future(ticks: np.ndarray, max_skew_s: float) -> np.ndarray:
    """Mask of ``ticks`` (``TICK_DTYPE`` or priced) whose exchange time (s) is more than ``max_skew_s`` ahead of
    their receive time (µs): a clock that far off is a broken or hostile feed, and such a tick would move the
    event-time watermark past every tick after it."""
    return ticks["exchange_ts"].astype(np.float64) > ticks["recv_ts"].astype(np.float64) / 1e6 + max_skew_s


def encode_clock(underlying: str, exchange_ts: int) -> bytes:
    """A clock record for the ``ticks`` topic (see ``CLOCK_DTYPE``)."""
    return encode_batch(RecordKind.CLOCK, underlying, np.array([(int(exchange_ts),)], CLOCK_DTYPE), CLOCK_DTYPE)


def decode_ticks_record(payload: bytes) -> tuple[str, np.ndarray, int | None]:
    """A ``ticks`` topic record: ``(underlying, ticks, None)``, or ``(underlying, no ticks, exchange_ts)``
    for a clock record; ``BatchFormatError`` on anything else."""
    kind, underlying, rows = decode_batch(payload, {RecordKind.TICKS: TICK_DTYPE, RecordKind.CLOCK: CLOCK_DTYPE})
    if kind == RecordKind.CLOCK:
        if len(rows) != 1:
            raise BatchFormatError(f"a clock record holds one row, this one {len(rows)}")
        return underlying, np.empty(0, TICK_DTYPE), int(rows["exchange_ts"][0])
    return underlying, rows, None


def encode_priced_ticks(underlying: str, ticks: np.ndarray) -> bytes:
    """Serialise a ``PRICED_TICK_DTYPE`` array (the ``ticks-priced`` topic)."""
    return encode_batch(RecordKind.PRICED_TICKS, underlying, ticks, PRICED_TICK_DTYPE)


def decode_priced_ticks(payload: bytes) -> tuple[str, np.ndarray]:
    """Return ``(underlying, priced ticks)``; raises ``BatchFormatError`` on a bad payload."""
    _, underlying, ticks = decode_batch(payload, {RecordKind.PRICED_TICKS: PRICED_TICK_DTYPE})
    return underlying, ticks


def priced_ticks(ticks: np.ndarray) -> np.ndarray:
    """Copy ``ticks`` into a ``PRICED_TICK_DTYPE`` array with all ``CLOSE_FIELDS`` NaN."""
    out = np.empty(len(ticks), dtype=PRICED_TICK_DTYPE)
    for name in TICK_DTYPE.names:
        out[name] = ticks[name]
    for name in CLOSE_FIELDS:
        out[name] = np.nan
    return out


def record_starts(records: list[np.ndarray]) -> np.ndarray:
    """Per tick of the concatenated ``records`` (each the ticks of one Kafka record), the ``recv_ts`` of its
    record's first tick: what the ``ticks`` table keeps so that a replay forms the same records."""
    parts = [np.full(len(r), r["recv_ts"].min() if len(r) else 0, np.int64) for r in records]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


__all__ = [
    "CLOCK_DTYPE",
    "CLOSE_FIELDS",
    "FORWARD_CARRY",
    "FORWARD_FUTURE",
    "FORWARD_PARITY",
    "FORWARD_SOURCES",
    "GREEK_FIELDS",
    "MODE_FULL",
    "MODE_LTP",
    "MODE_QUOTE",
    "PRICED_TICK_DTYPE",
    "TICK_DTYPE",
    "decode_priced_ticks",
    "decode_ticks",
    "decode_ticks_record",
    "encode_clock",
    "encode_priced_ticks",
    "encode_ticks",
    "implausible_future",
    "priced_ticks",
    "record_starts",
]
