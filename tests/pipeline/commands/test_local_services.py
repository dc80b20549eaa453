"""Starting and stopping the services a newcomer's machine may lack (no Docker)."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from pipeline.commands.local_kafka import choose_broker, kafka_available
from pipeline.commands.local_services import (
    LOOPBACK,
    ensure_services,
    free_port,
    port_open,
)

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" in status.read_text()


async def test_private_services_start_answer_and_stop_by_pid(tmp_path: Path) -> None:
    local = ensure_services(None, None, None, tmp_path, reuse_local=False)
    try:
        broker = "kafka" if choose_broker(None) == "kafka" else "kafka-tansu"
        assert {p.name for p in local.processes} == {broker, "postgres", "redis"}
        assert ":5432/" not in local.pg_dsn and ":6379/" not in local.redis_url  # private, free ports
        conn = await asyncpg.connect(local.pg_dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        client = aioredis.from_url(local.redis_url)
        assert await client.ping()
        await client.aclose()
        broker_port = int(local.kafka_url.rsplit(":", 1)[1])
        assert port_open(LOOPBACK, broker_port)
    finally:
        pids = [p.pid for p in local.processes]
        local.close()
    assert all(_gone(pid) for pid in pids)
    assert not port_open(LOOPBACK, broker_port)


def test_free_port_is_not_listening() -> None:
    assert not port_open(LOOPBACK, free_port())


@pytest.mark.parametrize("kind", ["kafka", "tansu"])
def test_started_broker_dies_with_its_owner_even_on_sigkill(tmp_path: Path, kind: str) -> None:
    import signal
    import subprocess
    import sys
    import time

    if kind == "kafka" and kafka_available() is not None:
        pytest.skip(f"no Apache Kafka here: {kafka_available()}")  # the Tansu case still runs
    code = ("import sys, time\nfrom pathlib import Path\nfrom pipeline.commands.local_kafka import start_broker\n"
            "url, proc, _ = start_broker(Path(sys.argv[1]), sys.argv[2])\nprint(proc.pid, flush=True)\n"
            "time.sleep(120)\n")
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), kind], stdout=subprocess.PIPE, text=True)
    try:
        broker = int(owner.stdout.readline())
        assert not _gone(broker)
        owner.send_signal(signal.SIGKILL)  # no atexit, no signal handler: only the kernel can help
        owner.wait(10)
        deadline = time.monotonic() + 30  # the JVM shuts down in order on the SIGTERM it gets
        while not _gone(broker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(broker)
    finally:
        if owner.poll() is None:
            owner.kill()
