"""``strikeflow worker``: the Faust worker (process and store agents) with the loaded settings."""

from __future__ import annotations

import argparse
import asyncio
import socket

import faust

from agents.app import create_app
from pipeline.feed.kafka_topics import ensure_topics_eventually, worker_topics
from pipeline.runtime.kafka_auth import client_options
from pipeline.runtime.settings import ConfigError, Settings
from sinks.migrate import schema_problem


def run(args: argparse.Namespace, settings: Settings) -> int:
    for name, value in (("STRIKEFLOW_KAFKA_URL", settings.kafka_url), ("STRIKEFLOW_PG_DSN", settings.pg_dsn),
                        ("STRIKEFLOW_REDIS_URL", settings.redis_url)):
        if value is None:
            raise ConfigError(f"configuration error: {name}: not set; the worker needs Kafka, PostgreSQL and Redis "
                              "(or run `strikeflow demo`, which starts them)")
    _check_port_free("STRIKEFLOW_WEB_PORT", settings.web_host, settings.web_port)
    problem = asyncio.run(schema_problem(settings.pg_dsn.get_secret_value(), settings.pg_schema))
    if problem:
        raise ConfigError(problem)
    # before Faust subscribes: it would otherwise ignore a missing topic until its next metadata refresh
    asyncio.run(ensure_topics_eventually(settings.kafka_url, worker_topics(settings), client_options(settings)))
    app = create_app(settings)
    # Web bind address and port come from the app's configuration (127.0.0.1 unless configured).
    level = {"TRACE": "debug", "SUCCESS": "info", "CRITICAL": "crit", "WARNING": "warn"}.get(settings.log_level, settings.log_level.lower())
    worker = faust.Worker(app, loglevel=level, override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def _check_port_free(setting: str, host: str, port: int) -> None:
    """Faust would fail deep inside its start-up on a taken port: say so in one line first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"configuration error: {setting}: cannot listen on {host}:{port} "
                              f"({exc.strerror or exc}); choose another port") from None
