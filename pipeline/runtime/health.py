"""Readiness and liveness that tell the truth: named checks with their age, watched background tasks and
an event-loop heartbeat. Served as ``/ready`` and ``/health`` by ingest and worker.

- A *check* (:class:`Checks`) is something the process needs that can fail while it keeps running: the
  broker, the database and its schema version, Redis, a feed connection, the consumer's progress. Each has
  ``ok``, ``age_s`` (seconds since it last succeeded; null when it never did) and, when not ok, a
  ``reason``. ``/ready`` is 200 only when every check is ok; otherwise 503 with the same JSON.
- A background task the process needs is started with :meth:`TaskWatch.spawn` (or handed to
  :meth:`TaskWatch.watch`): when it ends with an exception it is logged with its traceback, counted in
  ``strikeflow_background_task_deaths_total{task}``, and both ``/ready`` and ``/health`` fail, naming it.
  A task that ends without an error while the process still needs it is a death too (reason "exited").
- :class:`LoopMonitor` wakes every ``interval_s``; when it wakes more than ``blocked_s`` late the loop
  was blocked (a CPU-bound call, a blocking I/O call). ``/health`` fails while the loop is late and for
  ``recent_s`` after a block, so a probe that got through just after a stall still sees it.

Times are seconds from the injected clock (``pipeline.runtime.clock``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from prometheus_client import Counter, Gauge

from pipeline.runtime.backoff import Backoff
from pipeline.runtime.clock import SYSTEM_CLOCK, Clock


@dataclass
class _Check:
    ok: bool = False
    last_ok: float | None = None
    reason: str | None = "not checked yet"
    info: dict[str, Any] | None = None  # what the check found (e.g. the schema version), reported as is


class Checks:
    """Named readiness checks: each :meth:`passed` or :meth:`failed` at a time (module docstring)."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._checks: dict[str, _Check] = {}

    def expect(self, name: str, reason: str = "not checked yet") -> None:
        """Declare a check that is not ok until it first passes."""
        self._checks.setdefault(name, _Check(reason=reason))

    def passed(self, name: str, at: float | None = None, **info: Any) -> None:
        check = self._checks.setdefault(name, _Check())
        check.ok, check.reason, check.info = True, None, info or check.info
        check.last_ok = self.clock.time() if at is None else at

    def failed(self, name: str, reason: str) -> None:
        check = self._checks.setdefault(name, _Check())
        check.ok, check.reason = False, reason

    def set(self, name: str, ok: bool, reason: str, last_ok: float | None) -> None:
        """State a check whole (for checks computed from state at request time)."""
        self._checks[name] = _Check(ok=ok, last_ok=last_ok, reason=None if ok else reason)

    def report(self) -> dict[str, Any]:
        """``{"ready": bool, "checks": {name: {"ok", "age_s", "reason"}}}``."""
        now = self.clock.time()
        checks = {}
        for name, c in sorted(self._checks.items()):
            age = None if c.last_ok is None else round(max(now - c.last_ok, 0.0), 3)
            checks[name] = {"ok": c.ok, "age_s": age, **({} if c.ok else {"reason": c.reason}), **(c.info or {})}
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}


class TaskWatch:
    """The background tasks a process needs; deaths are logged, counted and remembered (module docstring).

    A supervised task (:meth:`supervise`) is started again after a death, with the one backoff; the death
    still counts, and readiness is red until the new one runs. A task cancelled while the process is not
    stopping is a death too (reason "cancelled"): nothing in a running process ends silently."""

    def __init__(self, deaths: Counter, restart_s: tuple[float, float] = (1.0, 30.0)) -> None:
        self.deaths = deaths
        self.restart_s = restart_s
        self.dead: dict[str, str] = {}
        self.restarts: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._factories: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {}
        self._backoffs: dict[str, Backoff] = {}
        self._stopping = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, one_shot: bool = False) -> asyncio.Task:
        return self.watch(asyncio.create_task(coro, name=name), name, one_shot)

    def supervise(self, factory: Callable[[], Coroutine[Any, Any, Any]], name: str) -> asyncio.Task:
        """Run ``factory()`` as ``name`` and start it again whenever it dies (see the class docstring)."""
        self._factories[name] = factory
        self._backoffs.setdefault(name, Backoff(*self.restart_s))
        return self.spawn(factory(), name)

    def watch(self, task: asyncio.Task, name: str, one_shot: bool = False) -> asyncio.Task:
        """Watch ``task``; ``one_shot``: a task that finishes its job (only an exception is a death)."""
        self._tasks[name] = task
        task.add_done_callback(lambda t: self._ended(name, t, one_shot))
        return task

    def stopping(self) -> None:
        """The process is shutting down: tasks that end from now on are not deaths."""
        self._stopping = True

    async def wait(self, names: Iterable[str]) -> None:
        """Until the tasks of these names have ended (after :meth:`stopping`: no restart replaces them)."""
        await asyncio.gather(*(self._tasks[name] for name in names if name in self._tasks), return_exceptions=True)

    def _ended(self, name: str, task: asyncio.Task, one_shot: bool) -> None:
        if self._stopping or self._tasks.get(name) is not task:
            return
        exc = None if task.cancelled() else task.exception()
        if exc is None and one_shot and not task.cancelled():
            self._tasks.pop(name, None)
            return
        reason = "cancelled" if task.cancelled() else "exited" if exc is None else f"{type(exc).__name__}: {exc}"
        self.dead[name] = reason
        self.deaths.labels(name).inc()
        restart = name in self._factories
        then = "; starting it again" if restart else ""
        if exc is None:
            logger.error("background task {} {} while the process still needs it{}", name,
                         "was cancelled" if task.cancelled() else "exited", then)
        else:
            logger.opt(exception=exc).error("background task {} died: {}{}", name, reason, then)
        if restart:
            asyncio.get_running_loop().call_later(self._backoffs[name].next(), self._restart, name)

    def _restart(self, name: str) -> None:
        if self._stopping:
            return
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self.dead.pop(name, None)
        self.spawn(self._factories[name](), name)

    def alive(self) -> list[str]:
        return sorted(name for name, task in self._tasks.items() if not task.done())

    def into(self, checks: Checks) -> None:
        """State the ``tasks`` check: ok while no watched task has died."""
        if self.dead:
            checks.failed("tasks", "; ".join(f"{n} died ({r})" for n, r in sorted(self.dead.items())))
        else:
            checks.passed("tasks")


class LoopMonitor:
    """Measures how late the event loop wakes (module docstring); ``lag`` (a gauge) is set on each wake."""

    def __init__(self, lag: Gauge, interval_s: float = 0.25, blocked_s: float = 2.0, recent_s: float = 30.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.lag, self.interval_s, self.blocked_s, self.recent_s = lag, interval_s, blocked_s, recent_s
        self._now = clock or (lambda: asyncio.get_running_loop().time())
        self.last_wake: float | None = None
        self.last_block: tuple[float, float] | None = None  # (when it ended, how long it lasted), loop seconds

    async def run(self) -> None:
        while True:
            before = self._now()
            await asyncio.sleep(self.interval_s)
            self.woke(before, self._now())

    def woke(self, slept_at: float, now: float) -> None:
        late = max(now - slept_at - self.interval_s, 0.0)
        self.lag.set(late)
        self.last_wake = now
        if late > self.blocked_s:
            self.last_block = (now, late)
            logger.error("event loop blocked for {:.1f}s", late)

    def problem(self) -> str | None:
        """Why the loop is not live, or None."""
        now = self._now()
        if self.last_wake is not None and now - self.last_wake > self.interval_s + self.blocked_s:
            return f"event loop has not woken for {now - self.last_wake:.1f}s"
        if self.last_block is not None and now - self.last_block[0] <= self.recent_s:
            return f"event loop blocked for {self.last_block[1]:.1f}s, {now - self.last_block[0]:.0f}s ago"
        return None


class ConsumerProgress:
    """Per partition, the newest offset the agent finished and when. A partition is *stalled* when records
    wait on it (its high watermark is beyond both the next offset to process and the committed offset) and
    none was finished for ``stall_s``: a stuck agent, not a quiet feed."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._done: dict[Any, tuple[int, float]] = {}  # tp -> (next offset to process, when)
        self._seen: dict[Any, float] = {}  # tp -> when it was first asked about (assigned)

    def processed(self, tp: Any, offset: int) -> None:
        self._done[tp] = (offset + 1, self.clock.time())

    def into(self, checks: Checks, highwaters: dict[Any, int | None], committed: dict[Any, int | None],
             stall_s: float) -> None:
        """State the ``consumer`` check for the assigned partitions (their high watermarks and committed
        offsets; None = not known yet)."""
        now = self.clock.time()
        if not highwaters:
            checks.failed("consumer", "no partitions assigned yet (joining the group)")
            return
        stalled = []
        for tp, high in sorted(highwaters.items()):
            since = self._seen.setdefault(tp, now)
            done, at = self._done.get(tp, (0, since))
            waiting = (high or 0) - max(done, committed.get(tp) or 0)
            if waiting > 0 and now - at > stall_s:
                stalled.append(f"{tp.topic}:{tp.partition} has {waiting} records waiting, none processed for "
                               f"{now - at:.0f}s")
        if stalled:
            checks.failed("consumer", "; ".join(stalled))
        else:
            checks.passed("consumer")


def liveness(monitor: LoopMonitor, tasks: TaskWatch) -> tuple[bool, dict[str, Any]]:
    """(alive, the ``/health`` JSON): not alive when the loop is blocked or a needed task died."""
    problems = [p for p in [monitor.problem()] if p]
    problems += [f"task {n} died ({r})" for n, r in sorted(tasks.dead.items())]
    body: dict[str, Any] = {"status": "ok" if not problems else "failing", "tasks_alive": tasks.alive()}
    if problems:
        body["problems"] = problems
    return not problems, body


__all__ = ["Checks", "ConsumerProgress", "LoopMonitor", "TaskWatch", "liveness"]
