"""Shared test fixtures: one set of real services for the whole session.

Services come from ``STRIKEFLOW_KAFKA_URL`` / ``STRIKEFLOW_PG_DSN`` /
``STRIKEFLOW_REDIS_URL`` when set; otherwise the session reuses the PostgreSQL
and Redis answering on their default local ports, or starts private ones, and
always starts a private broker: Apache Kafka when Java is here (its jars fetched once
by Maven), else Tansu; ``STRIKEFLOW_LOCAL_BROKER=kafka|tansu`` chooses (see
``pipeline.commands.local_kafka``). The report's header and summary name it. They
start on first use, so ``pytest -m unit`` starts nothing. When a test that used
them fails, the tail of each started server's log is attached to the report.

Isolation: every test gets its own PostgreSQL schema (``pg_schema``), its own
Redis key/channel prefix (``redis_prefix``) and its own Kafka topic/group names
(``unique_name``).

The simulated market's day is pinned (``MARKET_DATE``; the setting
``STRIKEFLOW_MARKET_DATE``, which the simulator and the ingestor read, also in the
processes a test starts), so no outcome depends on the day the suite runs. Set
``STRIKEFLOW_MARKET_DATE`` to run the whole suite on another day: a Saturday, an
NSE holiday, an expiry day (README, "Tests").
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from pipeline.commands.local_kafka import announce
from pipeline.commands.local_processes import ServiceStartError
from pipeline.commands.local_services import LocalServices, ensure_services

_SERVICES: list[LocalServices] = []

# A Wednesday with no expiry of any simulated underlying and no holiday near it.
MARKET_DATE = dt.date.fromisoformat(os.environ.get("STRIKEFLOW_MARKET_DATE") or "2026-11-18")
os.environ["STRIKEFLOW_MARKET_DATE"] = MARKET_DATE.isoformat()


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    log_dir = Path(tmp_path_factory.mktemp("service-logs"))
    local = ensure_services(
        os.environ.get("STRIKEFLOW_KAFKA_URL"),
        os.environ.get("STRIKEFLOW_PG_DSN"),
        os.environ.get("STRIKEFLOW_REDIS_URL"),
        log_dir,
    )
    _SERVICES.append(local)
    _STARTED.append(local)
    try:
        yield local
    finally:
        local.close()
        _SERVICES.remove(local)


@pytest.fixture(scope="session")
def kafka_url(services: LocalServices) -> str:
    return services.kafka_url


@pytest.fixture(scope="session")
def pg_dsn(services: LocalServices) -> str:
    return services.pg_dsn


@pytest.fixture(scope="session")
def redis_url(services: LocalServices) -> str:
    return services.redis_url


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: for topics, consumer groups, app ids."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pg_schema(pg_dsn: str, unique_name: str) -> AsyncIterator[str]:
    """A fresh schema for this test, dropped afterwards."""
    schema = f"test_{unique_name}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    yield schema
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def pool(pg_dsn: str, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on this test's schema, migrated to the current tables."""
    from sinks.migrate import migrate

    await migrate(pg_dsn, pg_schema)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def redis_prefix(unique_name: str) -> str:
    """Prefix for this test's Redis keys and channels."""
    return f"{unique_name}:"


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get("STRIKEFLOW_KAFKA_URL"):
        return "broker: the configured STRIKEFLOW_KAFKA_URL"
    try:
        return announce(None)
    except ServiceStartError as exc:
        return f"broker: none can start ({exc})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for local in _STARTED:
        terminalreporter.write_line(f"services: broker {local.broker} at {local.kafka_url}")


_STARTED: list[LocalServices] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201
    report = yield
    if report.failed and _SERVICES:
        for local in _SERVICES:
            for proc in local.processes:
                tail = proc.log_tail(30)
                if tail:
                    report.sections.append((f"{proc.name} log (pid {proc.pid})", tail))
    return report


@pytest.fixture
async def kite_simulator():  # noqa: ANN201 - returns an async factory
    """Factory: ``sim, "127.0.0.1:port" = await kite_simulator(**SimConfig overrides)``; stopped after the test."""
    from sim.server import SimConfig, serve

    runners = []

    async def start(**overrides):  # noqa: ANN003, ANN202
        config = SimConfig(**{"port": 0, "speed": 60, "rate": 400, "strikes": 3, "expiries": 2,
                              "today": MARKET_DATE, **overrides})
        simulator, runner, port = await serve(config)
        runners.append(runner)
        return simulator, f"127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()
