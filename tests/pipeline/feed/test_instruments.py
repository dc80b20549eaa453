import datetime as dt

import numpy as np
import pytest

from pipeline.feed.ingestor import plan_universe
from pipeline.feed.instruments import (
    INSTRUMENT_COLUMNS,
    instruments_csv,
    parse_instruments_csv,
    select_universe,
)
from pipeline.feed.sharding import ShardingError
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.runtime.settings import Settings, load_settings
from sim.market import (
    DEFAULT_UNDERLYINGS,
    build_instruments,
    monthly_expiries,
    option_expiries,
)

pytestmark = pytest.mark.unit

START = dt.date(2026, 11, 23)  # a Monday


def _rows() -> list[dict]:
    return build_instruments(list(DEFAULT_UNDERLYINGS.values()), START, n_expiries=3, strikes_each_side=20)


def test_csv_round_trip_gives_kiteconnect_types() -> None:
    rows = _rows()
    text = instruments_csv(rows)
    assert text.splitlines()[0].split(",") == list(INSTRUMENT_COLUMNS)
    parsed = parse_instruments_csv(text)
    assert len(parsed) == len(rows)
    option = next(r for r in parsed if r["instrument_type"] == "CE")
    assert isinstance(option["instrument_token"], int)
    assert isinstance(option["exchange_token"], str)
    assert isinstance(option["expiry"], dt.date)
    assert isinstance(option["strike"], float) and isinstance(option["lot_size"], int)
    index = next(r for r in parsed if r["segment"] == "INDICES")
    assert index["expiry"] == "" and index["instrument_token"] == 256265


def test_tokens_follow_kite_segment_encoding() -> None:
    for row in _rows():
        token = row["instrument_token"]
        assert token >> 8 == int(row["exchange_token"])
        assert token & 0xFF == {"INDICES": 9, "BFO": 5, "NFO": 2}[
            "INDICES" if row["segment"] == "INDICES" else row["exchange"]]


def test_sensex_derivatives_on_bfo_expire_on_thursdays_and_its_index_is_bse_265() -> None:
    sensex = [r for r in _rows() if r["name"] in ("SENSEX",) or r["tradingsymbol"] == "SENSEX"]
    index = [r for r in sensex if r["segment"] == "INDICES"]
    assert [(r["instrument_token"], r["exchange"]) for r in index] == [(265, "BSE")]
    derivatives = [r for r in sensex if r["segment"] != "INDICES"]
    assert {r["segment"] for r in derivatives} == {"BFO-FUT", "BFO-OPT"}
    assert {r["expiry"].weekday() for r in derivatives} == {3}
    assert {r["instrument_token"] & 0xFF for r in derivatives} == {5}


def test_expiry_calendar_weekly_tuesdays_and_last_tuesday_monthlies_moved_off_holidays() -> None:
    # Tuesday 24 November 2026 is an NSE holiday (Guru Nanak Jayanti): that expiry is on Monday the 23rd
    assert option_expiries(START, 3, weekly=True) == [dt.date(2026, 11, 23), dt.date(2026, 12, 1), dt.date(2026, 12, 8)]
    assert monthly_expiries(START, 2) == [dt.date(2026, 11, 23), dt.date(2026, 12, 29)]
    # Tuesday 20 October 2026 (Dussehra) likewise; a Tuesday after a holiday Monday stays
    assert option_expiries(dt.date(2026, 10, 19), 1, weekly=True) == [dt.date(2026, 10, 19)]
    assert option_expiries(dt.date(2026, 9, 14), 1, weekly=True) == [dt.date(2026, 9, 15)]
    # SENSEX (Thursday): Thursday 26 March 2026 (Ram Navami) moves to Wednesday the 25th
    assert option_expiries(dt.date(2026, 3, 23), 1, weekly=True, weekday=3) == [dt.date(2026, 3, 25)]
    assert monthly_expiries(dt.date(2026, 11, 25), 1) == [dt.date(2026, 12, 29)]
    assert option_expiries(START, 2, weekly=True, weekday=3) == [dt.date(2026, 11, 26), dt.date(2026, 12, 3)]
    assert monthly_expiries(START, 1, weekday=3) == [dt.date(2026, 11, 26)]


def test_select_universe_keeps_strikes_around_money_and_companions() -> None:
    rows = _rows()
    chosen = select_universe(rows, ["NIFTY"], expiries=2, strikes_around_atm=3, today=START)
    kinds = [r["instrument_type"] for r in chosen]
    assert sum(1 for r in chosen if r["segment"] == "INDICES") == 1
    assert "FUT" in kinds
    options = [r for r in chosen if r["instrument_type"] in ("CE", "PE")]
    assert len({r["expiry"] for r in options}) == 2
    assert len(options) == 2 * 7 * 2  # 2 expiries x 7 strikes x CE/PE
    strikes = sorted({r["strike"] for r in options})
    assert strikes[3] == 24500.0 and strikes[0] == 24350.0 and strikes[-1] == 24650.0
    assert all(r["name"] == "NIFTY" for r in chosen if r["segment"] != "INDICES")


def test_select_universe_skips_expired_contracts() -> None:
    rows = _rows()
    chosen = select_universe(rows, ["NIFTY"], expiries=1, strikes_around_atm=0, today=dt.date(2026, 11, 25))
    expiries = {r["expiry"] for r in chosen if r["instrument_type"] in ("CE", "PE")}
    assert expiries == {dt.date(2026, 12, 1)}


def test_selected_universe_builds_an_instrument_index_with_both_underlyings() -> None:
    chosen = select_universe(_rows(), ["NIFTY", "BANKNIFTY"], expiries=1, strikes_around_atm=2, today=START)
    index = InstrumentIndex.from_rows(chosen)
    assert set(index.underlying.tolist()) == {"NIFTY", "BANKNIFTY"}


def test_select_universe_without_a_strike_count_takes_every_listed_strike() -> None:
    chosen = select_universe(_rows(), ["NIFTY"], expiries=2, strikes_around_atm=None, today=START)
    options = [r for r in chosen if r["instrument_type"] in ("CE", "PE")]
    assert len(options) == 2 * 41 * 2  # 2 expiries x every listed strike (20 each side + the money) x CE/PE


def _settings(**overrides) -> Settings:  # noqa: ANN003
    return load_settings(underlyings=("NIFTY",), expiries=2, **overrides)


def test_plan_universe_by_default_subscribes_and_stores_the_full_chain() -> None:
    universe = plan_universe(_rows(), _settings(), 1, today=START)
    assert universe.strikes_each_side is None
    np.testing.assert_array_equal(universe.subscribed.tokens, universe.listed.tokens)
    assert len(np.unique(universe.listed.strike[universe.listed.strike > 0])) == 41


def test_plan_universe_over_the_connection_budget_narrows_from_the_farthest_strikes() -> None:
    settings = _settings(kite_max_tokens_per_connection=100, kite_max_connections_per_key=1)
    universe = plan_universe(_rows(), settings, 1, today=START)
    options = np.isin(universe.subscribed.kind, (InstrumentKind.CALL, InstrumentKind.PUT))
    k = universe.strikes_each_side
    assert k is not None and options.sum() == 2 * 2 * (2 * k + 1)
    assert sum(len(s.tokens) for s in universe.shards) <= 100
    wider = select_universe(_rows(), ["NIFTY"], 2, k + 1, today=START)
    assert len(wider) > 100  # one more strike each side would not fit
    assert len(universe.listed) > len(universe.subscribed)  # the listed chain is still stored: coverage shows


def test_plan_universe_with_an_explicit_strike_count_that_does_not_fit_raises() -> None:
    settings = _settings(kite_max_tokens_per_connection=50, kite_max_connections_per_key=1, strikes_around_atm=20)
    with pytest.raises(ShardingError, match="connections"):
        plan_universe(_rows(), settings, 1, today=START)
