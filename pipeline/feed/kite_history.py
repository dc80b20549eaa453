"""Kite's historical candles through ``kiteconnect`` (``KiteConnect.historical_data``), within its rate limit.

Kite answers ``minute`` candles for at most 60 days per request and allows 3 historical requests per
second per API key; ``HistoricalCandles`` splits a range into such windows and spaces its requests
at least ``1.1 / rate_per_s`` apart (arrival times jitter; a client that exceeds the limit gets
HTTP 429 and loses the request: then it waits a second and tries again, ``THROTTLE_RETRIES`` times). Times: epoch seconds in, ``from``/``to`` sent as IST wall times (Kite's convention),
candles back as ``CANDLE_DTYPE`` (``pipeline.records.bars``). Every failure is one
``HistoricalError`` naming the instrument and Kite's message, never the access token.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import numpy as np
from kiteconnect import KiteConnect
from kiteconnect.exceptions import KiteException, NetworkException
from requests.exceptions import RequestException

from pipeline.records.bars import CANDLE_DTYPE
from pipeline.records.time_units import IST
from pipeline.runtime.redaction import redact_url

MAX_WINDOW_S = 60 * 86_400  # Kite: minute candles for at most 60 days per request
RATE_PER_S = 3.0
THROTTLE_RETRIES = 3


class HistoricalError(Exception):
    """A historical request failed: one line naming the instrument and the reason."""


def _ist(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, IST).strftime("%Y-%m-%d %H:%M:%S")


class HistoricalCandles:
    """Minute candles of one Kite account (or the simulator's endpoint at ``api_url``)."""

    def __init__(self, api_key: str, access_token: str, api_url: str, rate_per_s: float = RATE_PER_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.kite = KiteConnect(api_key, access_token=access_token, root=api_url)
        self.api_url = api_url
        self.spacing_s = 1.1 / rate_per_s  # 10 % margin: Kite counts arrivals, which jitter
        self.clock, self.sleep = clock, sleep
        self.requests = 0
        self.throttled = 0  # requests Kite answered 429 (retried)
        self._next_at = float("-inf")

    def _wait_turn(self) -> None:
        now = self.clock()
        if now < self._next_at:
            self.sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + self.spacing_s

    def minute_candles(self, token: int, since: float, until: float) -> np.ndarray:
        """The instrument's minute candles with minute start in [since, until) (epoch s)."""
        parts, start = [], float(since)
        while start < until:
            end = min(start + MAX_WINDOW_S, float(until))
            parts.append(self._window(int(token), start, end - 1))  # Kite's "to" is inclusive
            start = end
        out = np.concatenate(parts) if parts else np.empty(0, CANDLE_DTYPE)
        return out[(out["bucket"] >= since) & (out["bucket"] < until)]

    def _request(self, token: int, since: float, until: float) -> list[dict]:
        for attempt in range(THROTTLE_RETRIES + 1):
            self._wait_turn()
            self.requests += 1
            try:
                return self.kite.historical_data(token, _ist(since), _ist(until), "minute", oi=True)
            except NetworkException as exc:
                if "too many requests" not in str(exc).lower() or attempt == THROTTLE_RETRIES:
                    raise
                self.throttled += 1
                self._next_at = self.clock() + 1.0
        raise AssertionError("unreachable")

    def _window(self, token: int, since: float, until: float) -> np.ndarray:
        try:
            rows = self._request(token, since, until)
        except KiteException as exc:
            raise HistoricalError(f"instrument {token}: Kite refused the historical request "
                                  f"({type(exc).__name__}: {exc})") from None
        except (RequestException, OSError) as exc:
            raise HistoricalError(f"instrument {token}: cannot reach Kite's API at {redact_url(self.api_url)} "
                                  f"({type(exc).__name__})") from None
        out = np.zeros(len(rows), CANDLE_DTYPE)
        out["instrument_token"] = token
        out["bucket"] = [int(r["date"].timestamp()) for r in rows]
        for name in ("open", "high", "low", "close", "volume"):
            out[name] = [r[name] for r in rows]
        out["oi"] = [r.get("oi", 0) for r in rows]
        return out
