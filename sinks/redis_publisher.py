"""Live ticks, closed bars and chain updates on Redis pub/sub (JSON).

Channels and keys (``prefix`` is prepended to every name, "" in production):

- ``ticks:<underlying>`` — one message per batch:
  ``{"underlying": "NIFTY", "ticks": [{"token", "symbol", "exchange_ts" (epoch s),
  "recv_ts" (epoch µs), "last_price", "volume", "oi", "bid", "ask"}, ...]}``;
  option ticks also carry ``"expiry"`` ("YYYY-MM-DD"), ``"strike"``, ``"type"``
  ("CE"/"PE") and ``"forward", "iv", "delta", "gamma", "theta", "vega", "rho"``.
  Futures carry ``"expiry"`` and ``"type": "FUT"``, the index ``"type": "INDEX"``.
- ``tick:<instrument_token>`` — only with ``per_instrument=True``: the latest tick
  of each instrument in the batch (same object as in the batch message).
- ``snapshot:<underlying>:<expiry>`` — hash, field = instrument token, value =
  JSON of that instrument's latest tick (same object as in the message), so a
  dashboard that joins late draws the whole chain with one HGETALL.
  Instruments without an expiry (index/spot) go to ``snapshot:<underlying>:spot``.
  Every hash written is given a TTL (``snapshot_ttl_s``, 7 days) so expired
  series disappear.
- ``bars:<tf>:<underlying>`` (tf ``1m``/``5m``/``15m``) — one message per
  timeframe per call: ``{"underlying", "timeframe", "interval_s", "bars": [...]}``.
- ``chain:<underlying>:<expiry>`` — the OI rollup payload, as given; from
  ``publish_chains``/``offer_chain`` one message per chain row (see
  ``pipeline.rollups``): ``{"underlying", "expiry", "interval_s", "timeframe",
  "bucket" (epoch s), "total_call_oi", "total_put_oi", "pcr", "max_pain",
  "atm_strike", "atm_iv", "forward", "call_volume", "put_volume",
  "last_recv_ts" (epoch µs)}``.

Missing numbers (NaN) are JSON ``null``; messages never contain NaN/Infinity.

``RedisPublisher`` does one round trip per call (a non-transactional pipeline).
``ConflatingPublisher`` decouples the process agent from Redis: ``offer()``
never blocks or raises on Redis trouble; a background task publishes as fast as
Redis allows and, when it falls behind, keeps only the newest tick per
instrument (counting what it dropped).
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from loguru import logger

from pipeline import metrics
from pipeline.instrument_index import KIND_CALL, KIND_FUT, KIND_INDEX, KIND_PUT, InstrumentIndex
from pipeline.rollups import row_dicts
from pipeline.tick_batch import GREEK_FIELDS

_TYPE_NAMES = {KIND_CALL: "CE", KIND_PUT: "PE", KIND_FUT: "FUT", KIND_INDEX: "INDEX"}
_TICK_FLOATS = ("last_price", "bid", "ask")
_BAR_FLOATS = ("open", "high", "low", "close", "vwap")
_BAR_INTS = ("volume", "oi", "oi_open", "oi_high", "oi_low", "tick_count", "bucket", "last_recv_ts")

SNAPSHOT_TTL_S = 7 * 86400


def timeframe(interval_s: int) -> str:
    """60 -> '1m', 300 -> '5m', 900 -> '15m' (other multiples of 60 likewise; else '<n>s')."""
    interval_s = int(interval_s)
    return f"{interval_s // 60}m" if interval_s % 60 == 0 else f"{interval_s}s"


def float_list(values: np.ndarray) -> list[float | None]:
    """Floats as a list with NaN/inf -> None (vectorised; JSON-safe)."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if not bad.any():
        return values.tolist()
    out = values.astype(object)
    out[bad] = None
    return out.tolist()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _clean(float(value))
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _clean(value: Any) -> Any:
    """Recursively replace non-finite floats with None (for caller-supplied payloads)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating):
        return _clean(float(value))
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    """Compact, strictly valid JSON (raises rather than emit NaN)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_json_default)


def tick_objects(ticks: np.ndarray, index: InstrumentIndex | None) -> list[dict[str, Any]]:
    """PRICED_TICK_DTYPE (or TICK_DTYPE) rows -> JSON-ready dicts, column-wise where it matters."""
    n = len(ticks)
    if n == 0:
        return []
    tokens = ticks["instrument_token"]
    if index is not None and len(index):
        pos = index.positions(tokens)
    else:
        pos = np.full(n, -1, dtype=np.int64)
    known = pos >= 0
    safe = np.where(known, pos, 0)
    token_list = tokens.tolist()
    if index is not None and len(index):
        symbols = np.where(known, index.tradingsymbol[safe], None).tolist()
        kinds = np.where(known, index.kind[safe], 0).tolist()
        expiries = np.where(known, index.expiry[safe], "").tolist()
        strikes = float_list(np.where(known, index.strike[safe], np.nan))
    else:
        symbols, kinds, expiries, strikes = [None] * n, [0] * n, [""] * n, [None] * n
    symbols = [s if s is not None else str(t) for s, t in zip(symbols, token_list, strict=True)]
    base = [
        ("token", token_list),
        ("symbol", symbols),
        ("exchange_ts", ticks["exchange_ts"].tolist()),
        ("recv_ts", ticks["recv_ts"].tolist()),
        ("last_price", float_list(ticks["last_price"])),
        ("volume", ticks["volume"].tolist()),
        ("oi", ticks["oi"].tolist()),
        ("bid", float_list(ticks["bid"])),
        ("ask", float_list(ticks["ask"])),
    ]
    base_names = [name for name, _ in base]
    base_rows = zip(*(col for _, col in base), strict=True)
    has_greeks = all(name in ticks.dtype.names for name in GREEK_FIELDS)
    greek_names = list(GREEK_FIELDS)
    greek_rows = zip(*(float_list(ticks[name]) for name in GREEK_FIELDS), strict=True) if has_greeks else None
    out = []
    for i, row in enumerate(base_rows):
        obj = dict(zip(base_names, row, strict=True))
        greeks = next(greek_rows) if greek_rows is not None else None
        kind = kinds[i]
        if kind == KIND_CALL or kind == KIND_PUT:
            obj["expiry"] = expiries[i]
            obj["strike"] = strikes[i]
            obj["type"] = _TYPE_NAMES[kind]
            if greeks is not None:
                obj.update(zip(greek_names, greeks, strict=True))
        elif kind in _TYPE_NAMES:
            obj["type"] = _TYPE_NAMES[kind]
            if expiries[i]:
                obj["expiry"] = expiries[i]
        out.append(obj)
    return out


def latest_per_instrument(ticks: np.ndarray) -> np.ndarray:
    """The newest tick (largest recv_ts) of each instrument, in receive order."""
    if len(ticks) <= 1:
        return ticks
    order = np.lexsort((ticks["recv_ts"], ticks["instrument_token"]))
    tokens = ticks["instrument_token"][order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = tokens[1:] != tokens[:-1]
    keep = order[last]
    keep = keep[np.argsort(ticks["recv_ts"][keep], kind="stable")]
    return ticks[keep]


def bar_objects(bars: np.ndarray, index: InstrumentIndex | None = None) -> list[dict[str, Any]]:
    n = len(bars)
    if n == 0:
        return []
    cols: list[tuple[str, list]] = [("token", bars["instrument_token"].tolist())]
    if index is not None and len(index):
        pos = index.positions(bars["instrument_token"])
        known = pos >= 0
        safe = np.where(known, pos, 0)
        cols.append(("symbol", np.where(known, index.tradingsymbol[safe], None).tolist()))
    cols += [(name, bars[name].tolist()) for name in _BAR_INTS]
    cols += [(name, float_list(bars[name])) for name in _BAR_FLOATS]
    cols += [(name, float_list(bars[name])) for name in GREEK_FIELDS if name in bars.dtype.names]
    names = [name for name, _ in cols]
    return [dict(zip(names, row, strict=True)) for row in zip(*(c for _, c in cols), strict=True)]


class RedisPublisher:
    """Direct publishing: each call is one Redis round trip (pipeline, no MULTI)."""

    def __init__(self, redis: Any, prefix: str = "", *, snapshot_ttl_s: int | None = SNAPSHOT_TTL_S,
                 per_instrument: bool = False) -> None:
        self.redis = redis
        self.prefix = prefix
        self.snapshot_ttl_s = snapshot_ttl_s
        self.per_instrument = per_instrument  # also PUBLISH tick:<token> (latest tick of the batch per instrument)

    def ticks_channel(self, underlying: str) -> str:
        return f"{self.prefix}ticks:{underlying}"

    def snapshot_key(self, underlying: str, expiry: str) -> str:
        return f"{self.prefix}snapshot:{underlying}:{expiry or 'spot'}"

    def bars_channel(self, interval_s: int, underlying: str) -> str:
        return f"{self.prefix}bars:{timeframe(interval_s)}:{underlying}"

    def chain_channel(self, underlying: str, expiry: str) -> str:
        return f"{self.prefix}chain:{underlying}:{expiry}"

    def build_ticks(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex | None
                    ) -> tuple[str, dict[str, dict[str, str]]]:
        """(message JSON, {snapshot key: {token: tick JSON}}) for one batch — pure, no I/O."""
        objects = tick_objects(ticks, index)
        encoded = [dumps(o) for o in objects]  # each tick encoded once: for the batch and its snapshot field
        message = f'{{"underlying":{dumps(underlying)},"ticks":[{",".join(encoded)}]}}'
        snapshots: dict[str, dict[str, str]] = {}
        # Latest tick per instrument: later (newer recv_ts) rows overwrite earlier ones.
        order = np.argsort(ticks["recv_ts"], kind="stable").tolist() if len(ticks) > 1 else range(len(ticks))
        for i in order:
            obj = objects[i]
            key = self.snapshot_key(underlying, obj.get("expiry", ""))
            snapshots.setdefault(key, {})[str(obj["token"])] = encoded[i]
        return message, snapshots

    async def publish_ticks(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex) -> int:
        """Publish one batch on ``ticks:<underlying>`` and update the snapshot hashes; returns ticks published."""
        if len(ticks) == 0:
            return 0
        message, snapshots = self.build_ticks(underlying, ticks, index)
        pipe = self.redis.pipeline(transaction=False)
        pipe.publish(self.ticks_channel(underlying), message)
        for key, mapping in snapshots.items():
            pipe.hset(key, mapping=mapping)
            if self.snapshot_ttl_s:
                pipe.expire(key, self.snapshot_ttl_s)
            if self.per_instrument:
                for token, value in mapping.items():
                    pipe.publish(f"{self.prefix}tick:{token}", value)
        await pipe.execute()
        metrics.REDIS_PUBLISHED.labels("ticks").inc()
        if self.per_instrument:
            metrics.REDIS_PUBLISHED.labels("tick").inc(sum(len(m) for m in snapshots.values()))
        latency = time.time() - float(ticks["recv_ts"].max()) / 1e6
        if latency >= 0:
            metrics.TICK_TO_PUBLISH.observe(latency)
        return len(ticks)

    def build_bars(self, underlying: str, bars: np.ndarray, index: InstrumentIndex | None = None
                   ) -> list[tuple[str, str]]:
        """[(channel, message JSON)] — one per timeframe present, in interval order."""
        out = []
        for interval in np.unique(bars["interval_s"]).tolist():
            chunk = bars[bars["interval_s"] == interval]
            payload = {"underlying": underlying, "timeframe": timeframe(interval), "interval_s": interval,
                       "bars": bar_objects(chunk, index)}
            out.append((self.bars_channel(interval, underlying), dumps(payload)))
        return out

    async def publish_bars(self, underlying: str, bars: np.ndarray, index: InstrumentIndex | None = None) -> int:
        """Publish closed bars, one message per timeframe; returns bars published."""
        if len(bars) == 0:
            return 0
        await self._publish_all("bars", self.build_bars(underlying, bars, index))
        return len(bars)

    async def publish_chain(self, underlying: str, expiry: str, payload: dict) -> int:
        """Publish an OI rollup update on ``chain:<underlying>:<expiry>``; returns the receiver count."""
        receivers = await self.redis.publish(self.chain_channel(underlying, str(expiry)), dumps(_clean(payload)))
        metrics.REDIS_PUBLISHED.labels("chain").inc()
        return int(receivers)

    def build_chains(self, underlying: str, chain_rows: np.ndarray) -> list[tuple[str, str]]:
        """[(channel, message JSON)] — one per chain row (``pipeline.rollups.CHAIN_BAR_DTYPE``), in row order."""
        out = []
        for row in row_dicts(chain_rows):
            row["underlying"] = row["underlying"] or underlying
            row["timeframe"] = timeframe(row["interval_s"])
            out.append((self.chain_channel(row["underlying"], row["expiry"]), dumps(row)))
        return out

    async def publish_chains(self, underlying: str, chain_rows: np.ndarray) -> int:
        """Publish chain rollup rows (one message each, in order, one round trip); returns rows published."""
        if len(chain_rows) == 0:
            return 0
        return await self._publish_all("chain", self.build_chains(underlying, chain_rows))

    async def _publish_all(self, kind: str, messages: list[tuple[str, str]]) -> int:
        """PUBLISH each (channel, message) in order, in one round trip; returns how many."""
        pipe = self.redis.pipeline(transaction=False)
        for channel, message in messages:
            pipe.publish(channel, message)
        await pipe.execute()
        metrics.REDIS_PUBLISHED.labels(kind).inc(len(messages))
        return len(messages)


# Errors worth retrying: Redis/network trouble. Anything else is a bug in the data: dropped and logged.
def _retryable(exc: BaseException) -> bool:
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover
        RedisError = ()  # type: ignore[assignment]  # noqa: N806
    return isinstance(exc, (RedisError, OSError, asyncio.TimeoutError, ConnectionError))


class ConflatingPublisher:
    """Non-blocking front of a ``RedisPublisher`` for the process agent.

    - ``offer(underlying, ticks, index)`` stores the batch as that underlying's
      pending batch. If one is already pending (Redis is slower than the feed),
      the two are merged keeping only the newest tick per instrument; the rows
      dropped are added to ``conflated`` (and ``strikeflow_redis_conflated``).
    - ``offer_bars(underlying, bars)`` queues closed bars; they are never
      conflated, published in order. The queue is bounded by ``max_pending`` bar
      rows: beyond it the oldest batches are dropped (counted in ``bars_dropped``,
      logged) — the ``bars`` Kafka topic and the database still have them.
    - ``offer_chain(underlying, chain_rows)`` likewise queues OI rollup chain
      rows (never conflated, published in order on ``chain:<underlying>:<expiry>``),
      bounded by ``max_pending`` rows (``chains_dropped``).
    - A background task publishes whatever is pending. Redis errors are logged
      once per kind until recovery, counted in ``errors`` (and
      ``strikeflow_sink_errors_total{sink="redis"}``), and retried with
      exponential backoff; pending data keeps conflating meanwhile.
    """

    def __init__(self, publisher: RedisPublisher, *, max_pending: int = 10000, max_backoff_s: float = 5.0,
                 stop_timeout_s: float = 5.0, max_tick_age_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``max_tick_age_s``: live ticks received longer ago than this (``recv_ts`` vs ``clock()``,
        epoch seconds) are not published and do not touch the snapshot hashes: a worker replaying
        Kafka after a restart must not send dashboards back in time. Counted in ``stale``."""
        self.publisher = publisher
        self.max_tick_age_s = max_tick_age_s
        self.clock = clock
        self.stale = 0
        self.max_pending = max_pending
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self._ticks: dict[str, tuple[np.ndarray, InstrumentIndex]] = {}
        self._bars: collections.deque[tuple[str, np.ndarray]] = collections.deque()
        self._bar_rows = 0
        self._chains: collections.deque[tuple[str, np.ndarray]] = collections.deque()
        self._chain_rows = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._logged: set[str] = set()
        self._index: dict[str, InstrumentIndex] = {}  # latest index per underlying, to name bars
        self.conflated = 0
        self.bars_dropped = 0
        self.chains_dropped = 0
        self.published_chains = 0
        self.errors = 0
        self.published_ticks = 0
        self.published_bars = 0

    # -- caller side (synchronous, never blocks) --------------------------------

    @property
    def pending_ticks(self) -> int:
        return sum(len(t) for t, _ in self._ticks.values())

    @property
    def pending_bars(self) -> int:
        return self._bar_rows

    def offer(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex) -> None:
        if self.max_tick_age_s is not None and len(ticks):
            fresh = ticks["recv_ts"] >= (self.clock() - self.max_tick_age_s) * 1e6
            if not fresh.all():
                self.stale += int((~fresh).sum())
                metrics.REDIS_STALE.inc(int((~fresh).sum()))
                ticks = ticks[fresh]
        if len(ticks) == 0:
            return
        self._merge_ticks(underlying, ticks, index)
        self._index[underlying] = index
        self._wake.set()

    def offer_bars(self, underlying: str, bars: np.ndarray) -> None:
        if len(bars) == 0:
            return
        self._bars.append((underlying, bars))
        self._bar_rows += len(bars)
        self._trim_bars()
        self._wake.set()

    def offer_chain(self, underlying: str, chain_rows: np.ndarray) -> None:
        """Queue OI rollup chain rows (never blocks, never conflated; bounded like bars)."""
        if len(chain_rows) == 0:
            return
        self._chains.append((underlying, chain_rows))
        self._chain_rows += len(chain_rows)
        while self._chain_rows > self.max_pending and len(self._chains) > 1:
            _, dropped = self._chains.popleft()
            self._chain_rows -= len(dropped)
            self.chains_dropped += len(dropped)
            self._log_once("chains-dropped", "Redis chain queue over {} rows: dropping the oldest chain rows "
                           "(they are still in Kafka and the database)", self.max_pending)
        self._wake.set()

    def _merge_ticks(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex) -> None:
        pending = self._ticks.get(underlying)
        if pending is None:
            self._ticks[underlying] = (ticks, index)
            return
        old, _ = pending
        both = np.concatenate([old, ticks])
        merged = latest_per_instrument(both)
        dropped = len(both) - len(merged)
        if dropped:
            self.conflated += dropped
            metrics.REDIS_CONFLATED.inc(dropped)
        self._ticks[underlying] = (merged, index)

    def _trim_bars(self) -> None:
        while self._bar_rows > self.max_pending and len(self._bars) > 1:
            underlying, bars = self._bars.popleft()
            self._bar_rows -= len(bars)
            self.bars_dropped += len(bars)
            self._log_once("bars-dropped", "Redis bars queue over {} rows: dropping the oldest bars "
                           "(they are still in Kafka and the database)", self.max_pending)

    # -- background task ---------------------------------------------------------

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._stop.clear()
            self._wake = asyncio.Event()
            if self._ticks or self._bars or self._chains:
                self._wake.set()
            self._task = asyncio.create_task(self._run(), name="redis-conflating-publisher")

    async def stop(self) -> None:
        """Publish what is pending (up to ``stop_timeout_s``), then stop the task."""
        task, self._task = self._task, None
        if task is None:
            if self._ticks or self._bars or self._chains:
                await self._drain_once()
            return
        self._stop.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.stop_timeout_s)
        except asyncio.TimeoutError:
            logger.warning("Redis publisher: {} ticks / {} bars still pending at shutdown, dropped",
                           self.pending_ticks, self.pending_bars)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        except Exception:  # noqa: BLE001 - _run never raises; be safe at shutdown
            logger.exception("Redis publisher task failed")

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if not (self._ticks or self._bars or self._chains):
                if self._stop.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            ok = await self._drain_once()
            if ok:
                backoff = 0.0
                continue
            if self._stop.is_set():
                return  # one last attempt was made; don't hold shutdown on a dead Redis
            backoff = min(max(backoff * 2, 0.05), self.max_backoff_s)
            try:
                await asyncio.wait_for(self._stop.wait(), backoff)
            except asyncio.TimeoutError:
                pass

    async def _drain_once(self) -> bool:
        """Publish everything pending now; False when Redis failed (the data is put back)."""
        ticks, self._ticks = self._ticks, {}
        underlyings = list(ticks)
        for i, underlying in enumerate(underlyings):
            batch, index = ticks[underlying]
            try:
                self.published_ticks += await self.publisher.publish_ticks(underlying, batch, index)
            except Exception as exc:  # noqa: BLE001
                if not self._failed(exc, f"ticks of {underlying}"):
                    continue  # not retryable: dropped
                # Put this and the untried batches back; newer offers merged meanwhile win per instrument.
                for rest in underlyings[i:]:
                    self._requeue_ticks(rest, *ticks[rest])
                return False
        while self._bars:
            underlying, bars = self._bars[0]
            try:
                self.published_bars += await self.publisher.publish_bars(underlying, bars, self._index.get(underlying))
            except Exception as exc:  # noqa: BLE001
                if self._failed(exc, f"bars of {underlying}"):
                    return False
            self._bars.popleft()
            self._bar_rows -= len(bars)
        while self._chains:
            underlying, rows = self._chains[0]
            try:
                self.published_chains += await self.publisher.publish_chains(underlying, rows)
            except Exception as exc:  # noqa: BLE001
                if self._failed(exc, f"chain rows of {underlying}"):
                    return False
            self._chains.popleft()
            self._chain_rows -= len(rows)
        if self._logged - {"bars-dropped", "chains-dropped"}:
            logger.info("Redis publishing recovered ({} errors so far)", self.errors)
            self._logged.clear()
        return True

    def _requeue_ticks(self, underlying: str, batch: np.ndarray, index: InstrumentIndex) -> None:
        newer = self._ticks.pop(underlying, None)
        self._ticks[underlying] = (batch, index)
        if newer is not None:
            self._merge_ticks(underlying, *newer)

    def _failed(self, exc: Exception, what: str) -> bool:
        """Count and log (once per kind); True when the failure should be retried."""
        self.errors += 1
        metrics.SINK_ERRORS.labels("redis").inc()
        retry = _retryable(exc)
        kind = f"{'retry' if retry else 'drop'}:{type(exc).__name__}"
        if retry:
            self._log_once(kind, "Redis publish of {} failed ({}: {}); retrying with backoff", what,
                           type(exc).__name__, exc)
        else:
            self._log_once(kind, "Redis publish of {} failed with {}: {}; batch dropped", what,
                           type(exc).__name__, exc)
        return retry

    def _log_once(self, kind: str, message: str, *args: Any) -> None:
        if kind in self._logged:
            logger.debug(message, *args)
        else:
            self._logged.add(kind)
            logger.warning(message, *args)


__all__ = [
    "ConflatingPublisher",
    "RedisPublisher",
    "bar_objects",
    "dumps",
    "float_list",
    "latest_per_instrument",
    "tick_objects",
    "timeframe",
]
