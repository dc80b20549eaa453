import datetime as dt

import pytest

from pipeline.feed.instruments import (
    INSTRUMENT_COLUMNS,
    instruments_csv,
    parse_instruments_csv,
    select_universe,
)
from pipeline.records.instruments import InstrumentIndex
from pipeline.sim.market import (
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


def test_expiry_calendar_weekly_tuesdays_and_last_tuesday_monthlies() -> None:
    assert option_expiries(START, 3, weekly=True) == [dt.date(2026, 11, 24), dt.date(2026, 12, 1), dt.date(2026, 12, 8)]
    assert monthly_expiries(START, 2) == [dt.date(2026, 11, 24), dt.date(2026, 12, 29)]
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
