"""The simulator's minute candles: what Kite's historical candles API answers for the simulated market.

Built from the same trades the WebSocket streams (pure: no I/O, no wall clock; time is the market's
exchange time). Kite's conventions (its "Historical candle data" docs): one candle per instrument and
minute in which it traded, labelled by the minute's start (IST); open/high/low/close of the minute's
trades, volume the quantity traded in the minute, OI at the end of the minute. An index has no trades:
its candles are its values as streamed, volume 0, OI 0.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from pipeline.records.time_units import IST

#: [open, high, low, close, volume, oi] per (minute start epoch s, token)
Candle = list[float]


class MinuteCandles:
    """Minute candles per instrument token, filled as the market trades."""

    def __init__(self) -> None:
        self._by_token: dict[int, dict[int, Candle]] = {}

    def add(self, now: float, tokens: np.ndarray, prices: np.ndarray, quantities: np.ndarray, oi: np.ndarray) -> None:
        """Trades at exchange time ``now`` (epoch s): per token its price, quantity and the OI after it."""
        minute = int(now) // 60 * 60
        for token, price, qty, open_interest in zip(tokens.tolist(), prices.tolist(), quantities.tolist(),
                                                    oi.tolist(), strict=True):
            candles = self._by_token.setdefault(int(token), {})
            candle = candles.get(minute)
            if candle is None:
                candles[minute] = [price, price, price, price, qty, open_interest]
            else:
                candle[1], candle[2] = max(candle[1], price), min(candle[2], price)
                candle[3] = price
                candle[4] += qty
                candle[5] = open_interest

    def between(self, token: int, since: float, until: float) -> list[tuple[int, Candle]]:
        """The token's candles whose minute starts in [since, until] (epoch s), oldest first."""
        candles = self._by_token.get(int(token), {})
        return [(m, candles[m]) for m in sorted(candles) if since <= m <= until]


def kite_candle(minute: int, candle: Candle) -> list:
    """One candle as Kite's JSON has it: ``["2026-12-03T09:15:00+0530", o, h, l, c, volume, oi]``."""
    stamp = dt.datetime.fromtimestamp(minute, IST).strftime("%Y-%m-%dT%H:%M:%S%z")
    o, h, low, c, volume, oi = candle
    return [stamp, o, h, low, c, int(volume), int(oi)]
