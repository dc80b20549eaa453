"""Latency percentiles as the benchmarks report them."""

from __future__ import annotations

import numpy as np


def percentiles_ms(values: np.ndarray) -> dict[str, float | None]:
    """{p50, p95, p99, max} of ``values`` (milliseconds), rounded to 0.1 ms; None each when empty."""
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1),
            "max": round(float(values.max()), 1)}
