"""Receive stamping: decoded Kite packets -> tick records with a strictly increasing receive time.

The receive time (epoch microseconds) doubles as the receive sequence that
orders ticks inside a second and detects at-least-once redeliveries
downstream, so it must never repeat, across all connections of one ingestor.
"""

from __future__ import annotations

import numpy as np

from pipeline.records.ticks import TICK_DTYPE


class ReceiveClock:
    """Receive timestamps in epoch microseconds, strictly increasing across all connections."""

    def __init__(self) -> None:
        self._last = 0

    def stamp(self, n: int, now_us: int) -> np.ndarray:
        start = max(now_us, self._last + 1)
        self._last = start + n - 1
        return np.arange(start, start + n, dtype=np.int64)


def ticks_from_kite(decoded: np.ndarray, recv_ts: np.ndarray, fallback_exchange_ts: int = 0) -> np.ndarray:
    """Kite codec rows (``pipeline.feed.kite_codec`` dtype) -> ``TICK_DTYPE``, stamped with ``recv_ts``.

    ``recv_ts``: epoch microseconds per row (strictly increasing). Packets
    without an exchange timestamp (ltp/quote mode, or 0 on the wire) take the
    newest exchange timestamp of the same frame, else ``fallback_exchange_ts``
    (the caller's last seen exchange time), else the receive second. Never the
    wall clock when any exchange time is known: with a sped-up or replayed feed
    the receive second would be far from exchange time and would move the bar
    watermark. Best bid/ask are depth level 0 where the packet has depth (full
    mode, a positive quantity), NaN otherwise.
    """
    out = np.empty(len(decoded), dtype=TICK_DTYPE)
    out["instrument_token"] = decoded["instrument_token"]
    out["mode"] = decoded["mode"]
    out["recv_ts"] = recv_ts
    exchange_ts = decoded["exchange_timestamp"].astype(np.int64)
    known = exchange_ts > 0
    if known.any():
        fallback = exchange_ts[known].max()
    elif fallback_exchange_ts > 0:
        fallback = fallback_exchange_ts
    else:
        fallback = recv_ts // 1_000_000
    out["exchange_ts"] = np.where(known, exchange_ts, fallback)
    out["last_price"] = decoded["last_price"]
    out["volume"] = decoded["volume_traded"]
    out["oi"] = decoded["oi"]
    out["last_trade_ts"] = decoded["last_trade_time"]
    out["bid"] = np.where(decoded["bid_quantity"][:, 0] > 0, decoded["bid_price"][:, 0], np.nan)
    out["ask"] = np.where(decoded["ask_quantity"][:, 0] > 0, decoded["ask_price"][:, 0], np.nan)
    return out
