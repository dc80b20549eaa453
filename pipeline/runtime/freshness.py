"""Ages that grow while nothing arrives: the freshness signals on-call pages on.

A gauge set when data arrives (``strikeflow_process_lag_seconds``) freezes when the data stops: through
a dead ingestor or a silent feed it keeps its last, healthy value. An :class:`AgeGauge` instead keeps
the time each key (a connection, an underlying) last saw data and reports ``now - last`` when scraped,
so the age of a silent feed grows with the silence. Times are epoch seconds from the injected clock.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from pipeline.runtime.clock import SYSTEM_CLOCK, Clock


class AgeGauge(Collector):
    """A gauge ``name{label}`` = seconds since ``touch(label)`` last ran for that label (at scrape time)."""

    def __init__(self, name: str, documentation: str, label: str, registry: CollectorRegistry | None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.name, self.documentation, self.label, self.clock = name, documentation, label, clock
        self._last: dict[str, float] = {}
        if registry is not None:
            registry.register(self)

    def touch(self, value: str, at: float | None = None) -> None:
        """``value`` saw data at ``at`` (epoch seconds; default now); an older time never moves it back."""
        at = self.clock.time() if at is None else at
        if at > self._last.get(value, float("-inf")):
            self._last[value] = at

    def ages(self) -> dict[str, float]:
        now = self.clock.time()
        return {value: max(now - at, 0.0) for value, at in self._last.items()}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=[self.label])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, age in sorted(self.ages().items()):
            family.add_metric([value], age)
        yield family
