"""``strikeflow backfill --since TS --until TS [--underlyings NIFTY,...]``: fill gaps in the 1-minute bars
(an outage, a late start) from Kite's historical candles (``pipeline.jobs.backfill``).

Uses the first configured Kite account (or the simulator's default credentials) at
``STRIKEFLOW_KITE_API_URL``, the instruments table of ``STRIKEFLOW_PG_SCHEMA`` (the universe the
ingestor subscribed) and the session calendar. Backfilled rows carry ``source = 'historical'`` and
never replace a live bar. A bad range or an unknown underlying is one line and exit code 2; a refused
or failed Kite request, or an unreachable database, one line and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import asyncpg
import numpy as np

from pipeline.commands.migrate import DATABASE_ERRORS, database_error_line
from pipeline.feed.kite_history import HistoricalCandles, HistoricalError
from pipeline.jobs.backfill import BackfillReport, backfill
from pipeline.records.time_units import parse_timestamp
from pipeline.runtime.settings import ConfigError, Settings
from sinks.instrument_store import load_instrument_index
from sinks.migrate import schema_problem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", required=True, metavar="TS", help="start, ISO 8601 (IST unless a zone is given)")
    parser.add_argument("--until", required=True, metavar="TS", help="end (exclusive), ISO 8601")
    parser.add_argument("--underlyings", metavar="NAMES",
                        help="comma-separated underlyings (default: every underlying in the instruments table)")


def _range(args: argparse.Namespace, now: float) -> tuple[float, float]:
    since, until = parse_timestamp(args.since), parse_timestamp(args.until)
    if since >= until:
        raise ValueError(f"--since {args.since} is not before --until {args.until}")
    if since >= now:
        raise ValueError(f"--since {args.since} is in the future: there are no candles yet")
    return since, min(until, now)


def _credentials(settings: Settings) -> tuple[str, str]:
    accounts = settings.kite_accounts_all()
    if not accounts:
        return "strikeflow", "simulator"  # the simulator's default
    return accounts[0].api_key, accounts[0].access_token.get_secret_value()


async def _backfill(settings: Settings, dsn: str, args: argparse.Namespace, since: float, until: float) -> BackfillReport:
    problem = await schema_problem(dsn, settings.pg_schema)
    if problem:
        raise ValueError(problem)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        index = await load_instrument_index(pool, settings.pg_schema)
        known = sorted({u for u in index.underlying.tolist() if u})
        wanted = [u.strip().upper() for u in args.underlyings.split(",") if u.strip()] if args.underlyings else known
        unknown = [u for u in wanted if u not in known]
        if unknown or not wanted:
            raise ValueError(f"unknown underlying {', '.join(unknown) or '(none given)'}: the instruments table of "
                             f"{settings.pg_schema} lists {', '.join(known) or 'nothing (run strikeflow ingest first)'}")
        tokens = index.tokens[np.isin(index.underlying, wanted)]
        client = HistoricalCandles(*_credentials(settings), settings.kite_api_url)
        return await backfill(pool, settings.pg_schema, index, tokens, client, settings, since, until,
                              time.time_ns() // 1000, lambda line: print(line, file=sys.stderr, flush=True))


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.pg_dsn is None:
        raise ConfigError("configuration error: STRIKEFLOW_PG_DSN: not set; backfill needs postgresql://user@host/db")
    dsn = settings.pg_dsn.get_secret_value()
    try:
        since, until = _range(args, time.time())
        report = asyncio.run(_backfill(settings, dsn, args, since, until))
    except ValueError as exc:
        print(f"strikeflow backfill: {exc}", file=sys.stderr)
        return 2
    except HistoricalError as exc:
        print(f"strikeflow backfill: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        print(database_error_line("backfill", "backfill into", dsn, exc), file=sys.stderr)
        return 1
    print(f"backfilled {settings.pg_schema}: {report.line()}")
    return 0
