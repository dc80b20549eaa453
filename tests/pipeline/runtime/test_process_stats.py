import os
import time

import pytest

from pipeline.runtime.process_stats import ProcessSampler, cpu_seconds

pytestmark = pytest.mark.unit


def test_sampler_reads_rss_peak_and_cpu_of_a_busy_process() -> None:
    sampler = ProcessSampler(os.getpid())
    t0 = time.time()
    assert sampler.sample(t0) > 10
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn CPU
        pass
    t1 = time.time()
    sampler.sample(t1)
    assert sampler.peak_rss_mb >= sampler.rss[-1][1] > 0
    assert 20 <= sampler.cpu_percent(t0, t1) <= 110
    assert sampler.cpu_percent(t1, t1 + 5) is None  # fewer than two samples


def test_rss_slope_is_the_least_squares_slope_per_minute() -> None:
    sampler = ProcessSampler(os.getpid())
    sampler.rss = [(0.0, 100.0), (60.0, 101.0), (120.0, 102.0), (180.0, 103.0)]
    assert sampler.rss_slope_mb_per_min(0.0) == pytest.approx(1.0)
    assert sampler.rss_slope_mb_per_min(150.0) is None


def test_a_process_that_is_gone_reads_as_none() -> None:
    assert cpu_seconds(2 ** 22 + 7) is None
    assert ProcessSampler(2 ** 22 + 7).sample(time.time()) is None
