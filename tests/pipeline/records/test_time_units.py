import datetime as dt

import pytest

import greeks
from pipeline.records.kinds import InstrumentKind, RecordKind
from pipeline.records.time_units import (
    IST,
    interval_of,
    label_of,
    parse_date,
    parse_timestamp,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("seconds", "label"), [(60, "1m"), (300, "5m"), (900, "15m"), (30, "30s"), (3600, "60m")])
def test_interval_label_round_trip(seconds: int, label: str) -> None:
    assert label_of(seconds) == label
    assert interval_of(label) == seconds


@pytest.mark.parametrize("bad", ["", "m", "5h", "-1m", "0m", "1.5m", "abc"])
def test_interval_of_rejects_a_bad_label_naming_the_form(bad: str) -> None:
    with pytest.raises(ValueError, match="expected minutes like '1m'"):
        interval_of(bad)


def test_ist_is_the_one_definition_shared_with_greeks() -> None:
    assert IST is greeks.IST
    assert IST.utcoffset(None) == dt.timedelta(hours=5, minutes=30)
    assert dt.datetime(2026, 12, 3, 9, 15, tzinfo=IST).timestamp() % 900 == 0  # 09:15 IST starts a bucket


def test_parse_date_accepts_dates_datetimes_and_iso_strings() -> None:
    day = dt.date(2026, 12, 29)
    assert parse_date(day) == parse_date(dt.datetime(2026, 12, 29, 15, 30)) == parse_date("2026-12-29") == day
    assert parse_date("") is None and parse_date(None) is None
    with pytest.raises(ValueError):
        parse_date("29/12/2026")
    with pytest.raises(ValueError, match="not a date"):
        parse_date(20261229)


def test_record_and_instrument_kinds_are_separate_types() -> None:
    assert RecordKind.BARS == 3 and InstrumentKind.CALL == 3  # equal numbers, unrelated meanings
    assert RecordKind.BARS is not InstrumentKind.CALL
    assert InstrumentKind.of_type("ce") is InstrumentKind.CALL and InstrumentKind.of_type("XYZ") is InstrumentKind.OTHER
    assert [k.type_name for k in InstrumentKind] == ["", "INDEX", "FUT", "CE", "PE"]


def test_parse_timestamp_reads_ist_unless_a_zone_is_given() -> None:
    assert parse_timestamp("2026-12-03T09:15") == dt.datetime(2026, 12, 3, 3, 45, tzinfo=dt.timezone.utc).timestamp()
    assert parse_timestamp("2026-12-03T09:15+00:00") == dt.datetime(2026, 12, 3, 9, 15, tzinfo=dt.timezone.utc).timestamp()
    with pytest.raises(ValueError, match="expected ISO 8601"):
        parse_timestamp("9:15 tomorrow")
