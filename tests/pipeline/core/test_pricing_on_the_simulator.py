"""The pricer and the bars on the simulated market, end to end in-process (docs/design.md "Pricing model").

The simulator's Market ticks as the server makes it tick (liquidity-weighted, trades and quote-only
updates, Kite frames' fields), the ticks are stamped as the ingestor stamps them and go through the
worker's engines. Because the market is in-process, its own state at every exchange second is
known: the index, and the smile ``sigma(K) = atm_vol (1 + skew m + curvature m^2)``, ``m = ln(K/F)``.
"""

import datetime as dt
import math

import numpy as np
import pytest

from pipeline.core.engines import Engines
from pipeline.core.outputs import BarConfig, EngineConfig
from pipeline.feed.ingestor import split_by_underlying
from pipeline.feed.instruments import select_universe
from pipeline.feed.kite_wire import MODE_FULL
from pipeline.feed.stamping import ticks_from_kite
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from sim.market import (
    DEFAULT_UNDERLYINGS,
    Market,
    build_instruments,
    session_start_ts,
)

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 11, 25)
R = 0.065
SECONDS = 900
TICKS_PER_S = 60


def _run() -> tuple[Market, InstrumentIndex, np.ndarray, dict[int, dict[str, tuple[float, float]]]]:
    specs = [DEFAULT_UNDERLYINGS["NIFTY"], DEFAULT_UNDERLYINGS["BANKNIFTY"]]
    rows = build_instruments(specs, DAY, n_expiries=2, strikes_each_side=8)
    start = int(session_start_ts(DAY))
    market = Market(rows, specs, start, seed=21, r=R)
    index = InstrumentIndex.from_rows(select_universe(rows, ["NIFTY", "BANKNIFTY"], 2, None, today=DAY))
    rng = np.random.default_rng(4)
    engines = Engines(EngineConfig(bars=BarConfig(intervals_s=(60,), grace_s=2.0, late_window_s=60.0), r=R), index)
    state: dict[int, dict[str, tuple[float, float]]] = {}  # second -> underlying -> (spot, atm_vol)
    bars = []
    for step in range(SECONDS):
        now = start + step
        market.advance(now)
        state[now] = {u: (market.spot[u], market.atm_vol[u]) for u in market.specs}
        weight = market.liquidity[market.positions(index.tokens)]
        counts = rng.poisson(TICKS_PER_S * weight / weight.sum())
        pos = market.positions(index.tokens[counts > 0])
        market.tick(pos)
        snap = market.snapshot(pos, MODE_FULL)
        recv = now * 1_000_000 + np.arange(len(snap))  # the receive second is the exchange second
        groups, _ = split_by_underlying(ticks_from_kite(snap, recv), index)
        for underlying, ticks in groups.items():
            engines.seed_requests(underlying, ticks)
            result = engines.process(underlying, ticks)
            if result.bars is not None:
                bars.append(result.bars)
    return market, index, np.concatenate(bars), state


@pytest.fixture(scope="module")
def simulated() -> tuple[Market, InstrumentIndex, np.ndarray, dict]:
    return _run()


def _option_bars(simulated) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    _, index, bars, _ = simulated
    pos = index.positions(bars["instrument_token"])
    opt = np.isin(index.kind[pos], (InstrumentKind.CALL, InstrumentKind.PUT)) & np.isfinite(bars["forward"])
    return bars[opt], pos[opt]


def test_every_option_bars_forward_is_the_index_carried_at_the_rate(simulated) -> None:  # noqa: ANN001
    _, index, _, state = simulated
    bars, pos = _option_bars(simulated)
    assert len(bars) > 500
    worst = 0.0
    for bar, p in zip(bars, pos, strict=True):
        ts = int(bar["last_recv_ts"]) // 1_000_000  # the exchange second of the bar's last tick
        spot, _ = state[ts][index.underlying[p]]
        expected = spot * math.exp(R * (int(index.expiry_ts[p]) - ts) / (365 * 86400))
        worst = max(worst, abs(bar["forward"] / expected - 1))
    assert worst < 1e-3
    assert set(np.unique(bars["forward_source"]).tolist()) <= {1.0, 2.0, 3.0}


def test_the_smile_from_fresh_mid_ivs_is_the_simulators_own(simulated) -> None:  # noqa: ANN001
    market, index, _, state = simulated
    bars, pos = _option_bars(simulated)
    fresh = (bars["stale"] == 0) & np.isfinite(bars["mid_iv"]) & (bars["close"] >= 20.0)
    assert fresh.sum() > 200
    errors = []
    for bar, p in zip(bars[fresh], pos[fresh], strict=True):
        ts = int(bar["last_recv_ts"]) // 1_000_000
        spot, atm_vol = state[ts][index.underlying[p]]
        forward = spot * math.exp(R * (int(index.expiry_ts[p]) - ts) / (365 * 86400))
        m = math.log(index.strike[p] / forward)
        smile = min(max(atm_vol * (1 + market.skew * m + market.curvature * m * m), 0.03), 3.0)
        errors.append(bar["mid_iv"] - smile)
    assert np.max(np.abs(errors)) < 0.005  # half a volatility point


def test_last_trade_ivs_of_quiet_options_are_flagged_stale(simulated) -> None:  # noqa: ANN001
    bars, _ = _option_bars(simulated)
    assert (bars["stale"] == 1).any() and (bars["stale"] == 0).any()
