import numpy as np
import pytest

from pipeline.records.bars import BAR_DTYPE, decode_bars, encode_bars
from pipeline.records.columnar import BatchFormatError, encode_batch
from pipeline.records.kinds import RecordKind
from pipeline.records.ticks import (
    CLOCK_DTYPE,
    PRICED_TICK_DTYPE,
    TICK_DTYPE,
    decode_priced_ticks,
    decode_ticks,
    decode_ticks_record,
    encode_clock,
    encode_priced_ticks,
    encode_ticks,
    priced_ticks,
)

pytestmark = pytest.mark.unit


def _ticks(n: int) -> np.ndarray:
    ticks = np.zeros(n, dtype=TICK_DTYPE)
    ticks["instrument_token"] = np.arange(n) + 1000
    ticks["exchange_ts"] = 1_795_000_000 + np.arange(n)
    ticks["recv_ts"] = 1_795_000_000_000_000 + np.arange(n)
    ticks["last_price"] = np.linspace(1, 2, n)
    ticks["bid"] = np.nan
    return ticks


def test_ticks_round_trip_is_identity() -> None:
    ticks = _ticks(17)
    underlying, back = decode_ticks(encode_ticks("BANKNIFTY", ticks))
    assert underlying == "BANKNIFTY"
    assert back.tobytes() == ticks.tobytes()


def test_empty_batch_round_trips() -> None:
    underlying, back = decode_ticks(encode_ticks("NIFTY", _ticks(0)))
    assert (underlying, len(back)) == ("NIFTY", 0)


def test_priced_ticks_round_trip_and_nan_greeks() -> None:
    priced = priced_ticks(_ticks(3))
    assert priced.dtype == PRICED_TICK_DTYPE
    assert np.isnan(priced["iv"]).all()
    _, back = decode_priced_ticks(encode_priced_ticks("NIFTY", priced))
    np.testing.assert_array_equal(back["instrument_token"], priced["instrument_token"])


def test_bars_round_trip() -> None:
    bars = np.zeros(2, dtype=BAR_DTYPE)
    bars["close"] = [1.5, 2.5]
    underlying, back = decode_bars(encode_bars("NIFTY", bars))
    assert underlying == "NIFTY" and back["close"].tolist() == [1.5, 2.5]


@pytest.mark.parametrize(
    "payload",
    [b"", b"SF", b"XX\x01\x01\x00\x00\x00\x00\x00\x00", b"SF\x09\x01\x00\x00\x00\x00\x00\x00"],
    ids=["empty", "short", "bad-magic", "bad-version"],
)
def test_garbage_payload_raises_batch_format_error(payload: bytes) -> None:
    with pytest.raises(BatchFormatError):
        decode_ticks(payload)


def test_truncated_rows_raise_batch_format_error() -> None:
    with pytest.raises(BatchFormatError, match="rows"):
        decode_ticks(encode_ticks("NIFTY", _ticks(3))[:-5])


def test_wrong_kind_raises_batch_format_error() -> None:
    with pytest.raises(BatchFormatError, match="kind"):
        decode_ticks(encode_bars("NIFTY", np.zeros(1, dtype=BAR_DTYPE)))


def test_encoding_wrong_dtype_is_refused() -> None:
    with pytest.raises(BatchFormatError, match="dtype"):
        encode_ticks("NIFTY", np.zeros(1, dtype=BAR_DTYPE))


def test_batches_back_to_back_decode_in_order_and_trailing_bytes_are_rejected() -> None:
    from pipeline.records.columnar import decode_batch, decode_batches, encode_batch

    a, b = _ticks(3), _ticks(2)
    payload = encode_batch(1, "NIFTY", a, TICK_DTYPE) + encode_batch(1, "BANKNIFTY", b, TICK_DTYPE)
    batches = decode_batches(payload, {1: TICK_DTYPE})
    assert [(kind, key, len(rows)) for kind, key, rows in batches] == [(1, "NIFTY", 3), (1, "BANKNIFTY", 2)]
    with pytest.raises(BatchFormatError):
        decode_batch(payload, {1: TICK_DTYPE})  # one batch expected, two present
    with pytest.raises(BatchFormatError):
        decode_batches(payload[:-1], {1: TICK_DTYPE})


def test_clock_record_round_trip_and_ticks_records_unchanged() -> None:
    underlying, ticks, clock = decode_ticks_record(encode_clock("NIFTY", 1_795_407_960))
    assert (underlying, len(ticks), clock) == ("NIFTY", 0, 1_795_407_960)
    some = np.zeros(3, TICK_DTYPE)
    underlying, ticks, clock = decode_ticks_record(encode_ticks("BANKNIFTY", some))
    assert underlying == "BANKNIFTY" and len(ticks) == 3 and clock is None
    two = encode_batch(RecordKind.CLOCK, "NIFTY", np.zeros(2, CLOCK_DTYPE), CLOCK_DTYPE)
    with pytest.raises(BatchFormatError, match="one row"):
        decode_ticks_record(two)
