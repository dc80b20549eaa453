import datetime as dt

import numpy as np
import pytest

from pipeline.records.instruments import InstrumentIndex, expiry_close_ts
from pipeline.records.kinds import InstrumentKind

pytestmark = pytest.mark.unit

ROWS = [
    {"instrument_token": 256265, "tradingsymbol": "NIFTY 50", "name": "NIFTY 50", "expiry": "", "strike": 0,
     "instrument_type": "EQ", "segment": "INDICES"},
    {"instrument_token": 12345602, "tradingsymbol": "NIFTY26NOVFUT", "name": "NIFTY", "expiry": dt.date(2026, 11, 24),
     "strike": 0, "instrument_type": "FUT", "segment": "NFO-FUT"},
    {"instrument_token": 9000002, "tradingsymbol": "NIFTY26NOV24000CE", "name": "NIFTY", "expiry": "2026-11-24",
     "strike": 24000.0, "instrument_type": "CE", "segment": "NFO-OPT"},
    {"instrument_token": 9000258, "tradingsymbol": "NIFTY26NOV24000PE", "name": "NIFTY", "expiry": "2026-11-24",
     "strike": 24000.0, "instrument_type": "PE", "segment": "NFO-OPT"},
]


def test_expiry_close_is_1530_ist_which_is_1000_utc() -> None:
    ts = expiry_close_ts(dt.date(2026, 11, 24))
    assert dt.datetime.fromtimestamp(ts, dt.timezone.utc) == dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)


def test_rows_become_sorted_columns_with_kinds() -> None:
    index = InstrumentIndex.from_rows(ROWS)
    assert index.tokens.tolist() == sorted(r["instrument_token"] for r in ROWS)
    kinds = dict(zip(index.tokens.tolist(), index.kind.tolist(), strict=True))
    assert kinds == {256265: InstrumentKind.INDEX, 12345602: InstrumentKind.FUT, 9000002: InstrumentKind.CALL, 9000258: InstrumentKind.PUT}


def test_index_row_maps_to_its_underlying_name() -> None:
    index = InstrumentIndex.from_rows(ROWS)
    assert index.underlying_of(256265) == "NIFTY"
    assert set(index.underlying.tolist()) == {"NIFTY"}


def test_positions_of_unknown_tokens_are_minus_one() -> None:
    index = InstrumentIndex.from_rows(ROWS)
    pos = index.positions(np.array([9000258, 1, 256265, 4_000_000_000], dtype=np.uint32))
    assert pos[1] == -1 and pos[3] == -1
    assert index.tokens[pos[0]] == 9000258 and index.tokens[pos[2]] == 256265


def test_strike_is_nan_except_for_options() -> None:
    index = InstrumentIndex.from_rows(ROWS)
    strikes = dict(zip(index.tokens.tolist(), index.strike.tolist(), strict=True))
    assert strikes[9000002] == 24000.0 and np.isnan(strikes[12345602]) and np.isnan(strikes[256265])


def test_empty_index_knows_no_token() -> None:
    index = InstrumentIndex.from_rows([])
    assert len(index) == 0 and index.positions(np.array([1, 2])).tolist() == [-1, -1]
