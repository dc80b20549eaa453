"""Retrying an async operation with exponential backoff while a service is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def retry_forever(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    on_failure: Callable[[BaseException, float], None],
    start_s: float = 1.0,
    max_s: float = 30.0,
) -> T:
    """``await attempt()`` until it returns; on ``retry_on`` call ``on_failure(exc, delay_s)`` (log,
    count), sleep ``delay_s`` and double it up to ``max_s``. Anything else propagates; so does
    cancellation, which is how callers stop waiting."""
    delay = start_s
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            on_failure(exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_s)
