"""``strikeflow bench``: the whole pipeline under a chosen load on this machine, measured from the outside.

Starts (or uses the configured) broker, PostgreSQL and Redis, the simulator
with a universe of about ``--instruments`` instruments (NIFTY, BANKNIFTY,
FINNIFTY, MIDCPNIFTY on NFO, SENSEX on BFO; per-instrument tick rates follow
liquidity) at ``--rate`` ticks per wall second in total, the ingestor (over as
many connections and api keys as Kite's limits need) and ``--workers`` workers
in one consumer group; warms up; measures for ``--seconds``; drains and stops
everything it started, by PID, also on Ctrl-C.

The figures come from outside the processes: latency from its own Redis
subscriber on the normal ``ticks:*`` channels (``now - recv_ts`` per tick, the
same host clock), bar latency from polling the bar tables, memory and CPU from
``/proc``, rates from the processes' counters. ``--json`` prints exactly one
JSON object on stdout (progress goes to stderr); its keys are listed in the
README ("Performance"). ``--find-max`` raises the rate step by step until the
pipeline stops keeping up; ``--soak`` (600 s or more) reports the RSS slope of
each process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

from pipeline.commands.bench_run import BenchRun, universe_for
from pipeline.commands.local_kafka import BROKER_KINDS
from pipeline.runtime.settings import ConfigError, Settings

BENCH_SCHEMA = "strikeflow_bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds (per step with --find-max)")
    parser.add_argument("--rate", type=float, default=10000.0, help="offered ticks per second, all instruments")
    parser.add_argument("--instruments", type=int, default=10000, help="about this many instruments subscribed")
    parser.add_argument("--workers", type=int, default=1, help="workers in the consumer group")
    parser.add_argument("--partitions", type=int, default=10, help="partitions of the ticks topic")
    parser.add_argument("--store-ticks", action="store_true", help="also store every priced tick in `ticks`")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds after the first tick before measuring")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout, progress on stderr")
    parser.add_argument("--find-max", action="store_true",
                        help="raise the rate by --step-factor each step until the pipeline cannot keep up")
    parser.add_argument("--step-factor", type=float, default=1.25, help="rate multiplier per --find-max step")
    parser.add_argument("--p99-bound-ms", type=float, default=100.0,
                        help="--find-max: a step whose receive->Redis p99 is over this did not keep up")
    parser.add_argument("--broker", choices=BROKER_KINDS, default=None,
                        help="the local broker to start when STRIKEFLOW_KAFKA_URL is not set (default: auto)")
    parser.add_argument("--soak", action="store_true", help="a long run (--seconds 600 or more): RSS slope per process")


def validate(args: argparse.Namespace) -> None:
    checks = [
        (args.seconds > 0, "--seconds must be positive"),
        (args.rate > 0, "--rate must be positive"),
        (10 <= args.instruments <= 20000, "--instruments must be between 10 and 20,000"),
        (1 <= args.workers <= 8, "--workers must be between 1 and 8"),
        (args.partitions >= args.workers, "--partitions must be at least --workers"),
        (args.warmup >= 0, "--warmup must be 0 or more"),
        (args.step_factor > 1, "--step-factor must be above 1"),
        (not (args.soak and args.seconds < 600), "--soak needs --seconds 600 or more"),
        (not (args.soak and args.find_max), "--soak and --find-max are separate runs"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"bench: {message}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, settings: Settings) -> int:
    validate(args)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    if "pg_schema" not in settings.model_fields_set:
        settings = settings.model_copy(update={"pg_schema": BENCH_SCHEMA})
    log_dir = settings.data_dir / "bench" / time.strftime("%Y%m%d-%H%M%S")
    out = sys.stderr if args.json else sys.stdout
    bench = BenchRun(args, settings, universe_for(args.instruments), log_dir, out)
    try:
        report = asyncio.run(bench.main())
    except KeyboardInterrupt:
        print("\ninterrupted: everything the benchmark started is stopped", file=sys.stderr)
        return 130
    finally:
        bench.close()
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        print(json.dumps(report, indent=1, allow_nan=False))
        print(f"\nverdict: {report['verdict']}")
        print(f"logs in {log_dir}")
    return 0 if report["lost"]["ticks"] == 0 and report["lost"]["bars"] == 0 else 1
