"""Bar arithmetic: OHLC/volume/OI/VWAP bars per instrument, bucketed by exchange time.

Pure core: no I/O and no wall clock. Time enters only through the ticks'
``exchange_ts`` (the event time), so a replay gives the same bars as the live
run. Definitions are those of DESIGN.md:

- bucket: ``exchange_ts // interval_s * interval_s`` (epoch seconds, the start
  of the interval; epoch-aligned, so 09:15 IST starts a 1/5/15-minute bucket).
- order inside a bucket: ``(exchange_ts, recv_ts)``.
- open/high/low/close: of ``last_price`` over the bucket's ticks.
- volume: cumulative day volume at the bucket's last tick minus that at the
  previous bucket's last tick (first bucket of an instrument: minus its first
  tick's cumulative volume).
- oi: at the bucket's last tick; oi_open/oi_high/oi_low over the bucket.
- vwap: sum(last_price * volume increment) / sum(increments); NaN when the
  bar's volume is 0.
- tick_count: ticks seen in the bucket (duplicates excluded).

``BAR_DTYPE`` is the record handed to sinks and put on the ``bars`` topic.
``last_recv_ts`` (epoch microseconds of the newest tick in the bar) versions a
bar: a late tick re-emits the bar with a newer ``last_recv_ts`` and the sink
keeps the newest version.
"""

from __future__ import annotations

import numpy as np

from pipeline.columnar import decode_batch, encode_batch
from pipeline.tick_batch import GREEK_FIELDS

BAR_DTYPE = np.dtype(
    [
        ("instrument_token", "<u4"),
        ("interval_s", "<i4"),
        ("bucket", "<i8"),
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<i8"),
        ("oi", "<i8"),
        ("oi_open", "<i8"),
        ("oi_high", "<i8"),
        ("oi_low", "<i8"),
        ("vwap", "<f8"),
        ("tick_count", "<i4"),
        ("last_recv_ts", "<i8"),
    ]
    + [(name, "<f8") for name in GREEK_FIELDS]
)

KIND_BARS = 3


def encode_bars(underlying: str, bars: np.ndarray) -> bytes:
    """Serialise a ``BAR_DTYPE`` array for the ``bars`` topic."""
    return encode_batch(KIND_BARS, underlying, bars, BAR_DTYPE)


def decode_bars(payload: bytes) -> tuple[str, np.ndarray]:
    """Return ``(underlying, bars)``; raises ``BatchFormatError`` on a bad payload."""
    _, underlying, bars = decode_batch(payload, {KIND_BARS: BAR_DTYPE})
    return underlying, bars
