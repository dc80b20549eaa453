"""``strikeflow migrate``: create or upgrade the database schema (``sinks.migrate``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from pipeline.runtime.settings import ConfigError, Settings, redact_url
from sinks.migrate import migrate


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.pg_dsn is None:
        raise ConfigError("configuration error: STRIKEFLOW_PG_DSN: not set; migrate needs postgresql://user@host/db")
    dsn = settings.pg_dsn.get_secret_value()
    try:
        report = asyncio.run(migrate(dsn, settings.pg_schema))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        # one line, the DSN without its password, the error's kind (its text may carry the DSN)
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, asyncpg.PostgresError) else type(exc).__name__
        print(f"strikeflow migrate: cannot migrate PostgreSQL {redact_url(dsn)} ({detail})", file=sys.stderr)
        return 1
    print(report)
    return 0
