"""Per-instrument state of one aggregator, in dense arrays indexed by *slot* (token -> slot).

- ``last_recv``: the newest accepted ``recv_ts`` (redelivery detection);
- tail: the newest *closed* tick (exchange_ts, recv_ts, and the running maximum
  of cumulative volume of its trading day there): the volume baseline of the
  instrument's next bar to close;
- base: the same of the newest tick *freed* from the late window: the baseline
  below the oldest retained bucket, for late corrections.
"""

from __future__ import annotations

import numpy as np

NO_TS = np.iinfo(np.int64).min


_ARRAYS = ("_known_tokens", "_known_slots", "token", "last_recv", "tail_valid", "tail_ex", "tail_recv", "tail_cum",
           "base_valid", "base_ex", "base_recv", "base_cum")


class SlotTable:
    def __init__(self) -> None:
        self._known_tokens = np.empty(0, np.int64)  # sorted
        self._known_slots = np.empty(0, np.int64)
        self.token = np.empty(0, np.uint32)  # slot -> token
        self.last_recv = np.empty(0, np.int64)
        self.tail_valid = np.empty(0, bool)
        self.tail_ex = np.empty(0, np.int64)
        self.tail_recv = np.empty(0, np.int64)
        self.tail_cum = np.empty(0, np.int64)
        self.base_valid = np.empty(0, bool)
        self.base_ex = np.empty(0, np.int64)
        self.base_recv = np.empty(0, np.int64)
        self.base_cum = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self.token)

    def to_state(self) -> dict[str, np.ndarray]:
        """Every per-slot array and the token -> slot lookup (views: encode them before the table changes)."""
        return {name: getattr(self, name) for name in _ARRAYS}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> SlotTable:
        table = cls()
        for name in _ARRAYS:
            setattr(table, name, np.asarray(state[name], getattr(table, name).dtype).copy())
        return table

    def slots_for(self, tokens: np.ndarray) -> np.ndarray:
        """The slot of each token, adding new instruments (one searchsorted when all are known)."""
        tokens = tokens.astype(np.int64)
        known = self._known_tokens
        idx = np.searchsorted(known, tokens)
        if len(known):
            found = known[np.minimum(idx, len(known) - 1)] == tokens
            if found.all():
                return self._known_slots[idx]
            new = np.unique(tokens[~found])
        else:
            new = np.unique(tokens)
        self._add(new)
        return self._known_slots[np.searchsorted(self._known_tokens, tokens)]

    def _add(self, new: np.ndarray) -> None:
        first = len(self.token)
        all_tokens = np.concatenate([self._known_tokens, new])
        all_slots = np.concatenate([self._known_slots, np.arange(first, first + len(new))])
        order = np.argsort(all_tokens, kind="stable")
        self._known_tokens, self._known_slots = all_tokens[order], all_slots[order]
        k = len(new)
        self.token = np.concatenate([self.token, new.astype(np.uint32)])
        self.last_recv = np.concatenate([self.last_recv, np.full(k, NO_TS)])
        for name in ("tail_valid", "base_valid"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(k, bool)]))
        for name in ("tail_ex", "tail_recv", "tail_cum", "base_ex", "base_recv", "base_cum"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(k, np.int64)]))

    def duplicates(self, slots: np.ndarray, recv: np.ndarray, too_late: np.ndarray) -> np.ndarray:
        """recv_ts <= newest accepted recv_ts of the instrument (state, or earlier in this batch)."""
        n = len(slots)
        dup = recv <= self.last_recv[slots]
        if n == 1 or bool((recv[1:] > recv[:-1]).all()):
            return dup  # receive order = recv_ts order: no redelivery inside the batch
        order = np.argsort(slots, kind="stable")
        s = slots[order]
        _, rank = np.unique(recv[order], return_inverse=True)
        rank = rank.reshape(-1) + 1
        width = n + 1
        # grouped running max of (rank of accepted ticks), by slot, in receive order
        val = np.where(too_late[order], 0, rank) + s * width
        cm = np.maximum.accumulate(val)
        prev = np.empty(n, np.int64)
        prev[0] = 0
        prev[1:] = cm[:-1] - s[1:] * width
        group_start = np.empty(n, bool)
        group_start[0] = True
        np.not_equal(s[1:], s[:-1], out=group_start[1:])
        prev[group_start] = 0
        dup[order] |= rank <= prev
        return dup

    def set_tail(self, slots: np.ndarray, ex: np.ndarray, recv: np.ndarray, cum: np.ndarray) -> None:
        self.tail_valid[slots] = True
        self.tail_ex[slots] = ex
        self.tail_recv[slots] = recv
        self.tail_cum[slots] = cum

    def set_base(self, slots: np.ndarray | int, ex: np.ndarray | int, recv: np.ndarray | int,
                 cum: np.ndarray | int) -> None:
        """The freed baseline of ``slots``: the end (exchange time, receive time, running volume maximum) of
        their newest bucket that left the late window. An older end (in event order) never replaces it: when one
        batch closes a bucket and frees older ones, the older buckets' ends come after the newer one's."""
        slots = np.atleast_1d(np.asarray(slots))
        ex, recv, cum = (np.broadcast_to(np.asarray(v, dtype=np.int64), slots.shape) for v in (ex, recv, cum))
        old_ex, old_recv = self.base_ex[slots], self.base_recv[slots]
        newer = ~self.base_valid[slots] | (ex > old_ex) | ((ex == old_ex) & (recv >= old_recv))
        if not newer.all():
            slots, ex, recv, cum = slots[newer], ex[newer], recv[newer], cum[newer]
        self.base_valid[slots] = True
        self.base_ex[slots] = ex
        self.base_recv[slots] = recv
        self.base_cum[slots] = cum
