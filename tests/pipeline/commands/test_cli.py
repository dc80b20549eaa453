"""The `strikeflow` command's failure modes: one line on stderr, a meaningful exit code, no secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.commands.local_services import free_port

pytestmark = pytest.mark.integration  # runs the command in a subprocess, opens sockets


def _strikeflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRIKEFLOW_", "KITE_"))}
    return subprocess.run([sys.executable, "-m", "pipeline.commands.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_migrate_against_a_dead_database_exits_1_with_one_redacted_line() -> None:
    done = _strikeflow("migrate", STRIKEFLOW_PG_DSN=f"postgresql://u:hunter2@127.0.0.1:{free_port()}/x")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1
    assert len(lines) == 1 and "cannot migrate PostgreSQL" in lines[0] and "u:***@" in lines[0], lines
    assert "hunter2" not in done.stdout + done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["migrate", "ingest", "worker"])
def test_missing_service_setting_exits_2_naming_it(command: str) -> None:
    done = _strikeflow(command)
    assert done.returncode == 2
    assert "STRIKEFLOW_" in done.stderr and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1


def test_worker_on_a_taken_web_port_exits_2_naming_the_setting() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _strikeflow("worker", STRIKEFLOW_KAFKA_URL="kafka://127.0.0.1:9", STRIKEFLOW_PG_DSN="postgresql://x@127.0.0.1/x",
                           STRIKEFLOW_REDIS_URL="redis://127.0.0.1:6379", STRIKEFLOW_WEB_PORT=str(port))
    assert done.returncode == 2
    assert "STRIKEFLOW_WEB_PORT" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--from-schema", "a", "--to-schema", "a"], "never rewrites its source"),
    (["--from-schema", "a", "--to-schema", "b", "--since", "yesterday"], "expected ISO 8601"),
    (["--from-schema", "a", "--to-schema", "b", "--since", "2026-12-03T10:00", "--until", "2026-12-03T09:00"],
     "is not before --until"),
    (["--from-schema", "a;drop", "--to-schema", "b"], "invalid schema name"),
])
def test_replay_bad_arguments_exit_2_with_one_line(args: list[str], says: str) -> None:
    done = _strikeflow("replay", *args, STRIKEFLOW_PG_DSN="postgresql://u:hunter2@127.0.0.1:1/x")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stderr
    assert "hunter2" not in done.stdout + done.stderr


def test_replay_from_a_schema_without_ticks_exits_2_naming_it(pg_dsn: str, pg_schema: str) -> None:
    import asyncio

    from sinks.migrate import migrate

    asyncio.run(migrate(pg_dsn, pg_schema))
    done = _strikeflow("replay", "--from-schema", pg_schema, "--to-schema", f"{pg_schema}_t", STRIKEFLOW_PG_DSN=pg_dsn)
    assert done.returncode == 2 and f"schema {pg_schema} has no stored ticks" in done.stderr, done.stderr
    done = _strikeflow("replay", "--from-schema", f"{pg_schema}_never", "--to-schema", f"{pg_schema}_t",
                       STRIKEFLOW_PG_DSN=pg_dsn)
    assert done.returncode == 2 and "migrate it first" in done.stderr, done.stderr


def test_replay_against_a_dead_database_exits_1_redacted() -> None:
    done = _strikeflow("replay", "--from-schema", "a", "--to-schema", "b",
                       STRIKEFLOW_PG_DSN=f"postgresql://u:hunter2@127.0.0.1:{free_port()}/x")
    assert done.returncode == 1 and "cannot replay on PostgreSQL" in done.stderr and "u:***@" in done.stderr, done.stderr
    assert "hunter2" not in done.stdout + done.stderr and "Traceback" not in done.stderr
