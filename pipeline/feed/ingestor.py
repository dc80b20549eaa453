"""The ingestor: Kite frames from every connection -> stamped tick batches per underlying -> producer.

Asyncio-native (aiohttp WebSocket client + our vectorised codec; no Twisted
reactor in the hot path). Per binary message: 1-byte heartbeats are counted,
frames are decoded by :class:`pipeline.feed.kite_codec.FrameDecoder` (a bad
frame is counted and skipped, never raised), stamped with strictly increasing
receive times, split by underlying and offered to the producer (never awaited
per send). Connections (``pipeline.feed.connection``) reconnect by themselves;
a rejected account's shards fail over to another account.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import numpy as np
from loguru import logger

from pipeline.feed.connection import Connection
from pipeline.feed.instruments import select_universe
from pipeline.feed.kite_codec import FrameDecoder
from pipeline.feed.kite_wire import MODE_FULL, is_heartbeat
from pipeline.feed.quiet_clock import QuietClock
from pipeline.feed.sharding import Shard, ShardingError, plan_shards, reassign
from pipeline.feed.stamping import ReceiveClock, ticks_from_kite
from pipeline.feed.tick_producer import TickProducer
from pipeline.records.exchange_calendar import previous_trading_day
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import encode_clock, encode_ticks, implausible_future
from pipeline.records.time_units import IST
from pipeline.runtime import metrics
from pipeline.runtime.health import Checks, TaskWatch
from pipeline.runtime.settings import KiteAccount, Settings


def split_by_underlying(ticks: np.ndarray, index: InstrumentIndex) -> tuple[dict[str, np.ndarray], int]:
    """Group a frame's ticks by underlying (order kept); also returns how many tokens were unknown."""
    pos = index.positions(ticks["instrument_token"])
    known = pos >= 0
    names = index.underlying[pos[known]]
    kept = ticks[known]
    groups = {str(u): kept[names == u] for u in np.unique(names)} if len(kept) else {}
    return groups, int((~known).sum())


@dataclass
class IngestStats:
    frames: int = 0
    ticks: int = 0
    heartbeats: int = 0
    reconnects: int = 0
    unknown_tokens: int = 0
    partial_packets: int = 0
    gap_seconds: float = 0.0
    clock_records: int = 0


class Ingestor:
    def __init__(self, settings: Settings, index: InstrumentIndex, shards: list[Shard],
                 accounts: Sequence[KiteAccount], producer: TickProducer, ws_url: str) -> None:
        self.settings = settings
        self.index = index
        self.shards = shards
        self.accounts = list(accounts)
        self.failed_accounts: set[int] = set()
        self.producer = producer
        self.ws_url = ws_url
        self.decoder = FrameDecoder()
        self.clock = ReceiveClock()
        self.quiet_clock = QuietClock(settings.ingest_clock_after_s)
        self.last_message_at = float("-inf")  # monotonic seconds of the newest message of any connection
        self.last_exchange_ts = 0
        self.stats = IngestStats()
        self.last_data_at: dict[str, float] = {}  # connection -> monotonic time of its last data frame
        self.stopping = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.connections = [Connection(self, s) for s in shards]
        self.tasks = TaskWatch(metrics.TASK_DEATHS)  # the connections, the quiet clock, the producer
        self._unsent: dict[str, list[np.ndarray]] = {}  # ticks held for this loop turn, per underlying
        self._flush_handle: asyncio.Handle | None = None

    def on_binary(self, connection: str, data: bytes) -> None:
        self.last_message_at = time.monotonic()
        if is_heartbeat(data):
            self.stats.heartbeats += 1
            metrics.HEARTBEATS.labels(connection).inc()
            return
        decoded = self.decoder.decode(data)
        if decoded is None:
            for reason, count in self.decoder.take_new_errors().items():
                metrics.FRAME_ERRORS.labels(reason).inc(count)
            return
        self.stats.frames += 1
        metrics.FRAMES.labels(connection).inc()
        metrics.FEED_DATA_AGE.touch(connection)
        self.last_data_at[connection] = time.monotonic()
        full = decoded["mode"] == MODE_FULL
        if not full.all():
            # Kite streams a new token in quote mode until our mode message lands; those packets
            # carry neither exchange time nor OI, which bars and pricing need: count, don't produce.
            for mode, count in zip(*np.unique(decoded["mode"][~full], return_counts=True), strict=True):
                metrics.PARTIAL_PACKETS.labels(str(mode)).inc(int(count))
            self.stats.partial_packets += int((~full).sum())
            decoded = decoded[full]
            if not len(decoded):
                return
        ticks = ticks_from_kite(decoded, self.clock.stamp(len(decoded), time.time_ns() // 1000),
                                self.last_exchange_ts)
        plausible = self._plausible(ticks)
        if plausible.any():
            self.last_exchange_ts = max(self.last_exchange_ts, int(ticks["exchange_ts"][plausible].max()))
        groups, unknown = split_by_underlying(ticks, self.index)
        self.stats.unknown_tokens += unknown
        self._coalesce(groups)
        self.quiet_clock.ticked(groups, self.last_exchange_ts, self.last_message_at)
        self.stats.ticks += len(ticks) - unknown
        metrics.TICKS_INGESTED.inc(len(ticks) - unknown)

    def _plausible(self, ticks: np.ndarray) -> np.ndarray:
        """True for the ticks whose exchange time is plausible; the others (``implausible_future``) are counted
        and logged here and never move the exchange clock sent to the worker. They still go out in their
        record: the worker rejects them before they touch any state and sends them to the dead-letter topic
        with the record's coordinates (one place decides, and nothing is silently dropped)."""
        future = implausible_future(ticks, self.settings.max_clock_skew_s)
        if future.any():
            metrics.TICKS_REJECTED.labels("ingest", "future").inc(int(future.sum()))
            logger.warning("rejected {} ticks with an exchange time more than {:.0f}s ahead of the clock (e.g. token "
                           "{} at {})", int(future.sum()), self.settings.max_clock_skew_s,
                           int(ticks["instrument_token"][future][0]), int(ticks["exchange_ts"][future][0]))
        return ~future

    def _coalesce(self, groups: dict[str, np.ndarray]) -> None:
        """Hold the ticks until the event loop's next turn, so the frames of every connection that arrived
        together make one record per underlying: fewer, larger records cost the worker (and Kafka, and
        Redis) far less per tick, for no added wait."""
        for underlying, rows in groups.items():
            self._unsent.setdefault(underlying, []).append(rows)
        if self._flush_handle is None:
            try:
                self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a direct call): produce now
                self.flush()

    def flush(self) -> None:
        """Produce the held ticks: one record per underlying, in receive order."""
        self._flush_handle = None
        unsent, self._unsent = self._unsent, {}
        for underlying, parts in unsent.items():
            rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self.producer.offer(underlying, encode_ticks(underlying, rows))

    def data_elsewhere_since(self, connection: str, since: float) -> bool:
        """Another connection received a data frame after ``since`` (monotonic): the feed is alive."""
        return any(at > since for name, at in self.last_data_at.items() if name != connection)

    def on_text(self, connection: str, data: str) -> None:
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: Kite's own client ignores it
            metrics.FRAME_ERRORS.labels("bad_text").inc()
            return
        if isinstance(message, dict) and message.get("type") == "error":
            logger.error("Kite error on {}: {}", connection, message.get("data"))
        elif isinstance(message, dict) and message.get("type") == "message":
            logger.info("Kite message on {}: {}", connection, message.get("data"))

    def feed_checks(self, checks: Checks, data_age_s: float) -> None:
        """State ``feed:<connection>`` (connected and a data frame within ``data_age_s``) and ``broker``."""
        now_mono, now = time.monotonic(), time.time()
        for conn in self.connections:
            last = self.last_data_at.get(conn.name)
            last_ok = None if last is None else now - (now_mono - last)
            if not conn.connected:
                checks.set(f"feed:{conn.name}", False, "not connected (reconnecting)", last_ok)
            elif last is None or now_mono - last > data_age_s:
                silent = "no data frame yet" if last is None else f"no data frame for {now_mono - last:.1f}s"
                checks.set(f"feed:{conn.name}", False, f"connected, {silent}", last_ok)
            else:
                checks.set(f"feed:{conn.name}", True, "", last_ok)
        checks.set("broker", *self.producer.broker_state())

    def fail_over(self, connection: Connection, reason: str = "rejected") -> bool:
        """Move a rejected account's shards elsewhere; False when nowhere to go."""
        failed = connection.shard.account
        self.failed_accounts.add(failed)
        healthy = [i for i in range(len(self.accounts)) if i not in self.failed_accounts]
        try:
            self.shards = reassign(self.shards, failed, healthy, self.settings.kite_max_connections_per_key)
        except ShardingError:
            self.failed_accounts.discard(failed)
            return False
        for conn, shard in zip(self.connections, self.shards, strict=True):
            if conn.shard.account == failed:
                logger.warning("api_key {} rejected ({}): moving {} tokens of {} to api_key {}",
                               self.accounts[failed].api_key, reason, len(shard.tokens), conn.name,
                               self.accounts[shard.account].api_key)
                conn.shard = shard
        return True

    async def run(self) -> None:
        self.http = aiohttp.ClientSession()
        try:
            names = [f"connection:{c.name}" for c in self.connections] + ["quiet-clock"]
            for connection, name in zip(self.connections, names, strict=False):
                self.tasks.supervise(connection.run, name)  # a connection task that dies is started again (counted)
            self.tasks.supervise(self._clock_loop, "quiet-clock")
            await self.stopping.wait()
            await self.tasks.wait(names)
        finally:
            self.flush()
            await self.http.close()

    def stop(self) -> None:
        self.tasks.stopping()
        self.stopping.set()

    async def _clock_loop(self) -> None:
        """Once a second: clock records for the underlyings that have been quiet (``pipeline.feed.quiet_clock``)."""
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            now = time.monotonic()
            alive = now - self.last_message_at <= self.settings.kite_silence_timeout_s
            self.flush()  # a clock record never overtakes ticks
            for underlying, exchange_ts in self.quiet_clock.due(now, alive):
                self.producer.offer(underlying, encode_clock(underlying, exchange_ts))
                self.stats.clock_records += 1


@dataclass(frozen=True)
class Universe:
    """What the ingestor stores and subscribes: ``listed`` every instrument of the chosen expiries (stored,
    so the rollups know every listed strike), ``subscribed`` what fits the connections, and their shards."""

    listed: InstrumentIndex
    subscribed: InstrumentIndex
    shards: list[Shard]
    strikes_each_side: int | None  # None = every listed strike


def plan_universe(rows: list[dict], settings: Settings, n_accounts: int, today: dt.date | None = None) -> Universe:
    """The universe to store and subscribe (docs/design.md "PCR": over every listed strike).

    With ``strikes_around_atm`` set, exactly that many strikes each side (a ShardingError when the
    connections cannot hold them). Unset: every listed strike; when that needs more connections than
    the accounts allow, the most strikes each side that fit, the farthest dropped first, with a warning
    (the chain rows' ``strikes_covered`` then falls short of ``strikes_listed``). Expiries from the trading
    day of ``today`` on (``today`` given, else ``settings.market_date``, else the date in IST; on a weekend or
    holiday the last trading day before it, whose session a simulator replays).
    """
    today = previous_trading_day(today or settings.market_date or dt.datetime.now(IST).date())

    def pick(k: int | None) -> InstrumentIndex:
        return InstrumentIndex.from_rows(select_universe(rows, settings.underlyings, settings.expiries, k, today))

    listed = pick(None)
    if settings.strikes_around_atm is not None:
        chosen = pick(settings.strikes_around_atm)
        return Universe(listed, chosen, shards_for(chosen, settings, n_accounts), settings.strikes_around_atm)
    try:
        return Universe(listed, listed, shards_for(listed, settings, n_accounts), None)
    except ShardingError:
        pass
    lo, hi = 0, max(len(np.unique(listed.strike)), 1)  # k = lo fits (or nothing does), k = hi does not
    shards_for(pick(0), settings, n_accounts)  # not even the money fits: the ShardingError says why
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            shards_for(pick(mid), settings, n_accounts)
            lo = mid
        except ShardingError:
            hi = mid
    chosen = pick(lo)
    logger.warning("the connection budget ({} account(s) x {} connections x {} tokens) holds {} of {} listed "
                   "instruments: subscribing {} strikes each side of the money; add accounts for the full chain",
                   n_accounts, settings.kite_max_connections_per_key, settings.kite_max_tokens_per_connection,
                   len(chosen), len(listed), lo)
    return Universe(listed, chosen, shards_for(chosen, settings, n_accounts), lo)


def shards_for(index: InstrumentIndex, settings: Settings, n_accounts: int) -> list[Shard]:
    options: dict[str, list[int]] = {}
    companions: dict[str, list[int]] = {}
    for token, underlying, kind in zip(index.tokens.tolist(), index.underlying, index.kind.tolist(), strict=True):
        if kind in (InstrumentKind.CALL, InstrumentKind.PUT):
            options.setdefault(underlying, []).append(token)
        elif kind in (InstrumentKind.INDEX, InstrumentKind.FUT):
            companions.setdefault(underlying, []).append(token)
    return plan_shards(options, companions, n_accounts, settings.kite_max_tokens_per_connection,
                       settings.kite_max_connections_per_key)
