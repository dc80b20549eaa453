"""Checkpoints: engines restored from one continue exactly like engines that never stopped.

The stream mixes liquid instruments (most seconds) with illiquid ones (a tick every few
minutes), so a restore lands between an illiquid instrument's ticks more than one bar apart:
its next bar must still count the volume since its previous tick (the replay bug of old).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_engine import CONFIG, DAY, R, _assert_rows_equal, _engines, _market, _records

from pipeline.core.checkpoint import (
    FORMAT,
    CheckpointError,
    decode_checkpoint,
    encode_checkpoint,
)
from pipeline.core.engines import Engines
from pipeline.core.outputs import BarConfig, EngineConfig
from pipeline.core.state import MAGIC, decode_state
from pipeline.feed.ingestor import split_by_underlying
from pipeline.feed.stamping import ReceiveClock, ticks_from_kite
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.ticks import decode_ticks
from sim.market import session_start_ts

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


def _outputs(engines: Engines, batches: list[tuple[str, np.ndarray]]) -> list:
    out = []
    for underlying, ticks in batches:
        engines.seed_requests(underlying, ticks)
        out.append(engines.process(underlying, ticks))
    return out


@pytest.mark.parametrize("cut", [0.31, 0.5, 0.77])
def test_restored_engines_continue_exactly_like_uninterrupted_ones(cut: float) -> None:
    index, batches = _mixed_liquidity_batches(900)
    k = int(len(batches) * cut)
    reference = _outputs(_engines(index), batches)

    first = _engines(index)
    _outputs(first, batches[:k])
    blob = first.snapshot(["NIFTY", "BANKNIFTY"])
    del first  # the worker died

    successor = _engines(index)
    assert successor.restore(blob) == ["BANKNIFTY", "NIFTY"]
    resumed = _outputs(successor, batches[k:])
    assert len(resumed) == len(reference) - k
    for got, want in zip(resumed, reference[k:], strict=True):
        _assert_rows_equal(got.priced, want.priced)
        assert (got.bars is None) == (want.bars is None)
        if got.bars is not None:
            _assert_rows_equal(got.bars, want.bars)
        _assert_rows_equal(got.strike_rows, want.strike_rows)
        _assert_rows_equal(got.chain_rows, want.chain_rows)
        _assert_rows_equal(got.vol_index_rows, want.vol_index_rows)
        assert got.counts == want.counts
    bars = np.concatenate([r.bars for r in resumed if r.bars is not None])
    assert (bars["volume"] > 0).any() and len(bars) > 50


def test_an_engines_state_survives_its_bytes_field_for_field() -> None:
    index, batches = _mixed_liquidity_batches(400)
    engines = _engines(index)
    _outputs(engines, batches)
    before = engines.get("NIFTY").to_state()
    again = _engines(index)
    again.restore(engines.snapshot(["NIFTY"]))
    after = again.get("NIFTY").to_state()
    assert sorted(after) == sorted(before) and len(before) > 40
    for name, value in before.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == after[name].dtype, name
            for column in value.dtype.names or (None,):  # per column: NaN equals NaN
                pick = (lambda a: a) if column is None else (lambda a, c=column: a[c])
                np.testing.assert_array_equal(pick(after[name]), pick(value), err_msg=f"{name} {column}")
        else:
            assert after[name] == value, name


def test_restore_replaces_only_the_checkpointed_underlyings() -> None:
    index, batches = _mixed_liquidity_batches(120)
    engines = _engines(index)
    _outputs(engines, batches)
    other = _engines(index)
    assert other.restore(engines.snapshot(["NIFTY"])) == ["NIFTY"]
    assert other.underlyings() == ["NIFTY"]
    for name in ("last_price", "trade_ts", "volume", "bid", "ask", "quote_ts"):
        np.testing.assert_array_equal(getattr(other.get("NIFTY").book, name), getattr(engines.get("NIFTY").book, name))
    other.drop(["NIFTY"])
    assert other.underlyings() == []


def test_a_restore_over_a_changed_index_keeps_the_book_of_the_instruments_still_listed() -> None:
    index, batches = _mixed_liquidity_batches(120)
    engines = _engines(index)
    _outputs(engines, batches)
    nifty = engines.get("NIFTY")
    dropped = int(nifty.index.tokens[nifty.book.trade_ts > 0][0])  # an instrument that traded, delisted since
    keep = index.tokens != dropped
    smaller = InstrumentIndex(*(getattr(index, f)[keep] for f in index.__dataclass_fields__))
    restored = Engines(EngineConfig(bars=CONFIG, r=R), smaller)
    restored.restore(engines.snapshot(["NIFTY"]))
    book, old = restored.get("NIFTY").book, nifty.book
    listed = nifty.index.tokens != dropped
    assert len(book) == len(old) - 1
    np.testing.assert_array_equal(book.last_price, old.last_price[listed])
    np.testing.assert_array_equal(book.trade_ts, old.trade_ts[listed])


def test_checkpoint_of_other_bar_settings_or_format_is_refused_clearly() -> None:
    index, batches = _mixed_liquidity_batches(30)
    engines = _engines(index)
    _outputs(engines, batches)
    blob = engines.snapshot(["NIFTY"])
    with pytest.raises(CheckpointError, match="bars"):
        _engines(index, BarConfig((60,), 2.0, 120.0)).restore(blob)
    newer = MAGIC + (FORMAT + 1).to_bytes(2, "big") + blob[6:]
    with pytest.raises(CheckpointError, match=f"format {FORMAT + 1}"):
        decode_checkpoint(newer)
    for bad, reason in ((b"xx", "too short"), (b"NOPE\x00\x04rest", "not a strikeflow"),
                        (blob[:6] + b"garbage", "does not load")):
        with pytest.raises(CheckpointError, match=reason):
            decode_checkpoint(bad)
    restored = _engines(index)
    with pytest.raises(CheckpointError):
        restored.restore(newer)
    assert restored.underlyings() == []  # nothing changed on a refused checkpoint


def test_an_older_pickled_checkpoint_is_refused_with_its_reason_and_nothing_runs() -> None:
    class Boom:
        def __reduce__(self) -> tuple:
            return (exec, ("raise SystemExit('pickle ran')",))

    legacy = b"SFCP" + (3).to_bytes(2, "big") + pickle.dumps({"states": Boom()}, protocol=5)
    engines = _engines(InstrumentIndex.from_rows([]))
    with pytest.raises(CheckpointError, match="format 3 holds pickled objects"):
        engines.restore(legacy)
    assert engines.underlyings() == []


def test_a_state_field_missing_or_holding_objects_is_refused() -> None:
    index, batches = _mixed_liquidity_batches(30)
    engines = _engines(index)
    _outputs(engines, batches)
    state = engines.get("NIFTY").to_state()
    del state["bars/fine/watermark"]
    with pytest.raises(CheckpointError, match="watermark"):
        _engines(index).restore(encode_checkpoint({"NIFTY": state}))
    with pytest.raises(TypeError, match="Python objects"):
        encode_checkpoint({"NIFTY": {"x": np.array([object()], dtype=object)}})


def test_checkpoint_bytes_are_a_json_header_and_raw_arrays_never_a_pickle() -> None:
    blob = encode_checkpoint({})
    assert blob[:4] == MAGIC and int.from_bytes(blob[4:6], "big") == FORMAT
    assert decode_state(blob) == (FORMAT, {})
    assert b"pickle" not in blob and blob[10:11] == b"{"  # the JSON header; no archive, no pickle


def test_a_checkpoint_whose_event_time_is_ahead_of_the_clock_is_refused_and_changes_nothing() -> None:
    index, records = _records(120)
    engines = _engines(index, BarConfig(intervals_s=(60, 300), grace_s=2.0, late_window_s=120.0,
                                        max_clock_skew_s=300.0))
    for _, payload in records:
        underlying, ticks = decode_ticks(payload)
        engines.seed_requests(underlying, ticks)
        engines.process(underlying, ticks)
    event_time = engines.get("NIFTY").event_time()
    blob = engines.snapshot(["NIFTY"])
    fresh = _engines(index, engines.config.bars)
    with pytest.raises(CheckpointError, match="ahead of the clock"):
        fresh.restore(blob, now_s=event_time - 301)  # the clock is far behind the checkpoint
    assert fresh.underlyings() == []
    assert fresh.restore(blob, now_s=event_time) == ["NIFTY"]
