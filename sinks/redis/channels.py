"""Redis channel and key names; ``prefix`` is prepended to every name ("" in production, per test in tests)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.records.time_units import label_of


@dataclass(frozen=True)
class Channels:
    prefix: str = ""

    def ticks(self, underlying: str) -> str:
        return f"{self.prefix}ticks:{underlying}"

    def tick(self, token: int | str) -> str:
        return f"{self.prefix}tick:{token}"

    def snapshot(self, underlying: str, expiry: str) -> str:
        """Hash of the latest tick per instrument; instruments without an expiry go to ``:spot``."""
        return f"{self.prefix}snapshot:{underlying}:{expiry or 'spot'}"

    def snapshot_recv(self, underlying: str) -> str:
        """Hash of the newest published ``recv_ts`` (epoch µs) per instrument token: the forward-only gate's
        memory (``sinks.redis.forward_gate``)."""
        return f"{self.prefix}snapshot_recv:{underlying}"

    def bars(self, interval_s: int, underlying: str) -> str:
        return f"{self.prefix}bars:{label_of(interval_s)}:{underlying}"

    def vix(self, underlying: str) -> str:
        return f"{self.prefix}vix:{underlying}"

    def chain(self, underlying: str, expiry: str) -> str:
        return f"{self.prefix}chain:{underlying}:{expiry}"
