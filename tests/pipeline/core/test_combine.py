"""BarCombiner: coarse bars from fine bars, checked against a plain combination written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.bars.combine import BarCombiner
from pipeline.records.bars import BAR_DTYPE

pytestmark = pytest.mark.unit

T0 = 1_795_000_200  # a 5-minute boundary (divisible by 300)


def _fine(token: int, bucket: int, o: float, h: float, lo: float, c: float, volume: int, vwap: float,
          ticks: int, recv: int, oi: int = 100) -> np.ndarray:
    bar = np.zeros(1, BAR_DTYPE)
    bar["instrument_token"], bar["interval_s"], bar["bucket"] = token, 60, bucket
    bar["open"], bar["high"], bar["low"], bar["close"] = o, h, lo, c
    bar["volume"], bar["vwap"], bar["tick_count"], bar["last_recv_ts"] = volume, vwap, ticks, recv
    bar["oi"], bar["oi_open"], bar["oi_high"], bar["oi_low"] = oi, oi - 5, oi + 10, oi - 10
    bar["iv"] = 0.1 + recv * 1e-9
    return bar


def test_coarse_bar_is_the_plain_combination_of_its_fine_bars_once_the_last_minute_closes() -> None:
    combiner = BarCombiner(300, 60)
    minutes = [_fine(7, T0 + 60 * i, 100 + i, 105 + i, 95 - i, 101 + i, 10 * i, 100.5 + i, 3, 1000 + i, 100 + i)
               for i in range(5)]
    assert combiner.add(np.concatenate(minutes[:4]), T0 + 240, -math.inf) is None  # the 5th minute still open
    [bar] = combiner.add(minutes[4], T0 + 300, -math.inf)
    assert bar["bucket"] == T0 and bar["interval_s"] == 300 and bar["correction"] == 0
    assert bar["open"] == 100 and bar["close"] == 105 and bar["high"] == 109 and bar["low"] == 91
    assert bar["volume"] == sum(10 * i for i in range(5)) and bar["tick_count"] == 15
    assert bar["vwap"] == pytest.approx(sum((100.5 + i) * 10 * i for i in range(5)) / 100)
    assert bar["oi"] == 104 and bar["oi_open"] == 95 and bar["oi_high"] == 114 and bar["oi_low"] == 90
    assert bar["last_recv_ts"] == 1004 and bar["iv"] == minutes[4]["iv"][0]


def test_a_fine_correction_after_the_close_re_emits_the_coarse_bar_as_a_correction() -> None:
    combiner = BarCombiner(300, 60)
    combiner.add(np.concatenate([_fine(7, T0, 100, 101, 99, 100, 5, 100.0, 1, 10),
                                 _fine(8, T0 + 60, 50, 51, 49, 50, 0, math.nan, 1, 11)]), T0 + 300, -math.inf)
    fixed = _fine(7, T0, 100, 120, 99, 100, 8, 110.0, 2, 20)  # a late tick reached minute 0 of token 7
    [bar] = combiner.add(fixed, T0 + 300, -math.inf)
    assert bar["instrument_token"] == 7 and bar["correction"] == 1  # only the corrected instrument
    assert bar["high"] == 120 and bar["volume"] == 8 and bar["tick_count"] == 2 and bar["last_recv_ts"] == 20


def test_a_correction_before_the_close_only_replaces_the_earlier_version() -> None:
    combiner = BarCombiner(300, 60)
    combiner.add(_fine(7, T0, 100, 101, 99, 100, 5, 100.0, 1, 10), T0 + 60, -math.inf)
    combiner.add(_fine(7, T0, 100, 130, 99, 100, 6, 101.0, 2, 30), T0 + 60, -math.inf)
    [bar] = combiner.add(None, T0 + 300, -math.inf)
    assert bar["high"] == 130 and bar["volume"] == 6 and bar["correction"] == 0
    assert combiner.add(None, T0 + 600, -math.inf) is None  # closed once


def test_volume_zero_gives_nan_vwap_and_buckets_leave_with_the_fine_late_window() -> None:
    combiner = BarCombiner(300, 60)
    [bar] = combiner.add(_fine(7, T0, 100, 101, 99, 100, 0, math.nan, 1, 10), T0 + 300, -math.inf)
    assert math.isnan(bar["vwap"])
    combiner.add(None, T0 + 300, T0 + 240)  # the bucket's last minute is out of the fine late window
    assert combiner.add(_fine(7, T0, 1, 1, 1, 1, 1, 1.0, 1, 99), T0 + 300, T0 + 240) is None
    assert combiner.stats["unmatched_corrections"] == 1


def test_a_coarse_interval_must_be_a_multiple_of_the_fine_one() -> None:
    with pytest.raises(ValueError):
        BarCombiner(90, 60)
    with pytest.raises(ValueError):
        BarCombiner(60, 60)


def test_a_late_fine_bar_of_a_coarse_bucket_closed_before_it_was_seen_still_makes_its_coarse_bar() -> None:
    """After a start: the first close covers T0's 5 minutes, none of whose minutes had a bar here; a late
    tick then makes minute 4 of it: its 5-minute bar is emitted (as a correction), not counted and lost."""
    combiner = BarCombiner(300, 60)
    assert combiner.add(_fine(7, T0 + 300, 100, 101, 99, 100, 5, 100.0, 1, 10), T0 + 360, T0 + 180) is None
    late = _fine(7, T0 + 240, 90, 95, 89, 94, 3, 92.0, 2, 20)
    [bar] = combiner.add(late, T0 + 360, T0 + 180)
    assert (bar["bucket"], bar["interval_s"], bar["correction"]) == (T0, 300, 1)
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"], bar["tick_count"]) == (90, 95, 89, 94, 3, 2)
    assert combiner.stats["unmatched_corrections"] == 0
