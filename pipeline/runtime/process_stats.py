"""Resident memory and CPU time of a process, read from Linux's ``/proc`` (no dependency).

``ProcessSampler(pid).sample(now)`` appends ``(now, rss_mb)`` to ``rss`` and
returns the reading; ``peak_rss_mb`` is the kernel's high-water mark
(``VmHWM``: the peak even between samples); ``cpu_percent(since, now)`` is the
CPU time (user + system) used between two samples over their wall time, in
percent of one core (200 = both cores of a 2-core machine). A process that
has exited keeps its last readings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used so far (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime (fields 14, 15 of proc(5))


@dataclass
class ProcessSampler:
    pid: int
    rss: list[tuple[float, float]] = field(default_factory=list)  # (wall seconds, MB)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (wall seconds, CPU seconds)
    peak_rss_mb: float = 0.0

    def sample(self, now: float) -> float | None:
        """Read RSS and CPU time now; the RSS in MB (None when the process is gone)."""
        rss_kb, peak_kb, cpu = _status_kb(self.pid, "VmRSS:"), _status_kb(self.pid, "VmHWM:"), cpu_seconds(self.pid)
        if rss_kb is None or cpu is None:
            return None
        self.rss.append((now, rss_kb / 1024))
        self.cpu.append((now, cpu))
        self.peak_rss_mb = max(self.peak_rss_mb, (peak_kb or rss_kb) / 1024)
        return rss_kb / 1024

    def cpu_percent(self, since: float, until: float) -> float | None:
        """Percent of one core used between the first sample at or after ``since`` and the last at or
        before ``until``; None with fewer than two such samples."""
        inside = [(t, c) for t, c in self.cpu if since <= t <= until]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return 100.0 * (c1 - c0) / (t1 - t0)

    def rss_slope_mb_per_min(self, since: float) -> float | None:
        """Least-squares slope of RSS over time from ``since`` on, MB per minute (None: too few samples)."""
        points = [(t, mb) for t, mb in self.rss if t >= since]
        if len(points) < 3:
            return None
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_m = sum(m for _, m in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points)
        if var == 0:
            return None
        return 60.0 * sum((t - mean_t) * (m - mean_m) for t, m in points) / var
