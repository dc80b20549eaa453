"""Chain-quality counts (pipeline.core.chain_quality) on hand-built books whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.chain_quality import (
    ChainQuality,
    QualityLedger,
    butterfly_violations,
    chain_quality,
    crossed_quotes,
    parity_violations,
)
from pipeline.core.price_book import PriceBook
from pipeline.records.rollups import CHAIN_BAR_DTYPE, MISSING_INT

pytestmark = pytest.mark.unit

NOW = 1_800_000_000
FRESH_S = 60.0


def _book(bids: list[float], asks: list[float], ages_s: list[int] | None = None) -> PriceBook:
    book = PriceBook(len(bids))
    book.bid[:] = bids
    book.ask[:] = asks
    book.quote_ts[:] = NOW - np.asarray(ages_s if ages_s is not None else [0] * len(bids))
    return book


def test_crossed_and_locked_fresh_quotes_count_and_stale_or_one_sided_ones_do_not() -> None:
    # rows: crossed, locked, normal, crossed but stale, one-sided (no ask)
    book = _book([10.0, 10.0, 10.0, 10.0, 10.0], [9.5, 10.0, 10.5, 9.0, np.nan], [0, 5, 0, 61, 0])
    assert crossed_quotes(book, np.arange(5), NOW, FRESH_S) == 2


def test_forward_inside_every_synthetic_band_is_no_parity_violation() -> None:
    forward, t, r = 100.0, 0.1, 0.05
    strikes = np.array([90.0, 100.0, 110.0])
    disc = np.exp(-r * t)
    call_mid = disc * np.maximum(forward - strikes, 0) + 2.0
    put_mid = call_mid - disc * (forward - strikes)  # parity exactly at the mids
    bid_ask = (call_mid - 0.1, call_mid + 0.1, put_mid - 0.1, put_mid + 0.1)
    assert parity_violations(strikes, *bid_ask, forward, t, r) == 0
    # a put quoted 1 rupee rich at 110: the band [K + e^{rT}(Cb - Pa), K + e^{rT}(Ca - Pb)] lies below F
    put_bid, put_ask = put_mid.copy(), put_mid.copy()
    put_bid[2] += 1.0
    put_ask[2] += 1.0
    assert parity_violations(strikes, call_mid - 0.1, call_mid + 0.1, put_bid - 0.1, put_ask + 0.1, forward, t, r) == 1
    assert parity_violations(strikes, *bid_ask, float("nan"), t, r) == 0


def test_a_middle_call_above_the_chord_is_one_butterfly_violation() -> None:
    strikes = np.array([90.0, 100.0, 110.0, 130.0])
    convex = np.array([12.0, 5.0, 1.0, 0.2])
    assert butterfly_violations(strikes, convex) == 0
    # 100 priced at 7.0 > (12 + 1) / 2 = 6.5; uneven spacing at 130 uses the weighted chord
    assert butterfly_violations(strikes, np.array([12.0, 7.0, 1.0, 0.2])) == 1
    assert butterfly_violations(strikes, np.array([12.0, 5.0, 1.0, 0.7])) == 0  # 1.0 <= (20*5 + 10*0.7)/30
    # concave throughout: 8.5 > (10 + 6.5) / 2 and 6.5 > (20*8.5 + 10*0.2)/30 = 5.73
    assert butterfly_violations(strikes, np.array([10.0, 8.5, 6.5, 0.2])) == 2
    assert butterfly_violations(strikes[:2], convex[:2]) == 0


def test_chain_quality_uses_only_strikes_quoted_fresh_on_both_sides() -> None:
    strikes = np.array([90.0, 100.0, 110.0, 120.0])
    call_rows, put_rows = np.arange(4), np.arange(4, 8)
    calls_bid, calls_ask = [11.0, 8.0, 1.0, 0.5], [11.2, 8.2, 1.2, 0.4]  # 120's call crossed
    puts_bid, puts_ask = [1.0, 3.0, 11.0, 20.0], [1.2, 3.2, 11.2, 20.2]
    book = _book(calls_bid + puts_bid, calls_ask + puts_ask, [0, 0, 0, 0, 0, 90, 0, 0])  # 100's put stale
    quality = chain_quality(book, strikes, call_rows, put_rows, NOW, FRESH_S, 100.0, 0.0, 0.0)
    # quoted: 90 and 110 (100's put stale, 120's call crossed); 90: band [100 + 11 - 1.2, 100 + 11.2 - 1]
    # = [99.8, 100.2] holds F = 100; 110: [110 + 1 - 11.2, 110 + 1.2 - 11] = [99.8, 100.2] holds it too
    assert quality == ChainQuality(parity_violations=0, crossed_quotes=1, butterfly_violations=0, strikes_quoted=2)
    shifted = chain_quality(book, strikes, call_rows, put_rows, NOW, FRESH_S, 100.5, 0.0, 0.0)
    assert shifted.parity_violations == 2


EXPIRY_TS = 1_798_711_200  # an expiry's close, epoch s: the ledger's key, as the rollup knows it


def test_ledger_fills_each_row_from_the_minute_that_closes_it_and_forgets_old_minutes() -> None:
    ledger = QualityLedger(retain_s=600)
    ledger.record(EXPIRY_TS, 1_000_020, ChainQuality(1, 2, 3, 4))  # minute 09:... (any 60 s bucket)
    rows = np.zeros(3, CHAIN_BAR_DTYPE)
    rows["interval_s"] = [60, 300, 60]
    rows["bucket"] = [1_000_020, 1_000_020 - 240, 1_000_080]
    ledger.fill(rows, EXPIRY_TS)
    assert rows["parity_violations"].tolist() == [1, 1, MISSING_INT]
    assert rows["strikes_quoted"].tolist() == [4, 4, MISSING_INT]
    ledger.record(EXPIRY_TS, 1_000_020 + 660, ChainQuality(0, 0, 0, 0))
    assert len(ledger) == 1  # the first minute is older than retain_s behind the newest
