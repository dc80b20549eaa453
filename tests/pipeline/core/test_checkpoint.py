"""Checkpoints: a processor restored from one continues exactly like one that never stopped.

The stream mixes liquid instruments (most seconds) with illiquid ones (a tick every few
minutes), so a restore lands between an illiquid instrument's ticks more than one bar apart:
its next bar must still count the volume since its previous tick (the replay bug of old).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_processor import CONFIG, DAY, R, _assert_rows_equal, _market, _records

from pipeline.core.checkpoint import (
    FORMAT,
    CheckpointError,
    decode_checkpoint,
    encode_checkpoint,
)
from pipeline.core.pricing import OptionPricer
from pipeline.core.processor import BarConfig, TickProcessor
from pipeline.feed.ingestor import split_by_underlying
from pipeline.feed.stamping import ReceiveClock, ticks_from_kite
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.ticks import decode_ticks
from pipeline.sim.market import session_start_ts

pytestmark = pytest.mark.unit


def _mixed_liquidity_batches(seconds: int, seed: int = 9) -> tuple[InstrumentIndex, list[tuple[str, np.ndarray]]]:
    market, index = _market()
    rng = np.random.default_rng(seed)
    liquid = np.zeros(len(index), bool)
    liquid[rng.choice(len(index), size=len(index) // 3, replace=False)] = True
    clock, start, out = ReceiveClock(), session_start_ts(DAY), []
    for step in range(seconds):
        market.advance(start + step)
        p = np.where(liquid, 0.6, 1 / 240)  # illiquid: about one tick in four minutes
        tokens = index.tokens[rng.random(len(index)) < p]
        if not len(tokens):
            continue
        pos = market.positions(tokens)
        market.trade(pos)
        snap = market.snapshot(pos)
        ticks = ticks_from_kite(snap, clock.stamp(len(snap), int((start + step) * 1e6)))
        out += list(split_by_underlying(ticks, index)[0].items())
    return index, out


def _outputs(processor: TickProcessor, pricer: OptionPricer, batches: list[tuple[str, np.ndarray]],
             index: InstrumentIndex) -> list:
    out = []
    for underlying, ticks in batches:
        processor.start(underlying, ticks, index)
        out.append(processor.process(underlying, ticks, pricer))
    return out


@pytest.mark.parametrize("cut", [0.31, 0.5, 0.77])
def test_restored_processor_continues_exactly_like_an_uninterrupted_one(cut: float) -> None:
    index, batches = _mixed_liquidity_batches(900)
    k = int(len(batches) * cut)
    reference = _outputs(TickProcessor(CONFIG), OptionPricer(index, R), batches, index)

    first, first_pricer = TickProcessor(CONFIG), OptionPricer(index, R)
    _outputs(first, first_pricer, batches[:k], index)
    blob = first.snapshot(["NIFTY", "BANKNIFTY"], first_pricer)
    del first, first_pricer  # the worker died

    successor, pricer = TickProcessor(CONFIG), OptionPricer(index, R)
    assert successor.restore(blob, pricer) == ["BANKNIFTY", "NIFTY"]
    resumed = _outputs(successor, pricer, batches[k:], index)
    assert len(resumed) == len(reference) - k
    for got, want in zip(resumed, reference[k:], strict=True):
        _assert_rows_equal(got.priced, want.priced)
        assert (got.bars is None) == (want.bars is None)
        if got.bars is not None:
            _assert_rows_equal(got.bars, want.bars)
        _assert_rows_equal(got.strike_rows, want.strike_rows)
        _assert_rows_equal(got.chain_rows, want.chain_rows)
        assert got.counts == want.counts
    bars = np.concatenate([r.bars for r in resumed if r.bars is not None])
    assert (bars["volume"] > 0).any() and len(bars) > 50


def test_restore_replaces_only_the_checkpointed_underlyings() -> None:
    index, batches = _mixed_liquidity_batches(120)
    processor, pricer = TickProcessor(CONFIG), OptionPricer(index, R)
    _outputs(processor, pricer, batches, index)
    blob = processor.snapshot(["NIFTY"], pricer)
    other, other_pricer = TickProcessor(CONFIG), OptionPricer(index, R)
    assert other.restore(blob, other_pricer) == ["NIFTY"]
    assert set(other.states) == {"NIFTY"}
    nifty = index.underlying == "NIFTY"
    for name in ("last_price", "trade_ts", "volume", "bid", "ask", "quote_ts"):
        np.testing.assert_array_equal(getattr(other_pricer.book, name)[nifty], getattr(pricer.book, name)[nifty])
    assert np.isnan(other_pricer.book.last_price[~nifty]).all() and (other_pricer.book.trade_ts[~nifty] == 0).all()
    other.drop(["NIFTY"])
    assert other.states == {}


def test_checkpoint_of_other_bar_settings_or_format_is_refused_clearly() -> None:
    index, batches = _mixed_liquidity_batches(30)
    processor, pricer = TickProcessor(CONFIG), OptionPricer(index, R)
    _outputs(processor, pricer, batches, index)
    blob = processor.snapshot(["NIFTY"], pricer)
    with pytest.raises(CheckpointError, match="bar settings"):
        TickProcessor(BarConfig((60,), 2.0, 120.0)).restore(blob, OptionPricer(index, R))
    newer = b"SFCP" + (FORMAT + 1).to_bytes(2, "big") + blob[6:]
    with pytest.raises(CheckpointError, match=f"format {FORMAT + 1}"):
        decode_checkpoint(newer, CONFIG)
    for bad, reason in ((b"xx", "too short"), (b"NOPE\x00\x01rest", "not a strikeflow"),
                        (blob[:6] + b"garbage", "does not load")):
        with pytest.raises(CheckpointError, match=reason):
            decode_checkpoint(bad, CONFIG)
    restored = TickProcessor(CONFIG)
    with pytest.raises(CheckpointError):
        restored.restore(newer, OptionPricer(index, R))
    assert restored.states == {}  # nothing changed on a refused checkpoint


def test_checkpoint_bytes_start_with_magic_and_format() -> None:
    blob = encode_checkpoint(CONFIG, {}, {})
    assert blob[:4] == b"SFCP" and int.from_bytes(blob[4:6], "big") == FORMAT
    assert pickle.loads(blob[6:])["config"] == CONFIG


def test_a_checkpoint_whose_event_time_is_ahead_of_the_clock_is_refused_and_changes_nothing() -> None:
    from pipeline.core.checkpoint import CheckpointError

    index, records = _records(120)
    config = BarConfig(intervals_s=(60, 300), grace_s=2.0, late_window_s=120.0, max_clock_skew_s=300.0)
    processor, pricer = TickProcessor(config), OptionPricer(index, R)
    for _, payload in records:
        underlying, ticks = decode_ticks(payload)
        processor.start(underlying, ticks, index)
        processor.process(underlying, ticks, pricer)
    event_time = processor.states["NIFTY"].aggregator.event_time()
    blob = processor.snapshot(["NIFTY"], pricer)
    fresh, fresh_pricer = TickProcessor(config), OptionPricer(index, R)
    with pytest.raises(CheckpointError, match="ahead of the clock"):
        fresh.restore(blob, fresh_pricer, now_s=event_time - 301)  # the clock is far behind the checkpoint
    assert fresh.states == {}
    assert fresh.restore(blob, fresh_pricer, now_s=event_time) == ["NIFTY"]
