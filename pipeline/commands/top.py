"""``strikeflow top``: the live backpressure view for on-call.

Every ``--interval`` seconds it scrapes the ingestor's and the worker's
``/metrics`` and asks Kafka for the consumer group's lag, then shows:

- rates (per second over the last interval): ticks ingested, ticks
  processed, Redis messages published, rows written — ingest rate above
  processing rate for long means the worker is falling behind;
- gauges: ingest produce buffer (bytes waiting for Kafka), processing lag
  (seconds from receive to processing), WebSocket connections up, ticks
  conflated on the live path;
- consumer lag per topic (messages between the committed offset and the end).

The line of the stage that holds the flow back is marked (``>>``, and in
reverse video on a terminal) and named on the last line (:func:`bottleneck`).
It draws in a plain terminal over SSH (ANSI clear and reverse video only);
``q`` quits. ``--once --json`` prints one sample as JSON (for scripts and alerts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import termios
import time
import tty
from dataclasses import asdict, dataclass

from pipeline.feed.kafka_topics import consumer_lag
from pipeline.runtime.kafka_auth import client_options
from pipeline.runtime.metrics import scrape
from pipeline.runtime.settings import Settings


@dataclass
class Sample:
    at: float
    ingest: dict[str, float]
    worker: dict[str, float]
    lag: dict[str, int]


@dataclass
class View:
    ticks_in_per_s: float
    ticks_processed_per_s: float
    redis_msgs_per_s: float
    rows_written_per_s: float
    produce_buffer_bytes: float
    process_lag_s: float
    ws_connected: float
    conflated: float
    consumer_lag: dict[str, int]
    ingest_up: bool
    worker_up: bool


def view_between(old: Sample, new: Sample) -> View:
    """Rates between two samples (pure; counters that reset count from zero)."""
    dt = max(new.at - old.at, 1e-9)

    def rate(source: str, name: str) -> float:
        a, b = getattr(old, source).get(name, 0.0), getattr(new, source).get(name, 0.0)
        return (b - a if b >= a else b) / dt

    return View(
        ticks_in_per_s=rate("ingest", "strikeflow_ticks_ingested_total"),
        ticks_processed_per_s=rate("worker", "strikeflow_ticks_processed_total"),
        redis_msgs_per_s=rate("worker", "strikeflow_redis_messages_total"),
        rows_written_per_s=rate("worker", "strikeflow_rows_written_total"),
        produce_buffer_bytes=new.ingest.get("strikeflow_produce_buffer_bytes", 0.0),
        process_lag_s=new.worker.get("strikeflow_process_lag_seconds", 0.0),
        ws_connected=new.ingest.get("strikeflow_ws_connected", 0.0),
        conflated=new.worker.get("strikeflow_redis_conflated_ticks_total", 0.0),
        consumer_lag=new.lag,
        ingest_up=bool(new.ingest),
        worker_up=bool(new.worker),
    )


BUFFERING_BYTES = 8 * 2**20  # the ingestor buffering this much for Kafka: the broker is the slow stage
BEHIND_LAG_S = 2.0  # the worker this far behind receive time: processing is the slow stage


def bottleneck(view: View) -> tuple[str, str]:
    """(stage, why) of the stage holding the flow back, from one view (pure): a process down first, then
    the feed, Kafka, the worker, Redis; ("", "keeping up") when none is."""
    if not view.ingest_up:
        return "ingest", "ingest DOWN: its /metrics does not answer"
    if not view.worker_up:
        return "worker", "worker DOWN: its /metrics does not answer"
    if view.ws_connected < 1:
        return "ingest", "no Kite connection up: the feed"
    if view.produce_buffer_bytes > BUFFERING_BYTES:
        return "ingest", f"ingest buffering {view.produce_buffer_bytes / 2**20:,.0f} MB: Kafka is slow or down"
    if view.process_lag_s > BEHIND_LAG_S or view.ticks_processed_per_s < 0.9 * view.ticks_in_per_s - 1:
        return "worker", f"worker {view.process_lag_s:.1f}s behind, processing {view.ticks_processed_per_s:,.0f}/s " \
                         f"of {view.ticks_in_per_s:,.0f}/s: processing"
    return "", "keeping up"


def render(view: View, on_tty: bool = False) -> str:
    stage, why = bottleneck(view)
    rows = [
        ("ingest", f"ingest   {'up' if view.ingest_up else 'DOWN':<5} ticks in      {view.ticks_in_per_s:>10,.0f}/s"
                   f"   ws connected {view.ws_connected:.0f}   produce buffer {view.produce_buffer_bytes / 2**20:,.1f} MB"),
        ("worker", f"worker   {'up' if view.worker_up else 'DOWN':<5} processed     {view.ticks_processed_per_s:>10,.0f}/s"
                   f"   lag {view.process_lag_s:.3f}s"),
        ("redis", f"redis          published     {view.redis_msgs_per_s:>10,.0f}/s   conflated {view.conflated:,.0f}"),
        ("database", f"database       rows written  {view.rows_written_per_s:>10,.0f}/s"),
        ("kafka", "consumer lag   " + ("  ".join(f"{t}: {n:,}" for t, n in sorted(view.consumer_lag.items())) or "n/a")),
    ]
    lines = [f"strikeflow top — {time.strftime('%H:%M:%S')}   (q quits)"]
    for name, text in rows:
        if name == stage:
            lines.append(f"\x1b[7m>> {text}\x1b[0m" if on_tty else f">> {text}")
        else:
            lines.append(f"   {text}")
    lines.append(f"bottleneck: {why}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ingest", default=None, help="ingest base URL (default http://127.0.0.1:<ingest_metrics_port>)")
    parser.add_argument("--worker", default=None, help="worker base URL (default http://127.0.0.1:<web_port>)")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--once", action="store_true", help="print one sample and exit")
    parser.add_argument("--json", action="store_true", help="JSON instead of the text view")


async def _sample(args: argparse.Namespace, settings: Settings) -> Sample:
    lag = {}
    if settings.kafka_url:
        topics = [settings.ticks_topic, settings.bars_topic, f"{settings.ticks_topic}-priced"]
        lag = await consumer_lag(settings.kafka_url, settings.app_id, topics, client_options(settings))
    ingest, worker = await asyncio.gather(asyncio.to_thread(scrape, f"{args.ingest}/metrics"),
                                          asyncio.to_thread(scrape, f"{args.worker}/metrics"))
    return Sample(time.monotonic(), ingest, worker, lag)


def run(args: argparse.Namespace, settings: Settings) -> int:
    args.ingest = args.ingest or f"http://{settings.web_host}:{settings.ingest_metrics_port}"
    args.worker = args.worker or f"http://{settings.web_host}:{settings.web_port}"

    async def loop() -> None:
        quit_pressed = _keys_quit()
        old = await _sample(args, settings)
        while not quit_pressed.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(quit_pressed.wait(), args.interval)
            if quit_pressed.is_set():
                return
            new = await _sample(args, settings)
            view = view_between(old, new)
            if args.json:
                print(json.dumps(asdict(view)), flush=True)
            else:
                on_tty = sys.stdout.isatty()
                print(("\x1b[2J\x1b[H" if on_tty else "") + render(view, on_tty), flush=True)
            old = new
            if args.once:
                return

    saved = _cbreak()
    try:
        asyncio.run(loop())
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    return 0


def _cbreak() -> list | None:
    """Keys without Enter on a terminal (``q`` quits); the old settings, or None when stdin is no terminal."""
    if not sys.stdin.isatty():
        return None
    saved = termios.tcgetattr(sys.stdin.fileno())
    tty.setcbreak(sys.stdin.fileno())
    return saved


def _keys_quit() -> asyncio.Event:
    """An event set when ``q`` is pressed on a terminal stdin (never set otherwise)."""
    pressed = asyncio.Event()
    if sys.stdin.isatty():
        def read() -> None:
            if sys.stdin.read(1).lower() == "q":
                pressed.set()
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), read)
    return pressed
