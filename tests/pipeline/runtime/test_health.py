"""Readiness checks, watched tasks, the loop monitor and consumer progress (pipeline.runtime.health), on a
manual clock and real asyncio tasks."""

from __future__ import annotations

import asyncio
from collections import namedtuple

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.runtime.clock import ManualClock
from pipeline.runtime.health import (
    Checks,
    ConsumerProgress,
    LoopMonitor,
    TaskWatch,
    liveness,
)

pytestmark = pytest.mark.unit

TP = namedtuple("TP", "topic partition")


def _deaths() -> Counter:
    return Counter("deaths_total", "test", ["task"], registry=CollectorRegistry())


def _lag() -> Gauge:
    return Gauge("lag_seconds", "test", registry=CollectorRegistry())


def test_report_gives_each_checks_age_since_it_last_passed_and_the_reason_when_failing() -> None:
    clock = ManualClock(1_000.0)
    checks = Checks(clock)
    checks.expect("database")
    checks.passed("redis")
    clock.advance(7.5)
    checks.failed("redis", "unreachable (ConnectionError)")
    report = checks.report()
    assert report["ready"] is False
    assert report["checks"]["redis"] == {"ok": False, "age_s": 7.5, "reason": "unreachable (ConnectionError)"}
    assert report["checks"]["database"] == {"ok": False, "age_s": None, "reason": "not checked yet"}
    checks.passed("database", schema_version="0011_volatility_analytics")
    checks.passed("redis")
    assert checks.report() == {"ready": True, "checks": {"database": {"ok": True, "age_s": 0.0,
                                                                      "schema_version": "0011_volatility_analytics"},
                                                         "redis": {"ok": True, "age_s": 0.0}}}


async def test_a_task_that_dies_is_counted_named_and_fails_ready_and_health() -> None:
    deaths = _deaths()
    tasks = TaskWatch(deaths)

    async def crash() -> None:
        raise ValueError("bad frame")

    async def forever() -> None:
        await asyncio.Event().wait()

    tasks.spawn(crash(), "decoder")
    keeper = tasks.spawn(forever(), "keeper")
    tasks.spawn(asyncio.sleep(0), "topic-setup", one_shot=True)  # a one-shot task that finishes is no death
    await asyncio.sleep(0.05)
    assert tasks.dead == {"decoder": "ValueError: bad frame"}
    assert deaths.labels("decoder")._value.get() == 1
    assert tasks.alive() == ["keeper"]
    checks = Checks(ManualClock())
    tasks.into(checks)
    assert checks.report()["checks"]["tasks"]["reason"] == "decoder died (ValueError: bad frame)"
    alive, body = liveness(LoopMonitor(_lag(), clock=lambda: 0.0), tasks)
    assert not alive and body["problems"] == ["task decoder died (ValueError: bad frame)"]
    tasks.stopping()
    keeper.cancel()
    await asyncio.sleep(0)
    assert set(tasks.dead) == {"decoder"}


async def test_a_needed_task_that_returns_is_a_death_too() -> None:
    tasks = TaskWatch(_deaths())
    tasks.spawn(asyncio.sleep(0), "reader")
    await asyncio.sleep(0.05)
    assert tasks.dead == {"reader": "exited"}


def test_loop_monitor_fails_health_while_the_loop_is_late_and_for_a_while_after_a_block() -> None:
    now = [100.0]
    monitor = LoopMonitor(_lag(), interval_s=0.25, blocked_s=2.0, recent_s=30.0, clock=lambda: now[0])
    monitor.woke(99.75, 100.0)  # on time
    assert monitor.problem() is None
    now[0] = 104.0  # no wake for 4 s: the loop is blocked right now
    assert monitor.problem() == "event loop has not woken for 4.0s"
    monitor.woke(100.0, 105.25)  # it woke 5 s late
    for t in range(106, 111):  # then on time again, every second (as far as the check is concerned)
        monitor.woke(t - 0.25, t)
    now[0] = 110.0
    assert monitor.problem() == "event loop blocked for 5.0s, 5s ago"
    now[0] = 136.0
    monitor.woke(135.75, 136.0)
    assert monitor.problem() is None


def test_consumer_is_stalled_only_when_records_wait_and_none_was_processed_for_stall_s() -> None:
    clock = ManualClock(0.0)
    progress = ConsumerProgress(clock)
    checks = Checks(clock)
    p0, p1 = TP("ticks", 0), TP("ticks", 1)
    progress.into(checks, {}, {}, stall_s=10)
    assert checks.report()["checks"]["consumer"]["reason"] == "no partitions assigned yet (joining the group)"
    progress.processed(p0, 41)
    progress.into(checks, {p0: 42, p1: 7}, {p1: 7}, stall_s=10)  # p0 caught up; p1's records all committed
    assert checks.report()["checks"]["consumer"]["ok"]
    clock.advance(11)
    progress.into(checks, {p0: 42, p1: 7}, {p1: 7}, stall_s=10)  # quiet, nothing waiting: still ok
    assert checks.report()["checks"]["consumer"]["ok"]
    progress.into(checks, {p0: 50, p1: 7}, {p1: 7}, stall_s=10)  # 8 records wait on p0, last progress 11 s ago
    consumer = checks.report()["checks"]["consumer"]
    assert consumer == {"ok": False, "age_s": 0.0,
                        "reason": "ticks:0 has 8 records waiting, none processed for 11s"}
    progress.processed(p0, 49)
    progress.into(checks, {p0: 50, p1: 7}, {p1: 7}, stall_s=10)
    assert checks.report()["checks"]["consumer"]["ok"]


async def test_a_supervised_task_that_dies_or_is_cancelled_is_counted_and_started_again() -> None:
    deaths = _deaths()
    tasks = TaskWatch(deaths, restart_s=(0.05, 0.05))
    runs: list[int] = []

    async def reader() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ConnectionResetError("the feed went away")
        await asyncio.Event().wait()

    tasks.supervise(reader, "reader")
    await asyncio.sleep(0.01)
    checks = Checks(ManualClock(0.0))
    tasks.into(checks)
    assert checks.report()["ready"] is False  # red until the new one runs
    await asyncio.sleep(0.1)
    assert runs == [0, 1] and tasks.alive() == ["reader"] and tasks.dead == {}
    tasks.into(checks)
    assert checks.report()["checks"]["tasks"]["ok"] is True
    tasks._tasks["reader"].cancel()  # cancelled by someone while the process runs: a death too
    await asyncio.sleep(0.1)
    assert runs == [0, 1, 2] and tasks.restarts == {"reader": 2}
    assert deaths.labels("reader")._value.get() == 2
    tasks.stopping()
    tasks._tasks["reader"].cancel()
    await tasks.wait(["reader"])
    await asyncio.sleep(0.1)
    assert runs == [0, 1, 2] and deaths.labels("reader")._value.get() == 2  # a shutdown is no death


async def test_a_watched_task_cancelled_while_running_turns_ready_red() -> None:
    tasks = TaskWatch(_deaths())

    async def forever() -> None:
        await asyncio.Event().wait()

    task = tasks.spawn(forever(), "publisher")
    task.cancel()
    await asyncio.sleep(0.01)
    assert tasks.dead == {"publisher": "cancelled"}
