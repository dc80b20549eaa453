"""Kite's historical candles endpoint on the simulator: ``GET /instruments/historical/{token}/{interval}``.

Same path, query (``from``/``to`` as ``YYYY-MM-DD HH:MM:SS`` IST, ``oi=1``), JSON shape and errors as
Kite's API (``{"status": "success", "data": {"candles": [[time, o, h, l, c, volume, oi], ...]}}``;
errors ``{"status": "error", "error_type": ..., "message": ...}`` with Kite's HTTP codes), so
``KiteConnect.historical_data`` reads it unchanged. Only ``minute`` candles; Kite's rate limit of 3
requests per second per key is enforced (HTTP 429), and counted, so a client that exceeds it shows.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web

from pipeline.records.time_units import IST
from sim.candles import MinuteCandles, kite_candle

RATE_LIMIT_PER_S = 3
_FORMAT = "%Y-%m-%d %H:%M:%S"


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"status": "error", "error_type": error_type, "message": message, "data": None},
                             status=status)


def _ist(text: str) -> float:
    return dt.datetime.strptime(text, _FORMAT).replace(tzinfo=IST).timestamp()


class HistoricalApi:
    """The endpoint over ``candles``; ``authorised(api_key, access_token)`` checks the credentials and
    ``known`` holds the tokens the simulator lists."""

    def __init__(self, candles: MinuteCandles, known: set[int], authorised: Callable[[str | None, str | None], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.candles, self.known, self.authorised, self.clock = candles, known, authorised, clock
        self.requests = 0
        self.throttled = 0
        self._recent: deque[float] = deque()

    def _over_limit(self) -> bool:
        now = self.clock()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= RATE_LIMIT_PER_S:
            return True
        self._recent.append(now)
        return False

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        key, _, token = request.headers.get("Authorization", "").removeprefix("token ").partition(":")
        if not self.authorised(key or None, token or None):
            return _error(403, "TokenException", "Incorrect `api_key` or `access_token`.")
        if self._over_limit():
            self.throttled += 1
            return _error(429, "NetworkException", "Too many requests")
        interval, raw_token = request.match_info["interval"], request.match_info["token"]
        if interval != "minute":
            return _error(400, "InputException", f"invalid interval {interval!r}: the simulator serves minute candles")
        if not raw_token.isdigit() or int(raw_token) not in self.known:
            return _error(400, "InputException", "invalid token")
        try:
            since, until = _ist(request.query.get("from", "")), _ist(request.query.get("to", ""))
        except ValueError:
            return _error(400, "InputException", f"invalid from/to: expected {_FORMAT}")
        if since > until:
            return _error(400, "InputException", "invalid range: from after to")
        with_oi = request.query.get("oi") == "1"
        candles = [kite_candle(m, c) if with_oi else kite_candle(m, c)[:6]
                   for m, c in self.candles.between(int(raw_token), since, until)]
        return web.json_response({"status": "success", "data": {"candles": candles}})

    def route(self) -> tuple[str, Callable[[web.Request], Awaitable[web.Response]]]:
        return "/instruments/historical/{token}/{interval}", self.handle
