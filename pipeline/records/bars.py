"""Bar records: the rows on the Kafka ``bars`` topic and in the ``bars_*`` tables.

One row per (instrument, interval, bucket). Units: ``bucket`` epoch seconds
(the start of the interval), ``interval_s`` seconds, prices rupees, volume and
OI contracts, ``last_recv_ts`` epoch microseconds of the newest tick the bar
is computed from (it versions a bar: a late correction carries a newer one);
``correction`` is 1 on a re-emission of a bar already emitted, 0 on its close.
Greeks and freshness fields (``CLOSE_FIELDS``) at the close as in ``pipeline.records.ticks``. How every column is
computed: ``pipeline.core.bars``.
"""

from __future__ import annotations

import numpy as np

from pipeline.records.columnar import decode_batch, encode_batch
from pipeline.records.kinds import RecordKind
from pipeline.records.ticks import CLOSE_FIELDS

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
    + [(name, "<f8") for name in CLOSE_FIELDS]
    # 1 when the row re-emits a bar already emitted (a late tick, or its volume baseline moved); 0 for a close
    + [("correction", "u1")]
)

#: One historical minute candle (Kite's historical API, ``oi=1``): ``bucket`` the minute's start, epoch s;
#: open/high/low/close of the minute's trades (rupees); volume traded in the minute and OI at its end.
CANDLE_DTYPE = np.dtype([("instrument_token", "<u4"), ("bucket", "<i8"), ("open", "<f8"), ("high", "<f8"),
                         ("low", "<f8"), ("close", "<f8"), ("volume", "<i8"), ("oi", "<i8")])
# One instrument's span [since, until) (epoch s) whose minutes Kite's historical API has answered: the backfill's
# ledger (table ``backfill_checked``).
CHECKED_DTYPE = np.dtype([("instrument_token", "i8"), ("since", "i8"), ("until", "i8")])

def encode_bars(underlying: str, bars: np.ndarray) -> bytes:
    """Serialise a ``BAR_DTYPE`` array for the ``bars`` topic."""
    return encode_batch(RecordKind.BARS, underlying, bars, BAR_DTYPE)


def decode_bars(payload: bytes) -> tuple[str, np.ndarray]:
    """Return ``(underlying, bars)``; raises ``BatchFormatError`` on a bad payload."""
    _, underlying, bars = decode_batch(payload, {RecordKind.BARS: BAR_DTYPE})
    return underlying, bars


__all__ = ["BAR_DTYPE", "CANDLE_DTYPE", "CHECKED_DTYPE", "decode_bars", "encode_bars"]
