"""When bars close: the event-time watermark of one interval and the rules read from it.

Pure: time comes only from the ticks' ``exchange_ts`` (epoch seconds).

- watermark: the largest ``exchange_ts`` received so far (every tick, any
  instrument, duplicates included);
- bucket ``b`` closes when ``b + interval_s + grace_s <= watermark``;
- the late window is ``L = max(late_window_s, grace_s)``; a tick with
  ``rule_bucket + rule_interval_s + L <= watermark`` (the watermark including
  the ticks before it in receive order, so the decision does not depend on
  batch boundaries) is too late. ``rule_interval_s`` is the finest bar interval
  (default: this one): every interval then judges a tick by the same bucket,
  so a tick reaches the bars of every interval or of none, and a 5-minute bar
  always equals its five 1-minute bars;
- a closed bucket's ticks are retained for corrections while ``b >
  watermark - interval_s - L``.
"""

from __future__ import annotations

import math

import numpy as np


class Watermark:
    def __init__(self, interval_s: int, grace_s: float, late_window_s: float, rule_interval_s: int | None = None) -> None:
        rule_interval_s = interval_s if rule_interval_s is None else int(rule_interval_s)
        if rule_interval_s <= 0 or interval_s % rule_interval_s:
            raise ValueError(f"the late rule's interval ({rule_interval_s}s) must divide the bar interval ({interval_s}s)")
        self.interval_s = interval_s
        self.rule_interval_s = rule_interval_s
        self.grace_s = grace_s
        self.late_s = max(late_window_s, grace_s)
        self.value: int | None = None

    def running(self, exchange_ts: np.ndarray) -> np.ndarray:
        """The watermark after each tick of a batch (receive order); advances ``value`` to the last."""
        run = np.maximum.accumulate(exchange_ts)
        if self.value is not None:
            np.maximum(run, self.value, out=run)
        self.value = int(run[-1])
        return run

    def too_late(self, exchange_ts: np.ndarray, running: np.ndarray) -> np.ndarray:
        rule = self.rule_interval_s
        return exchange_ts // rule * rule + (rule + self.late_s) <= running

    def closed_before(self) -> int:
        """Every bucket below this is closed (the watermark must be known)."""
        return int((self.value - self.grace_s) // self.interval_s) * self.interval_s

    def free_limit(self) -> float:
        """Closed buckets ``b <= free_limit()`` are out of the late window (-inf before any tick)."""
        return -math.inf if self.value is None else self.value - self.interval_s - self.late_s
