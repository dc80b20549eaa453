"""``strikeflow simulate``: run the local Kite-compatible market (``sim.server``) until a signal."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys
from pathlib import Path

from loguru import logger

from pipeline.records.time_units import parse_timestamp
from pipeline.runtime.settings import Settings
from sim.market import DEFAULT_UNDERLYINGS
from sim.server import SimConfig, serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port (printed at start)")
    parser.add_argument("--api-key", help="accept only this api_key (default: any)")
    parser.add_argument("--access-token", help="accept only this access_token (default: any)")
    parser.add_argument("--underlyings", default="NIFTY,BANKNIFTY",
                        help="comma-separated, or ALL (NIFTY, BANKNIFTY, FINNIFTY, MIDCPNIFTY, SENSEX)")
    parser.add_argument("--expiries", type=int, default=3, help="option expiries per underlying")
    parser.add_argument("--strikes", type=int, default=20, help="listed strikes each side of the money")
    parser.add_argument("--speed", type=float, default=1.0, help="exchange seconds per wall second")
    parser.add_argument("--rate", type=float, default=500.0, help="ticks per wall second over all connections")
    parser.add_argument("--step-ms", type=float, default=50.0, help="wall milliseconds between market steps")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--around-the-clock", action="store_true",
                        help="trade at any hour on any day (no pre-open, close or holidays): for runs whose "
                             "exchange time is the wall time, such as `strikeflow bench`")
    parser.add_argument("--start", help="exchange start time, ISO 8601 (default 09:15 IST of --today, or of the last trading day before it)")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=None,
                        help="the simulated market's today, YYYY-MM-DD (default STRIKEFLOW_MARKET_DATE, else the date in IST)")
    parser.add_argument("--max-tokens", type=int, default=3000, help="instruments per connection")
    parser.add_argument("--max-connections", type=int, default=3, help="connections per api_key")
    parser.add_argument("--drop-every", type=float, default=0.0, help="fault: drop all connections every S seconds")
    parser.add_argument("--refuse-for", type=float, default=0.0, help="fault: after a drop refuse reconnects S s")
    parser.add_argument("--malformed-every", type=int, default=0, help="fault: every N-th frame malformed")
    parser.add_argument("--replay", type=Path, help="send this capture instead of the model market")
    parser.add_argument("--record", type=Path, help="write the frames sent to this capture file")


def config_from_args(args: argparse.Namespace, settings: Settings | None = None) -> SimConfig:
    if args.underlyings.strip().upper() == "ALL":
        args.underlyings = ",".join(DEFAULT_UNDERLYINGS)
    if not args.rate > 0 or not 1 <= args.step_ms <= 1000:
        raise SystemExit("simulate: --rate must be positive and --step-ms between 1 and 1000")
    unknown = [u for u in args.underlyings.split(",") if u.strip().upper() not in DEFAULT_UNDERLYINGS]
    if unknown:
        raise SystemExit(f"simulate: unknown underlying {unknown[0]!r}; choose from {', '.join(DEFAULT_UNDERLYINGS)}")
    try:
        start = parse_timestamp(args.start) if args.start else None
    except ValueError as exc:
        raise SystemExit(f"simulate: --start: {exc}") from None
    return SimConfig(
        host=args.host, port=args.port, api_key=args.api_key, access_token=args.access_token,
        underlyings=tuple(u.strip().upper() for u in args.underlyings.split(",")), expiries=args.expiries,
        strikes=args.strikes, speed=args.speed, rate=args.rate, step_s=args.step_ms / 1000, seed=args.seed,
        start=start, today=args.today or (settings.market_date if settings else None), around_the_clock=args.around_the_clock, max_tokens=args.max_tokens,
        max_connections=args.max_connections, drop_every_s=args.drop_every, refuse_for_s=args.refuse_for,
        malformed_every=args.malformed_every, replay=args.replay, record=args.record,
    )


async def _main(config: SimConfig) -> None:
    sim, runner, port = await serve(config)
    logger.info("simulator listening on ws://{}:{} ({} instruments, speed {}x, {} ticks/s, seed {})",
                config.host, port, len(sim.rows), config.speed, config.rate, config.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    logger.info("simulator stopped: {} frames, {} ticks sent", sim.frames_sent, sim.ticks_sent)


def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    config = config_from_args(args, settings)
    try:
        asyncio.run(_main(config))
    except OSError as exc:  # the port is taken, or the host is not ours
        print(f"strikeflow simulate: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}; "
              "choose another --port (0 picks a free one)", file=sys.stderr)
        return 1
    return 0
