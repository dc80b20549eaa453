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
