"""`strikeflow simulate`: a local Kite-compatible market on one port.

- ``GET /?api_key=..&access_token=..`` upgrades to the market-data WebSocket
  (so ``KiteTicker(key, token, root="ws://H:P")`` connects unchanged): JSON
  ``subscribe``/``unsubscribe``/``mode`` messages, ltp/quote/full binary
  frames (``pipeline.feed.kite_codec``), a 1-byte heartbeat every second, text
  ``error``/``message`` objects.
- ``GET /instruments`` and ``/instruments/<exchange>``: the instruments master
  as Kite's CSV (Content-Type ``text/csv``), so ``KiteConnect(root=...)``
  loads it unchanged.
- ``/_sim/...``: fault injection and state for tests: ``POST /_sim/fault/<kind>`` with kind
  ``drop`` (abrupt TCP close; ``?seconds=S`` then refuses reconnects for S s), ``stall``
  (``?seconds=S`` of silence, no heartbeats), ``malformed`` (``?count=N`` truncated frames),
  ``refuse`` (``?seconds=S`` of HTTP 503 upgrades), ``message``/``error`` (``?text=..``, a
  Kite text message to every client); ``GET /_sim/state``.

Behaviour where Kite documents none (kite-protocol.md, open question 3),
chosen to be explicit and testable:
- bad api_key/access_token (only checked when ``--api-key``/``--access-token``
  are given): the upgrade is refused with HTTP 403, like Kite;
- more than ``--max-connections`` (3) open connections for one api_key: the
  upgrade is refused with HTTP 429;
- subscribing beyond ``--max-tokens`` (3000) on one connection: the tokens
  that fit are subscribed, and an ``error`` text message names the limit;
- unknown or non-integer tokens are ignored silently.

Exchange time runs ``--speed`` times faster than wall time from ``--start``
(default 09:15 IST of ``today``, the clock's date unless configured, or of the last
trading day before it); ``--rate`` is the total ticks per wall second over
all connections (``POST /_sim/rate?tps=R`` changes it while running), spread
over the subscribed instruments by their liquidity (``Market.liquidity``: a
Poisson count per instrument and market step of ``--step-ms``, so near-the-money
options tick often and far strikes rarely); ``--seed`` fixes the market. ``--replay FILE`` sends a
recorded capture (``--record FILE`` writes one) instead of the model market.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from loguru import logger

from pipeline.feed.instruments import instruments_csv
from pipeline.feed.kite_codec import decode_frame
from pipeline.feed.kite_encode import encode_frame
from pipeline.feed.kite_wire import HEARTBEAT, MODE_FULL, MODE_LTP, MODE_QUOTE
from pipeline.records.exchange_calendar import previous_trading_day
from pipeline.records.time_units import IST
from pipeline.runtime.clock import SYSTEM_CLOCK, Clock
from sim.candles import MinuteCandles
from sim.capture import CaptureWriter, read_capture
from sim.faults import FaultWindows
from sim.historical_api import HistoricalApi
from sim.market import (
    DEFAULT_UNDERLYINGS,
    Market,
    build_instruments,
    session_start_ts,
)

HEARTBEAT_S = 1.0
_MODES = {"ltp": MODE_LTP, "quote": MODE_QUOTE, "full": MODE_FULL}


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    access_token: str | None = None
    underlyings: tuple[str, ...] = ("NIFTY", "BANKNIFTY")
    expiries: int = 3
    strikes: int = 20
    speed: float = 1.0
    rate: float = 500.0
    step_s: float = 0.05  # wall seconds between market steps (each sends one or more frames per connection)
    seed: int = 1
    start: float | None = None
    today: dt.date | None = None  # the market's "today" when ``start`` is not given (default: the clock's date in IST)
    around_the_clock: bool = False  # no session hours or holidays (exchange time = wall time runs)
    max_tokens: int = 3000
    max_connections: int = 3
    drop_every_s: float = 0.0
    malformed_every: int = 0
    refuse_for_s: float = 0.0
    replay: Path | None = None
    record: Path | None = None


@dataclass(eq=False)
class Client:
    ws: web.WebSocketResponse
    api_key: str
    modes: dict[int, int] = field(default_factory=dict)  # token -> mode
    frames: int = 0
    muted_until: float = float("-inf")  # fault: until then (monotonic) data frames are not sent, heartbeats are


def _query_number(request: web.Request, name: str, default: float | None, kind: type, low: float,
                  high: float) -> Any:
    """The query parameter ``name`` as ``kind`` (int or float) within [low, high], ``default`` when absent
    (None: required); a 400 naming the parameter and the range otherwise (``inf``, ``nan``, ``abc``, ``-100``)."""
    text = request.query.get(name)
    if text is None and default is not None:
        return default
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        raise web.HTTPBadRequest(text=f"?{name}= takes a {kind.__name__} from {low:g} to {high:g}, got {text!r}")
    return value


class Simulator:
    def __init__(self, config: SimConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        start = config.start if config.start is not None else session_start_ts(self._market_day(config, clock))
        specs = [DEFAULT_UNDERLYINGS[u] for u in config.underlyings]
        self.rows = build_instruments(specs, dt.datetime.fromtimestamp(start, IST).date(), config.expiries,
                                      config.strikes)
        self.market = Market(self.rows, specs, start, seed=config.seed, around_the_clock=config.around_the_clock)
        self.start_ts = start
        self.clients: list[Client] = []
        self.known = set(self.market.tokens.tolist())
        self.faults = FaultWindows(clock, config.malformed_every)
        self.frames_sent = 0
        self.ticks_sent = 0
        self.drops = 0
        self._wall0 = clock.monotonic()
        self._rng = np.random.default_rng(config.seed + 1)
        self._tasks: list[asyncio.Task] = []
        self._recorder = CaptureWriter(config.record) if config.record else None
        self.candles = MinuteCandles()
        self.historical = HistoricalApi(self.candles, self.known, self._authorised)

    @staticmethod
    def _market_day(config: SimConfig, clock: Clock) -> dt.date:
        """``config.today``'s trading day (the last one before it on a weekend or holiday); by default the
        last session that has begun by the clock, so that at ``--speed 1`` exchange time never runs ahead of it."""
        if config.today is not None:
            return previous_trading_day(config.today)
        now = dt.datetime.fromtimestamp(clock.time(), IST)
        day = previous_trading_day(now.date())
        if day == now.date() and clock.time() < session_start_ts(day):
            day = previous_trading_day(day - dt.timedelta(days=1))
        return day

    # --- clock -------------------------------------------------------------------------------
    def exchange_now(self) -> float:
        return self.start_ts + (self.clock.monotonic() - self._wall0) * self.config.speed

    # --- HTTP --------------------------------------------------------------------------------
    def _authorised(self, api_key: str | None, token: str | None) -> bool:
        c = self.config
        return (c.api_key is None or api_key == c.api_key) and (c.access_token is None or token == c.access_token)

    async def instruments(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key, _, token = auth.removeprefix("token ").partition(":")
        if not self._authorised(key or None, token or None):
            return web.json_response({"status": "error", "message": "Incorrect `api_key` or `access_token`.",
                                      "error_type": "TokenException", "data": None}, status=403)
        exchange = request.match_info.get("exchange")
        rows = [r for r in self.rows if exchange is None or r["exchange"] == exchange.upper()]
        return web.Response(text=instruments_csv(rows), content_type="text/csv")

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(text="strikeflow Kite simulator: connect a WebSocket here\n")
        api_key = request.query.get("api_key", "")
        if not self._authorised(api_key, request.query.get("access_token")):
            raise web.HTTPForbidden(text="Forbidden")
        if self.faults.refusing():
            raise web.HTTPServiceUnavailable(text="simulator: refusing reconnects (fault injection)")
        if sum(1 for c in self.clients if c.api_key == api_key) >= self.config.max_connections:
            raise web.HTTPTooManyRequests(text=f"Maximum {self.config.max_connections} connections per api_key")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        client = Client(ws, api_key)
        self.clients.append(client)
        logger.info("client connected (api_key {}), {} connection(s) open", api_key, len(self.clients))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(client, msg.data)
        finally:
            if client in self.clients:
                self.clients.remove(client)
            logger.info("client disconnected (api_key {})", api_key)
        return ws

    async def _on_text(self, client: Client, text: str) -> None:
        try:
            message = json.loads(text)
            action, value = message["a"], message["v"]
        except (ValueError, KeyError, TypeError):
            return  # like Kite: a message it cannot read is ignored
        if action == "subscribe" and isinstance(value, list):
            new = [t for t in value if type(t) is int and t in self.known and t not in client.modes]
            room = self.config.max_tokens - len(client.modes)
            if len(new) > room:
                await client.ws.send_str(json.dumps({"type": "error", "data": (
                    f"Maximum subscription limit of {self.config.max_tokens} instruments per connection exceeded; "
                    f"{len(new) - max(room, 0)} not subscribed")}))
                new = new[:max(room, 0)]
            for token in new:
                client.modes[token] = MODE_QUOTE
            await self._send_snapshot(client, new)
        elif action == "unsubscribe" and isinstance(value, list):
            for token in value:
                client.modes.pop(token, None)
        elif action == "mode" and isinstance(value, list) and len(value) == 2 and value[0] in _MODES:
            mode = _MODES[value[0]]
            changed = [t for t in value[1] if type(t) is int and t in client.modes]
            for token in changed:
                client.modes[token] = mode
            await self._send_snapshot(client, changed)

    async def _send_snapshot(self, client: Client, tokens: list[int]) -> None:
        """After a subscribe/mode change Kite first sends the instrument's current state."""
        if tokens and self.config.replay is None:
            pos = self.market.positions(np.array(tokens, dtype=np.uint32))
            modes = np.array([client.modes[t] for t in tokens], dtype=np.uint8)
            await self._send(client, encode_frame(self.market.snapshot(pos, modes)))

    def mute(self, seconds: float, index: int = 0) -> bool:
        """Fault: the ``index``-th connected client gets heartbeats but no data for ``seconds`` (the socket
        stays open: Kite's feed at high subscription counts); False when there is no such client."""
        if not 0 <= index < len(self.clients):
            return False
        self.clients[index].muted_until = self.clock.monotonic() + seconds
        return True

    async def _send(self, client: Client, frame: bytes) -> None:
        if self.clock.monotonic() < client.muted_until:
            return
        frame = self.faults.corrupt(frame, self.frames_sent + 1)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await client.ws.send_bytes(frame)
            client.frames += 1
            self.frames_sent += 1

    # --- market loop ---------------------------------------------------------------------------
    async def _market_loop(self) -> None:
        step = self.config.step_s
        next_at = self.clock.monotonic()
        while True:
            next_at += step
            await asyncio.sleep(max(next_at - self.clock.monotonic(), 0.0))
            if self.clock.monotonic() - next_at > 1.0:  # far behind (a stall of the host): don't burst to catch up
                next_at = self.clock.monotonic()
            if self.faults.stalled():
                continue
            self.market.advance(self.exchange_now())
            subscribed = [(c, np.fromiter(c.modes.keys(), dtype=np.uint32, count=len(c.modes)))
                          for c in list(self.clients) if c.modes]
            if not subscribed:
                continue
            weights = [self.market.liquidity[self.market.positions(tokens)] for _, tokens in subscribed]
            total = sum(float(w.sum()) for w in weights)
            if total <= 0:
                continue  # outside the session: the feed is quiet (heartbeats only)
            for (client, tokens), weight in zip(subscribed, weights, strict=True):
                # ticks of each instrument this step: Poisson at its share of the rate; one frame per round,
                # so an instrument appears at most once per frame
                counts = self._rng.poisson(self.config.rate * step * weight / total)
                while counts.any():
                    await self._send_ticks(client, tokens[counts > 0])
                    counts = np.maximum(counts - 1, 0)

    def set_rate(self, rate: float) -> None:
        """Change the total tick rate (ticks per wall second over all connections) while running."""
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.config.rate = rate
        logger.info("simulator rate set to {} ticks/s", rate)

    async def _send_ticks(self, client: Client, tokens: np.ndarray) -> None:
        """Let ``tokens`` tick now (trades or quote moves) and send their state to ``client`` in its modes,
        one frame."""
        pos = self.market.positions(tokens)
        m = self.market
        traded = np.union1d(m.tick(pos), pos[m.is_index[pos]])  # an index "trades" its value, quantity 0
        index = m.is_index[traded]
        self.candles.add(m.now, m.tokens[traded], np.where(index, m.price[traded], m.last_trade_price[traded]),
                         np.where(index, 0, m.last_qty[traded]), m.oi[traded])
        modes = np.array([client.modes[int(t)] for t in tokens], dtype=np.uint8)
        ticks = self.market.snapshot(pos, modes)
        frame = encode_frame(ticks)
        self._record(frame)
        self.ticks_sent += len(ticks)
        await self._send(client, frame)

    async def _replay_loop(self, path: Path) -> None:
        """Send a capture's frames at their recorded exchange-time pace (scaled by ``--speed``),
        each client only the packets of tokens it subscribed, in the mode of the capture."""
        data = path.read_bytes()
        while not any(c.modes for c in self.clients):  # start when someone listens
            await asyncio.sleep(0.05)
        t0 = self.clock.monotonic()
        for at_us, frame in read_capture(data):
            wait = t0 + at_us / 1e6 / self.config.speed - self.clock.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            ticks = decode_frame(frame)
            for client in list(self.clients):
                mine = ticks[np.isin(ticks["instrument_token"], np.fromiter(client.modes, np.uint32))]
                if len(mine):
                    self.ticks_sent += len(mine)
                    await self._send(client, encode_frame(mine))
        logger.info("replay of {} finished", path)

    def _record(self, frame: bytes) -> None:
        if self._recorder is not None:
            self._recorder.write(frame, self.exchange_now())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self.faults.stalled():
                continue
            for client in list(self.clients):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.ws.send_bytes(HEARTBEAT)

    async def _drop_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.drop_every_s)
            self.drop(self.config.refuse_for_s)

    # --- faults --------------------------------------------------------------------------------
    def drop(self, refuse_for_s: float = 0.0) -> int:
        """Drop every connection abruptly (TCP close, no close frame), like a network failure."""
        dropped = 0
        for client in list(self.clients):
            transport = client.ws._req.transport if client.ws._req is not None else None  # noqa: SLF001
            if transport is not None:
                transport.abort()
                dropped += 1
            self.clients.remove(client)
        self.drops += dropped
        if refuse_for_s > 0:
            self.faults.refuse(refuse_for_s)
        logger.warning("fault injection: dropped {} connection(s){}", dropped,
                       f", refusing reconnects for {refuse_for_s:.1f}s" if refuse_for_s else "")
        return dropped

    async def broadcast_text(self, kind: str, text: str) -> int:
        """Send Kite's text message ``{"type": kind, "data": text}`` (``message`` or ``error``) to every client."""
        sent = 0
        for client in list(self.clients):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.ws.send_str(json.dumps({"type": kind, "data": text}))
                sent += 1
        return sent

    def state(self) -> dict:
        return {
            "exchange_time": self.exchange_now(),
            "connections": [{"api_key": c.api_key, "subscribed": len(c.modes), "frames": c.frames,
                             "modes": {str(m): sum(1 for v in c.modes.values() if v == m) for m in (1, 2, 3)}}
                            for c in self.clients],
            "subscribed_tokens": sorted({t for c in self.clients for t in c.modes}),
            "frames_sent": self.frames_sent, "ticks_sent": self.ticks_sent, "drops": self.drops,
            "rate": self.config.rate,
        }

    def build_app(self) -> web.Application:
        async def fault(request: web.Request) -> web.Response:
            kind = request.match_info["kind"]
            seconds = _query_number(request, "seconds", 0.0, float, 0.0, 86_400.0)
            if kind == "drop":
                return web.json_response({"dropped": self.drop(seconds)})
            if kind == "stall":
                self.faults.stall(seconds)
            elif kind == "malformed":
                self.faults.malform(_query_number(request, "count", 1, int, 0, 1_000_000))
            elif kind == "refuse":
                self.faults.refuse(seconds)
            elif kind == "mute":
                return web.json_response({"muted": self.mute(seconds, _query_number(request, "client", 0, int, 0, 10_000))})
            elif kind in ("message", "error"):
                await self.broadcast_text(kind, request.query.get("text", "simulator notice"))
            else:
                raise web.HTTPNotFound(text=f"unknown fault {kind}")
            return web.json_response({"ok": True})

        async def state(request: web.Request) -> web.Response:
            return web.json_response(self.state())

        async def rate(request: web.Request) -> web.Response:
            self.set_rate(_query_number(request, "tps", None, float, 1e-6, 10_000_000.0))
            return web.json_response({"rate": self.config.rate})

        app = web.Application()
        app.add_routes([
            web.get("/", self.websocket),
            web.get("/instruments", self.instruments),
            web.get("/instruments/{exchange}", self.instruments),
            web.post("/_sim/fault/{kind}", fault),
            web.get(*self.historical.route()),
            web.get("/_sim/state", state),
            web.post("/_sim/rate", rate),
        ])
        app.on_startup.append(self._start_loops)
        app.on_shutdown.append(self._stop_loops)
        return app

    async def _start_loops(self, app: web.Application) -> None:
        loops = [self._heartbeat_loop()]
        loops.append(self._replay_loop(self.config.replay) if self.config.replay else self._market_loop())
        if self.config.drop_every_s > 0:
            loops.append(self._drop_loop())
        self._tasks = [asyncio.create_task(c) for c in loops]

    async def _stop_loops(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in list(self.clients):
            await client.ws.close()
        if self._recorder is not None:
            self._recorder.close()


async def serve(config: SimConfig) -> tuple[Simulator, web.AppRunner, int]:
    """Start the simulator; returns it, its runner (``await runner.cleanup()`` stops it) and the bound port."""
    sim = Simulator(config)
    runner = web.AppRunner(sim.build_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1]
    return sim, runner, port
