"""Fault windows of the simulated market: stalls, refused upgrades, malformed frames.

Times are read from an injected clock (``pipeline.runtime.clock``), so a test
opens a window and moves a ``ManualClock`` instead of sleeping.
"""

from __future__ import annotations

from pipeline.runtime.clock import SYSTEM_CLOCK, Clock


class FaultWindows:
    """Which faults are active now.

    - ``stall(s)``: for ``s`` seconds send nothing (no data, no heartbeat), sockets stay open;
    - ``refuse(s)``: for ``s`` seconds refuse WebSocket upgrades (HTTP 503);
    - ``malform(n)``: truncate the next ``n`` frames; ``malformed_every`` truncates every N-th frame.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK, malformed_every: int = 0) -> None:
        self.clock = clock
        self.malformed_every = malformed_every
        self.malformed_pending = 0
        self._stall_until = float("-inf")
        self._refuse_until = float("-inf")

    def stall(self, seconds: float) -> None:
        self._stall_until = self.clock.monotonic() + seconds

    def refuse(self, seconds: float) -> None:
        self._refuse_until = self.clock.monotonic() + seconds

    def malform(self, count: int) -> None:
        self.malformed_pending += count

    def stalled(self) -> bool:
        return self.clock.monotonic() < self._stall_until

    def refusing(self) -> bool:
        return self.clock.monotonic() < self._refuse_until

    def corrupt(self, frame: bytes, frame_number: int) -> bytes:
        """``frame`` as it goes out as the ``frame_number``-th frame (1-based): truncated when a fault says so."""
        due = self.malformed_every and frame_number % self.malformed_every == 0
        if self.malformed_pending <= 0 and not due:
            return frame
        self.malformed_pending = max(self.malformed_pending - 1, 0)
        return frame[: max(len(frame) // 2, 3)] + b"\xff"  # a truncated packet: must be rejected whole
