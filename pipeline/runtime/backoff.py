"""Exponential backoff: one policy for every retry loop (connections, service waits, sink writes, Redis).

:class:`Backoff` yields the delays (``start_s``, doubled per failure, capped at
``max_s``, optionally spread by +-``jitter``); :func:`retry_forever` is the
async loop most callers need. Loops with their own shape (a WebSocket that
reconnects forever, a REST call with a bounded number of attempts, the Redis
publisher that must also wake on shutdown) use :class:`Backoff` directly, so
the policy is written once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """Delays in seconds for consecutive failures; ``reset()`` after a success.

    ``next()`` returns the delay to wait now (``start_s``, then x2 up to ``max_s``),
    multiplied by a uniform factor in ``[1 - jitter, 1 + jitter]`` so that many
    clients do not retry in lock step. ``uniform`` is injectable for tests.
    """

    def __init__(self, start_s: float = 1.0, max_s: float = 30.0, *, jitter: float = 0.0,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        if start_s <= 0 or max_s < start_s:
            raise ValueError(f"backoff needs 0 < start_s <= max_s, got {start_s} and {max_s}")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {jitter}")
        self.start_s = start_s
        self.max_s = max_s
        self.jitter = jitter
        self._uniform = uniform
        self._delay = start_s

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.max_s)
        if self.jitter:
            delay *= self._uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    def reset(self) -> None:
        self._delay = self.start_s


async def retry_forever(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool],
    on_failure: Callable[[BaseException, float], None],
    start_s: float = 1.0,
    max_s: float = 30.0,
) -> T:
    """``await attempt()`` until it returns; on ``retry_on`` (exception types, or a predicate such as
    ``pipeline.runtime.errors.is_transient``) call ``on_failure(exc, delay_s)`` (log, count), sleep
    ``delay_s`` and double it up to ``max_s``. Anything else propagates; so does cancellation, which is how
    callers stop waiting."""
    backoff = Backoff(start_s, max_s)
    wanted = retry_on if not isinstance(retry_on, type | tuple) else (lambda exc: isinstance(exc, retry_on))
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not wanted(exc):
                raise
            delay = backoff.next()
            on_failure(exc, delay)
            await asyncio.sleep(delay)
