"""The worker's instrument index: loaded from PostgreSQL once connected, reloaded when a batch carries a token
it does not list (the ingestor adds contracts at start-up), and handed to the engines, which own the copy
they price against (``pipeline.core.engines.Engines.rebase``).

The first load waits for the database and its migration with the backoff, whatever the failure (nothing
can be priced without an index); a failed reload keeps the index already loaded.
A token that is in no instruments table costs one query per ``REFRESH_MIN_INTERVAL_S`` (seconds), not one
per batch: its ticks are priced as unknown (NaN Greeks) meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from loguru import logger

from pipeline.core.engines import Engines
from pipeline.runtime.backoff import retry_forever
from sinks.instrument_store import load_instrument_index

REFRESH_MIN_INTERVAL_S = 10.0


class WorkerInstruments:
    """Keeps ``engines.index`` current (see the module docstring); ``clock``: monotonic seconds."""

    def __init__(self, engines: Engines, schema: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.engines = engines
        self.schema = schema
        self.clock = clock
        self._loaded = False
        self._refreshed_at = float("-inf")

    async def ensure(self, pool: Any, tokens: np.ndarray) -> None:
        """Load the index on first use; reload it when ``tokens`` holds one it does not list (rate-limited)."""
        if self._loaded and not np.any(self.engines.index.positions(tokens) < 0):
            return
        now = self.clock()
        if self._loaded and now - self._refreshed_at < REFRESH_MIN_INTERVAL_S:
            return
        self._refreshed_at = now
        if not self._loaded:  # nothing can be priced without it: wait (logged) for the database and its migration,
            # whatever the failure, as the worker waited for it before the index moved out of the connections
            index = await retry_forever(lambda: load_instrument_index(pool, self.schema), retry_on=Exception,
                                        on_failure=self._failed, start_s=0.5, max_s=10.0)
        else:
            try:
                index = await load_instrument_index(pool, self.schema)
            except Exception as exc:  # noqa: BLE001 - keep pricing with the index we have; try again later
                logger.warning("cannot reload the instrument index ({}: {}); keeping the one loaded",
                               type(exc).__name__, exc)
                return
        self.engines.rebase(index)
        self._loaded = True

    def _failed(self, exc: BaseException, delay: float) -> None:
        logger.warning("cannot load the instrument index ({}: {}); retrying in {:.1f}s", type(exc).__name__, exc, delay)


__all__ = ["REFRESH_MIN_INTERVAL_S", "WorkerInstruments"]
