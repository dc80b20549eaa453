"""``strikeflow migrate [--to N | --status]``: create, upgrade, roll back or inspect the database schema
(``sinks.migrate``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from pipeline.runtime.redaction import redact_url
from pipeline.runtime.settings import ConfigError, Settings
from sinks.migrate import migrate, status

DATABASE_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError)


def database_error_line(command: str, verb: str, dsn: str, exc: BaseException) -> str:
    """One line for a database failure: the DSN without its password, the error's kind, and the server's
    message for a PostgreSQL error (the text of a connection error may carry the DSN, so not that)."""
    detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, asyncpg.PostgresError) else type(exc).__name__
    return f"strikeflow {command}: cannot {verb} PostgreSQL {redact_url(dsn)} ({detail})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--to", type=int, metavar="N",
                      help="move the schema to version N: roll back the versions above it, apply the ones up to it "
                           "(0 removes everything the migrations created)")
    what.add_argument("--status", action="store_true", help="list the applied and pending versions, change nothing")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.pg_dsn is None:
        raise ConfigError("configuration error: STRIKEFLOW_PG_DSN: not set; migrate needs postgresql://user@host/db")
    dsn = settings.pg_dsn.get_secret_value()
    try:
        if getattr(args, "status", False):
            rows = asyncio.run(status(dsn, settings.pg_schema))
            print(f"schema {settings.pg_schema}:")
            for r in rows:
                when = f"  {r.applied_at:%Y-%m-%d %H:%M:%S %Z}" if r.applied_at else ""
                print(f"  {r.name:<28} {r.state}{when}")
            return 0
        report = asyncio.run(migrate(dsn, settings.pg_schema, to=getattr(args, "to", None)))
    except ValueError as exc:
        print(f"strikeflow migrate: {exc}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as exc:
        print(database_error_line("migrate", "migrate", dsn, exc), file=sys.stderr)
        return 1
    print(report)
    return 0
