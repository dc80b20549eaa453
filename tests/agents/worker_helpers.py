"""Shared pieces of the worker-as-a-process tests: an index instrument, its ticks, waiting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import numpy as np

from pipeline.commands.demo import DEV_KAFKA_ENV
from pipeline.records.ticks import TICK_DTYPE

NIFTY_INDEX = dict(instrument_token=256265, exchange_token="1001", tradingsymbol="NIFTY 50", name="NIFTY 50",
                   last_price=24500.0, expiry="", strike=0.0, tick_size=0.0, lot_size=0, instrument_type="EQ",
                   segment="INDICES", exchange="NSE")
T0 = 1_795_407_900  # 09:15 IST on 2026-11-23: a 1/5/15-minute bucket boundary
# A receive clock (epoch µs) two hours into the session: every exchange time these tests send is behind it, as a
# real feed's is (a tick far ahead of its receive time is rejected as implausible)
RECV0_US = (T0 + 7_200) * 1_000_000


def price_at(second: np.ndarray | int) -> np.ndarray:
    """The index price at exchange second T0+second (rupees): a saw tooth, so OHLC differ."""
    return 24500 + np.asarray(second) % 7 + 0.0


def index_row(token: int, name: str) -> dict:
    """An index instrument of underlying ``name`` (as the ingestor stores it)."""
    return {**NIFTY_INDEX, "instrument_token": token, "tradingsymbol": name, "name": name}


def index_ticks(first: int, last: int, recv_base: int = RECV0_US + 1_000_000,
                token: int = NIFTY_INDEX["instrument_token"]) -> np.ndarray:
    """One tick of index ``token`` per exchange second T0+first..T0+last; recv_ts = recv_base + second (epoch µs,
    see ``RECV0_US``)."""
    seconds = np.arange(first, last + 1)
    ticks = np.zeros(len(seconds), dtype=TICK_DTYPE)
    ticks["instrument_token"] = token
    ticks["mode"] = 3
    ticks["exchange_ts"] = T0 + seconds
    ticks["recv_ts"] = recv_base + seconds
    ticks["last_price"] = price_at(seconds)
    ticks["bid"] = ticks["ask"] = np.nan
    return ticks


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


def worker_env(kafka_url: str, pg_dsn: str, schema: str, redis_url: str, name: str, **extra: str) -> dict[str, str]:
    """The environment of a test worker: its own app id, topics and schema, the demo's short Kafka timeouts."""

    return {**os.environ, **DEV_KAFKA_ENV, "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_PG_DSN": pg_dsn,
            "STRIKEFLOW_PG_SCHEMA": schema, "STRIKEFLOW_REDIS_URL": redis_url, "STRIKEFLOW_APP_ID": name,
            "STRIKEFLOW_TICKS_TOPIC": f"{name}-ticks", "STRIKEFLOW_BARS_TOPIC": f"{name}-bars",
            "STRIKEFLOW_STORE_TICKS": "false", **extra}


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``strikeflow worker`` as a process of its own session (killable with its children), log to ``log_path``."""
    with open(log_path, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "pipeline.commands.cli", "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()


def assert_complete_bar(bar: Mapping, bucket: int, interval: int = 60) -> None:
    """A bar of the index ticks of :func:`index_ticks`: every second's tick, OHLC of ``price_at``."""
    seconds = np.arange(bucket - T0, bucket - T0 + interval)
    assert bar["tick_count"] == interval, (bucket - T0, dict(bar))
    assert (bar["open"], bar["close"]) == (price_at(seconds[0]), price_at(seconds[-1])), (bucket - T0, dict(bar))
    assert (bar["high"], bar["low"]) == (price_at(seconds).max(), price_at(seconds).min()), (bucket - T0, dict(bar))
