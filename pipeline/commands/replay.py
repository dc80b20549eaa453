"""``strikeflow replay --from-schema S --to-schema T [--since TS] [--until TS]``: rebuild T's bars, strike bars
and chain bars from S's stored ticks with the live worker's code (``pipeline.jobs.replay``).

T is created or upgraded by the migrations first; S must be a migrated schema whose ticks were stored
(``STRIKEFLOW_STORE_TICKS``). Without ``--since``/``--until`` the whole of S's ticks is replayed. Progress
goes to stderr while it runs (one updating line on a terminal, a line every few seconds otherwise); a
bad argument, a missing source or an unreachable database is one line and exit code 2 or 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import asyncpg

from pipeline.commands.migrate import DATABASE_ERRORS, database_error_line
from pipeline.jobs.replay import ReplayProgress, coarsest_bucket_start, replay_ticks
from pipeline.records.time_units import parse_timestamp
from pipeline.runtime.settings import ConfigError, Settings
from sinks.migrate import check_schema_name, migrate, quote_ident, schema_problem

PROGRESS_EVERY_S = {True: 0.5, False: 5.0}  # on a terminal / in a log


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-schema", required=True, metavar="S", help="schema whose stored ticks are replayed")
    parser.add_argument("--to-schema", required=True, metavar="T",
                        help="schema the bars and rollups are written to (created or upgraded first)")
    parser.add_argument("--since", metavar="TS", help="first exchange time, ISO 8601 (IST unless a zone is given); "
                                                      "rounded down to the start of its 15-minute bar")
    parser.add_argument("--until", metavar="TS", help="end of the range (exclusive), ISO 8601")


class _Reporter:
    """Progress lines on stderr, at most every ``PROGRESS_EVERY_S``."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, progress: ReplayProgress) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S[self.tty]:
            return
        self.last = now
        print(f"\rreplay: {progress.line()}" if self.tty else f"replay: {progress.line()}",
              end="" if self.tty else "\n", file=sys.stderr, flush=True)


def _range(args: argparse.Namespace) -> tuple[float | None, float | None]:
    since = parse_timestamp(args.since) if args.since else None
    until = parse_timestamp(args.until) if args.until else None
    if since is not None and until is not None and since >= until:
        raise ValueError(f"--since {args.since} is not before --until {args.until}")
    return since, until


async def _stored_range(conn: asyncpg.Connection, schema: str) -> tuple[float, float] | None:
    row = await conn.fetchrow(f"SELECT extract(epoch FROM min(exchange_ts))::float8 AS lo, "
                              f"extract(epoch FROM max(exchange_ts))::float8 AS hi FROM {quote_ident(schema)}.ticks")
    return None if row["lo"] is None else (row["lo"], row["hi"] + 1)


async def _replay(dsn: str, settings: Settings, source: str, target: str, since: float | None,
                  until: float | None) -> ReplayProgress:
    problem = await schema_problem(dsn, source)
    if problem:
        raise ValueError(f"source {problem.replace('run `strikeflow migrate` first', 'migrate it first')}")
    conn = await asyncpg.connect(dsn)
    try:
        stored = await _stored_range(conn, source)
        if stored is None:
            raise ValueError(f"schema {source} has no stored ticks (run the pipeline with STRIKEFLOW_STORE_TICKS=true)")
        await migrate(dsn, target)
        async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
            start = coarsest_bucket_start(stored[0] if since is None else since, settings)
            return await replay_ticks(conn, pool, settings, source, target, start,
                                      stored[1] if until is None else until, _Reporter())
    finally:
        await conn.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.pg_dsn is None:
        raise ConfigError("configuration error: STRIKEFLOW_PG_DSN: not set; replay needs postgresql://user@host/db")
    dsn = settings.pg_dsn.get_secret_value()
    try:
        source, target = check_schema_name(args.from_schema), check_schema_name(args.to_schema)
        if source == target:
            raise ValueError(f"--from-schema and --to-schema are both {source}: a replay never rewrites its source")
        since, until = _range(args)
        progress = asyncio.run(_replay(dsn, settings, source, target, since, until))
    except ValueError as exc:
        print(f"strikeflow replay: {exc}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as exc:
        print(database_error_line("replay", "replay on", dsn, exc), file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"replayed {source} -> {target}: {progress.line()} in {progress.elapsed_s:.1f}s")
    return 0
