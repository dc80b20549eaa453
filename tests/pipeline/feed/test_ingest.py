"""The ingestor against the simulator (real WebSockets) and the real broker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.commands import ingest as ingest_command
from pipeline.commands.local_services import free_port
from pipeline.feed.ingestor import (
    Ingestor,
    plan_universe,
    split_by_underlying,
)
from pipeline.feed.kafka_topics import bootstrap_servers, ensure_topic
from pipeline.feed.stamping import ReceiveClock
from pipeline.feed.tick_producer import TickProducer
from pipeline.records.ticks import TICK_DTYPE, decode_ticks, decode_ticks_record
from pipeline.runtime import metrics
from pipeline.runtime.settings import KiteAccount, load_settings


async def _until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Running:
    def __init__(self, ingestor: Ingestor, task: asyncio.Task, producer: TickProducer) -> None:
        self.ingestor, self.task, self.producer = ingestor, task, producer

    async def stop(self) -> None:
        self.ingestor.stop()
        await asyncio.wait_for(self.task, 10)
        await self.producer.stop()


@pytest.fixture
async def start_ingest(kafka_url: str, unique_name: str):  # noqa: ANN201
    running: list[Running] = []

    async def start(simulator, addr: str, accounts: list[KiteAccount] | None = None, **overrides) -> Running:  # noqa: ANN001, ANN003
        settings = load_settings(**{"kafka_url": kafka_url, "ticks_topic": f"{unique_name}-ticks",
                                    "underlyings": ("NIFTY",), "expiries": 1, "strikes_around_atm": 2,
                                    "kite_silence_timeout_s": 1.0, **overrides})
        accounts = accounts or [KiteAccount(api_key="k", access_token="t")]
        universe = plan_universe(simulator.rows, settings, len(accounts))
        await ensure_topic(kafka_url, settings.ticks_topic, 2)
        producer = TickProducer(kafka_url, settings.ticks_topic, 1 << 20)
        await producer.start()
        ingestor = Ingestor(settings, universe.subscribed, universe.shards, accounts, producer, f"ws://{addr}")
        run = Running(ingestor, asyncio.create_task(ingestor.run()), producer)
        running.append(run)
        return run

    yield start
    for run in running:
        if not run.task.done():
            await run.stop()


def _mute_reconnects(connection: str) -> float:
    return metrics.REGISTRY.get_sample_value("strikeflow_ws_mute_reconnects_total", {"connection": connection}) or 0.0


def _subscribed(simulator) -> set[int]:  # noqa: ANN001
    return set(simulator.state()["subscribed_tokens"])


@pytest.mark.unit
def test_receive_clock_is_strictly_increasing_even_when_wall_clock_repeats() -> None:
    clock = ReceiveClock()
    a = clock.stamp(3, 1_000)
    b = clock.stamp(2, 1_000)
    c = clock.stamp(1, 500)
    stamps = np.concatenate([a, b, c])
    assert (np.diff(stamps) > 0).all()


@pytest.mark.integration
async def test_ingest_produces_batches_keyed_by_underlying(kite_simulator, start_ingest, kafka_url: str,
                                                           unique_name: str) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator(rate=800)
    run = await start_ingest(simulator, addr)
    await _until(lambda: run.ingestor.stats.ticks >= 100, what="100 ticks")
    await run.stop()
    consumer = AIOKafkaConsumer(f"{unique_name}-ticks", bootstrap_servers=bootstrap_servers(kafka_url),
                                auto_offset_reset="earliest", group_id=f"{unique_name}-check")
    await consumer.start()
    try:
        ticks, keys = [], set()
        deadline = time.monotonic() + 15
        while sum(len(t) for t in ticks) < 100 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    underlying, batch = decode_ticks(record.value)
                    keys.add(record.key)
                    assert underlying == "NIFTY"
                    ticks.append(batch)
    finally:
        await consumer.stop()
    assert keys == {b"NIFTY"}
    all_ticks = np.concatenate(ticks)
    assert all_ticks.dtype == TICK_DTYPE
    assert set(all_ticks["instrument_token"].tolist()) <= set(run.ingestor.index.tokens.tolist())
    assert (np.diff(np.sort(all_ticks["recv_ts"])) > 0).all()  # unique receive sequence
    assert (all_ticks["exchange_ts"] >= int(simulator.start_ts)).all()


@pytest.mark.integration
async def test_dropped_connection_reconnects_and_resubscribes_exactly_its_tokens(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    expected = set(run.ingestor.index.tokens.tolist())
    await _until(lambda: _subscribed(simulator) == expected, what="subscription")
    simulator.drop(refuse_for_s=1.0)
    await _until(lambda: run.ingestor.stats.reconnects == 1 and _subscribed(simulator) == expected,
                 what="reconnect and resubscription")
    assert run.ingestor.stats.gap_seconds > 0.9  # the refused period is counted as a gap
    modes = simulator.state()["connections"][0]["modes"]
    assert modes["3"] == len(expected)  # all back in full mode
    ticks_before = run.ingestor.stats.ticks
    await _until(lambda: run.ingestor.stats.ticks > ticks_before + 20, what="ticks after reconnect")


@pytest.mark.integration
async def test_silent_connection_is_detected_and_replaced(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    await _until(lambda: run.ingestor.stats.ticks > 0, what="first ticks")
    simulator.faults.stall(2.5)  # no data, no heartbeat, socket stays open
    await _until(lambda: run.ingestor.stats.reconnects >= 1, timeout=10, what="watchdog reconnect")


@pytest.mark.integration
async def test_malformed_frames_are_counted_and_ingest_continues(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    await _until(lambda: run.ingestor.stats.ticks > 0, what="first ticks")
    simulator.faults.malform(3)
    await _until(lambda: sum(run.ingestor.decoder.errors.values()) >= 3, what="3 malformed frames")
    ticks = run.ingestor.stats.ticks
    await _until(lambda: run.ingestor.stats.ticks > ticks + 20, what="ticks after malformed frames")
    assert run.ingestor.stats.reconnects == 0


@pytest.mark.integration
async def test_rejected_account_fails_over_to_the_other_account(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator(api_key="good")
    accounts = [KiteAccount(api_key="bad", access_token="t1"), KiteAccount(api_key="good", access_token="t2")]
    run = await start_ingest(simulator, addr, accounts)
    expected = set(run.ingestor.index.tokens.tolist())
    await _until(lambda: _subscribed(simulator) == expected, what="subscription through the good account")
    assert {c["api_key"] for c in simulator.state()["connections"]} == {"good"}
    assert all(shard.account == 1 for shard in run.ingestor.shards)


@pytest.mark.unit
def test_split_by_underlying_keeps_order_and_counts_unknown_tokens() -> None:
    from pipeline.records.instruments import InstrumentIndex

    index = InstrumentIndex.from_rows([
        dict(instrument_token=256265, tradingsymbol="NIFTY 50", name="NIFTY 50", expiry="", strike=0,
             instrument_type="EQ", segment="INDICES"),
        dict(instrument_token=260105, tradingsymbol="NIFTY BANK", name="NIFTY BANK", expiry="", strike=0,
             instrument_type="EQ", segment="INDICES"),
    ])
    ticks = np.zeros(4, dtype=TICK_DTYPE)
    ticks["instrument_token"] = [260105, 256265, 12345, 260105]
    ticks["recv_ts"] = [1, 2, 3, 4]
    groups, unknown = split_by_underlying(ticks, index)
    assert unknown == 1
    assert groups["BANKNIFTY"]["recv_ts"].tolist() == [1, 4]
    assert groups["NIFTY"]["recv_ts"].tolist() == [2]


@pytest.mark.integration
async def test_ingest_command_stops_cleanly_on_sigterm(kite_simulator, kafka_url: str, unique_name: str,
                                                       tmp_path) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    env = {**os.environ, "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks",
           "STRIKEFLOW_UNDERLYINGS": '["NIFTY"]', "STRIKEFLOW_STRIKES_AROUND_ATM": "1",
           "STRIKEFLOW_DATA_DIR": str(tmp_path)}
    env.pop("STRIKEFLOW_PG_DSN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "ingest", "--ws-url", f"ws://{addr}", "--api-url", f"http://{addr}",
        "--metrics-port", "0", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    await _until(lambda: bool(simulator.state()["subscribed_tokens"]), timeout=30, what="ingest subscribed")
    await asyncio.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = output.decode()
    assert proc.returncode == 0, text[-3000:]
    assert "ingest stopped" in text
    assert "Traceback" not in text


@pytest.mark.integration
async def test_access_tokens_never_reach_the_logs(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    from loguru import logger

    simulator, addr = await kite_simulator(api_key="good", access_token="right-token")
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message} {exception}")
    try:
        accounts = [KiteAccount(api_key="bad", access_token="SECRET-wrong-token"),
                    KiteAccount(api_key="good", access_token="right-token")]
        run = await start_ingest(simulator, addr, accounts)
        await _until(lambda: run.ingestor.stats.ticks > 0, what="ticks through the good account")
        simulator.drop()
        await _until(lambda: run.ingestor.stats.reconnects >= 1, what="reconnect")
        await run.stop()
    finally:
        logger.remove(sink)
    text = "\n".join(lines)
    assert "rejected" in text  # the failover was logged...
    assert "SECRET-wrong-token" not in text and "right-token" not in text  # ...without any token


@pytest.mark.integration
async def test_kite_text_messages_are_logged_and_do_not_disturb_ticks(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    from loguru import logger

    simulator, addr = await kite_simulator()
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    try:
        run = await start_ingest(simulator, addr)
        await _until(lambda: run.ingestor.stats.ticks > 0, what="first ticks")
        assert await simulator.broadcast_text("message", "market closes early today") == 1
        assert await simulator.broadcast_text("error", "token limit reached") == 1
        ticks = run.ingestor.stats.ticks
        await _until(lambda: run.ingestor.stats.ticks > ticks + 20, what="ticks after the messages")
    finally:
        logger.remove(sink)
    text = "\n".join(lines)
    assert "market closes early today" in text and "token limit reached" in text
    assert run.ingestor.stats.reconnects == 0


@pytest.mark.integration
async def test_ingest_with_a_refused_token_exits_2_with_one_line_and_no_secret(kite_simulator, kafka_url: str,
                                                                             tmp_path) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator(api_key="good", access_token="right")
    env = {**os.environ, "STRIKEFLOW_KAFKA_URL": kafka_url, "KITE_API_KEY": "good",
           "KITE_ACCESS_TOKEN": "SECRET-stale-token", "STRIKEFLOW_DATA_DIR": str(tmp_path)}
    env.pop("STRIKEFLOW_PG_DSN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "ingest", "--ws-url", f"ws://{addr}", "--api-url", f"http://{addr}",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, (out + err).decode()[-2000:]
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and "KITE_ACCESS_TOKEN" in lines[0], lines
    assert b"SECRET-stale-token" not in out + err and b"Traceback" not in err


@pytest.mark.integration
async def test_two_drops_in_a_row_each_gap_measured_from_its_own_drop(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    """A gap is the time since *this* outage began, not since the first one (down_since was never reset)."""
    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    expected = set(run.ingestor.index.tokens.tolist())
    await _until(lambda: _subscribed(simulator) == expected, what="subscription")
    simulator.drop()
    await _until(lambda: run.ingestor.stats.reconnects == 1, what="first reconnect")
    first_gap = run.ingestor.stats.gap_seconds
    await asyncio.sleep(3.0)  # connected and ticking in between
    simulator.drop()
    await _until(lambda: run.ingestor.stats.reconnects == 2, what="second reconnect")
    second_gap = run.ingestor.stats.gap_seconds - first_gap
    assert 0 < second_gap < 2.5, (first_gap, second_gap)  # about one backoff step, not 3 s + both outages


@pytest.mark.integration
async def test_quiet_feed_gets_clock_records_so_bars_can_close(kite_simulator, start_ingest, kafka_url: str,
                                                               unique_name: str) -> None:  # noqa: ANN001
    """No trades, only heartbeats (after 15:30 IST, say): the ingestor sends the exchange clock on the ticks topic."""
    simulator, addr = await kite_simulator(rate=0)  # the subscribe snapshot, then heartbeats only
    run = await start_ingest(simulator, addr, ingest_clock_after_s=1.0, kite_silence_timeout_s=3.0)
    await _until(lambda: run.ingestor.stats.clock_records >= 3, timeout=20, what="clock records")
    last_tick_ts = run.ingestor.last_exchange_ts
    await run.stop()
    consumer = AIOKafkaConsumer(f"{unique_name}-ticks", bootstrap_servers=bootstrap_servers(kafka_url),
                                auto_offset_reset="earliest", group_id=f"{unique_name}-check")
    await consumer.start()
    clocks, ticks = [], 0
    try:
        deadline = time.monotonic() + 15
        while len(clocks) < 3 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    underlying, batch, clock = decode_ticks_record(record.value)
                    assert underlying == "NIFTY" and record.key == b"NIFTY"
                    if clock is None:
                        ticks += len(batch)
                    else:
                        clocks.append(clock)
    finally:
        await consumer.stop()
    assert ticks > 0 and len(clocks) >= 3
    assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks)  # only forward
    assert clocks[0] > last_tick_ts - 1 and clocks[-1] <= last_tick_ts + 30  # wall-speed estimate past the last tick


@pytest.mark.integration
async def test_a_connection_open_but_mute_is_reconnected_while_the_other_has_data(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    # heartbeats every second keep the silence watchdog (5 s) quiet: only the mute watchdog (3 s) can act
    run = await start_ingest(simulator, addr, kite_max_tokens_per_connection=8, kite_mute_timeout_s=3.0,
                             kite_silence_timeout_s=5.0)
    connections = run.ingestor.connections
    assert len(connections) == 2
    assert len({c.name for c in connections}) == 2  # each connection its own metrics and data clock
    await _until(lambda: len(run.ingestor.last_data_at) == 2, what="data on both connections")
    muted = simulator.clients[0]
    before = {c.name: _mute_reconnects(c.name) for c in connections}
    muted_at = time.monotonic()
    assert simulator.mute(120.0, 0)  # heartbeats keep coming, data frames do not
    await _until(lambda: muted not in simulator.clients, timeout=20, what="the mute connection replaced")
    counted = {c.name: _mute_reconnects(c.name) - before[c.name] for c in connections}
    assert sorted(counted.values()) == [0, 1]  # the mute one, once; the other was never touched
    await _until(lambda: all(at > muted_at + 3.0 for at in run.ingestor.last_data_at.values()), timeout=15,
                 what="data on both connections again")


@pytest.mark.integration
async def test_ready_names_a_silent_connection_within_seconds_and_health_stays_ok(kite_simulator, kafka_url: str,
                                                                                  unique_name: str, tmp_path) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    port = free_port()
    env = {**os.environ, "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks",
           "STRIKEFLOW_UNDERLYINGS": '["NIFTY"]', "STRIKEFLOW_STRIKES_AROUND_ATM": "2", "STRIKEFLOW_EXPIRIES": "1",
           "STRIKEFLOW_KITE_MAX_TOKENS_PER_CONNECTION": "8", "STRIKEFLOW_KITE_MUTE_TIMEOUT_S": "600",
           "STRIKEFLOW_READY_DATA_AGE_S": "2", "STRIKEFLOW_DATA_DIR": str(tmp_path)}
    env.pop("STRIKEFLOW_PG_DSN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "ingest", "--ws-url", f"ws://{addr}", "--api-url",
        f"http://{addr}", "--metrics-port", str(port), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    states: list[tuple[int, dict]] = []

    async def get(path: str) -> tuple[int, dict]:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as response:
                states.append((response.status, await response.json()))
        except aiohttp.ClientError:
            states.append((0, {}))
        return states[-1]

    async def until_ready(want: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await get("/ready")
            if status == want and (want == 200 or any(not c["ok"] for n, c in body["checks"].items()
                                                      if n.startswith("feed:"))):
                return body
            await asyncio.sleep(0.3)
        raise AssertionError(f"/ready never answered {want}: {states[-3:]}")

    try:
        ready = await until_ready(200, 60)
        feeds = sorted(n for n in ready["checks"] if n.startswith("feed:"))
        assert len(feeds) == 2 and {"broker", "tasks"} <= set(ready["checks"])
        assert all(ready["checks"][n]["age_s"] < 2 for n in feeds)
        simulator.mute(8.0, 0)  # heartbeats keep coming, data frames do not
        muted_at = time.monotonic()
        red = await until_ready(503, 10)
        assert time.monotonic() - muted_at < 6  # data age 2 s plus a scrape or two
        silent = [n for n in feeds if not red["checks"][n]["ok"]]
        assert len(silent) == 1 and "connected, no data frame for" in red["checks"][silent[0]]["reason"]
        assert red["checks"][silent[0]]["age_s"] >= 2
        assert (await get("/health"))[0] == 200
        await until_ready(200, 20)  # the mute window ends: ready again
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert "Traceback" not in output.decode()


@pytest.mark.integration
async def test_health_fails_after_the_event_loop_was_blocked_naming_how_long(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    runner = await ingest_command._serve_metrics(run.ingestor, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/health"
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(0.6)  # the loop monitor's first wakes
            async with http.get(url) as response:
                assert response.status == 200 and (await response.json())["status"] == "ok"
            time.sleep(3.0)  # a blocking call on the event loop (what a CPU-bound bug does)
            await asyncio.sleep(0.6)
            async with http.get(url) as response:
                body = await response.json()
            assert response.status == 503
            assert re.fullmatch(r"event loop blocked for [23]\.\d+s, \d+s ago", body["problems"][0])
            assert "connection:" + run.ingestor.connections[0].name in body["tasks_alive"]
    finally:
        await runner.cleanup()


def _sample(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.integration
async def test_zero_packet_frame_and_deeply_nested_text_do_not_stop_ingestion(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    await _until(lambda: run.ingestor.stats.ticks > 0, what="first ticks")
    empty_before = _sample("strikeflow_ws_frame_errors_total", {"reason": "no_packets"})
    text_before = _sample("strikeflow_ws_frame_errors_total", {"reason": "bad_text"})
    for client in list(simulator.clients):
        await client.ws.send_bytes(b"\x00\x00")  # a frame of 0 packets
        await client.ws.send_str("[" * 100_000)  # JSON nested too deep to parse
    await _until(lambda: _sample("strikeflow_ws_frame_errors_total", {"reason": "no_packets"}) > empty_before
                 and _sample("strikeflow_ws_frame_errors_total", {"reason": "bad_text"}) > text_before,
                 what="both messages counted")
    ticks = run.ingestor.stats.ticks
    await _until(lambda: run.ingestor.stats.ticks > ticks + 20, what="ticks after the hostile messages")
    assert run.ingestor.stats.reconnects == 0 and all(c.connected for c in run.ingestor.connections)
    assert not run.ingestor.tasks.dead


@pytest.mark.integration
async def test_a_message_over_the_largest_kite_frame_is_refused_unbuffered_and_the_feed_goes_on(
        kite_simulator, start_ingest) -> None:  # noqa: ANN001
    from pipeline.feed.connection import MAX_MESSAGE_BYTES

    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    await _until(lambda: run.ingestor.stats.ticks > 0, what="first ticks")
    errors = _sample("strikeflow_ws_frame_errors_total", {"reason": "ws_error"})
    for client in list(simulator.clients):
        await client.ws.send_bytes(b"\x00\x01" + b"\x00" * (2 * MAX_MESSAGE_BYTES))  # 2 MiB: no Kite frame is
    await _until(lambda: _sample("strikeflow_ws_frame_errors_total", {"reason": "ws_error"}) > errors,
                 what="the oversized message refused")
    ticks = run.ingestor.stats.ticks
    await _until(lambda: run.ingestor.stats.ticks > ticks + 20, what="ticks after the oversized message")
    assert not run.ingestor.tasks.dead


@pytest.mark.integration
async def test_each_background_task_killed_in_turn_comes_back_and_ticks_keep_flowing(kite_simulator,
                                                                                     start_ingest) -> None:  # noqa: ANN001
    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    run.ingestor.tasks.restart_s = (0.2, 0.2)
    await _until(lambda: run.ingestor.stats.ticks > 0, what="first ticks")
    names = sorted(run.ingestor.tasks._tasks)
    assert "quiet-clock" in names and any(n.startswith("connection:") for n in names)
    for name in names:
        before = _sample("strikeflow_background_task_deaths_total", {"task": name})
        victim = run.ingestor.tasks._tasks[name]
        victim.cancel()
        await _until(lambda n=name, v=victim: run.ingestor.tasks._tasks[n] is not v
                     and not run.ingestor.tasks._tasks[n].done(), what=f"{name} started again")
        assert _sample("strikeflow_background_task_deaths_total", {"task": name}) == before + 1
        ticks = run.ingestor.stats.ticks
        await _until(lambda t=ticks: run.ingestor.stats.ticks > t + 20, what=f"ticks after {name} came back")
    assert run.ingestor.tasks.dead == {} and run.ingestor.tasks.restarts == {n: 1 for n in names}


@pytest.mark.integration
async def test_a_far_future_tick_is_rejected_and_never_moves_the_exchange_clock(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    from pipeline.feed.kite_encode import encode_frame

    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    await _until(lambda: run.ingestor.stats.ticks > 0, what="first ticks")
    rejected = _sample("strikeflow_ticks_rejected_total", {"stage": "ingest", "reason": "future"})
    token = int(run.ingestor.index.tokens[run.ingestor.index.kind == 3][0]) if (run.ingestor.index.kind == 3).any() \
        else int(run.ingestor.index.tokens[0])
    frame = simulator.market.snapshot(simulator.market.positions(np.array([token], dtype=np.uint32)),
                                      np.array([3], dtype=np.uint8))
    frame["exchange_timestamp"] = 4_000_000_000  # the year 2096
    for client in list(simulator.clients):
        await client.ws.send_bytes(encode_frame(frame))
    await _until(lambda: _sample("strikeflow_ticks_rejected_total", {"stage": "ingest", "reason": "future"}) > rejected,
                 what="the far-future tick rejected")
    ticks = run.ingestor.stats.ticks
    await _until(lambda: run.ingestor.stats.ticks > ticks + 20, what="ticks after the far-future one")
    assert run.ingestor.last_exchange_ts < 4_000_000_000 and run.ingestor.last_exchange_ts <= time.time() + 300


@pytest.mark.integration
async def test_a_bad_feed_url_never_logs_the_access_token(kafka_url: str, unique_name: str, tmp_path) -> None:  # noqa: ANN001
    secret = "SECRET-token-7f3a9c"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("STRIKEFLOW_", "KITE_"))},
           "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks",
           "KITE_API_KEY": "key", "KITE_ACCESS_TOKEN": secret, "STRIKEFLOW_UNDERLYINGS": '["NIFTY"]'}
    # the instruments come from a file-less simulator: use a real one for the master, a bad URL for the feed
    from sim.server import SimConfig, serve

    simulator, runner, port = await serve(SimConfig(port=0, api_key="key", access_token=secret))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.commands.cli", "ingest", "--ws-url",
                                 "ws://127.0.0.1:99999", "--api-url", f"http://127.0.0.1:{port}",
                                 "--metrics-port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        await asyncio.sleep(8)  # start-up, then several failed connects with the backoff
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        await runner.cleanup()
    text = out.decode(errors="replace")
    assert "InvalidUrl" in text or "connection" in text, text[-2000:]  # the failure was logged...
    assert secret not in text  # ...without the token
    assert proc.returncode is not None


@pytest.mark.integration
async def test_a_connection_task_that_ends_is_reported_down_and_not_ready(kite_simulator, start_ingest) -> None:  # noqa: ANN001
    from pipeline.runtime.health import Checks

    simulator, addr = await kite_simulator()
    run = await start_ingest(simulator, addr)
    await _until(lambda: all(c.connected for c in run.ingestor.connections), what="connected")
    task = next(t for t in asyncio.all_tasks() if t.get_name().startswith("connection:"))
    task.cancel()  # the task ends, whatever ended it
    await _until(lambda: task.done(), what="the task to end")
    checks = Checks()
    run.ingestor.feed_checks(checks, 10.0)
    name = task.get_name().removeprefix("connection:")
    assert _sample("strikeflow_ws_connected", {"connection": name}) == 0
    assert checks.report()["checks"][f"feed:{name}"]["ok"] is False and checks.report()["ready"] is False
