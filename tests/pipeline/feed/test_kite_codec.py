"""Kite binary WebSocket codec: agreement with kiteconnect's own parser, round trips, malformed frames."""

from __future__ import annotations

import struct
from datetime import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.feed.kite_codec import FrameDecoder, decode_frame
from pipeline.feed.kite_encode import encode_frame
from pipeline.feed.kite_kernel import MALFORMED, decode_into
from pipeline.feed.kite_wire import (
    DIVISOR_TABLE,
    KITE_TICK_DTYPE,
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    FrameError,
    is_heartbeat,
    price_divisor,
)

pytestmark = pytest.mark.unit

U32 = 2**32 - 1
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
SEGMENTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
DIVISOR = {3: 1e7, 6: 1e4, 12: 1e4}

INFY = 408065  # 00 06 3A 01, segment 1 (NSE)
NIFTY50 = 256265  # segment 9 (INDICES)
TS = 0x60E2947F  # 1625461887 = 2021-07-05 10:41:27 IST


def token(exchange_token: int, segment: int) -> int:
    return (exchange_token << 8) | segment


def divisor(tok: int) -> float:
    return DIVISOR.get(tok & 0xFF, 100.0)


# --------------------------------------------------------------- wire builders
# prices may be negative (signed int32 on the wire); everything else uint32.


def ltp_packet(tok: int, last: int) -> bytes:
    return struct.pack(">Ii", tok, last)


def index_packet(tok: int, last: int, high: int, low: int, open_: int, close: int,
                 change: int = 0, ts: int | None = None) -> bytes:
    body = struct.pack(">I6i", tok, last, high, low, open_, close, change)
    return body if ts is None else body + struct.pack(">I", ts)


def quote_packet(tok: int, last: int, ltq: int, avg: int, vol: int, buy: int, sell: int,
                 open_: int, high: int, low: int, close: int) -> bytes:
    return struct.pack(">IiIiIIIiiii", tok, last, ltq, avg, vol, buy, sell, open_, high, low, close)


def full_packet(quote: bytes, ltt: int, oi: int, oi_high: int, oi_low: int, ets: int,
                depth: list[tuple[int, int, int]]) -> bytes:
    assert len(quote) == 44 and len(depth) == 10
    tail = struct.pack(">5I", ltt, oi, oi_high, oi_low, ets)
    return quote + tail + b"".join(struct.pack(">IiH2x", q, p, o) for q, p, o in depth)


def frame(*packets: bytes) -> bytes:
    return struct.pack(">H", len(packets)) + b"".join(struct.pack(">H", len(p)) + p for p in packets)


def sample_depth(base: int) -> list[tuple[int, int, int]]:
    bids = [(10 * (i + 1), base - 5 * i, i + 1) for i in range(5)]
    asks = [(20 * (i + 1), base + 5 * (i + 1), 60000 + i) for i in range(5)]
    return bids + asks


def sample_full(tok: int, last: int = 157370, close: int = 156780) -> bytes:
    q = quote_packet(tok, last, 7, 157037, 1192471, 256443, 363009, 156915, 157500, 156105, close)
    return full_packet(q, TS, 1500, 2000, 1000, TS + 1, sample_depth(last))


def sample_quote(tok: int, last: int = 157370, close: int = 156780) -> bytes:
    return quote_packet(tok, last, 7, 157037, 1192471, 256443, 363009, 156915, 157500, 156105, close)


# ------------------------------------------------------- kiteconnect reference


@pytest.fixture(scope="module")
def kite():
    from kiteconnect import KiteTicker

    return KiteTicker("k", "t")


def assert_matches_kiteticker(kite, data: bytes) -> np.ndarray:
    """Decode ``data`` with both parsers and compare every field KiteTicker produces."""
    rows = decode_frame(data)
    ticks = kite._parse_binary(data)
    assert len(rows) == len(ticks)
    mode_names = {MODE_LTP: "ltp", MODE_QUOTE: "quote", MODE_FULL: "full"}
    for row, tick in zip(rows, ticks):
        assert int(row["instrument_token"]) == tick["instrument_token"]
        assert bool(row["tradable"]) == tick["tradable"]
        assert mode_names[int(row["mode"])] == tick["mode"]
        assert row["last_price"] == pytest.approx(tick["last_price"], abs=1e-9, rel=0)
        carried = {"instrument_token", "tradable", "mode", "last_price"}
        if "ohlc" in tick:
            for k in ("open", "high", "low", "close"):
                assert row[k] == pytest.approx(tick["ohlc"][k], abs=1e-9, rel=0)
            assert row["change"] == pytest.approx(tick["change"], abs=1e-9, rel=1e-12)
            carried |= {"open", "high", "low", "close", "change"}
        for k in ("last_traded_quantity", "volume_traded", "total_buy_quantity", "total_sell_quantity",
                  "oi", "oi_day_high", "oi_day_low"):
            if k in tick:
                assert int(row[k]) == tick[k], k
                carried.add(k)
        if "average_traded_price" in tick:
            assert row["average_traded_price"] == pytest.approx(tick["average_traded_price"], abs=1e-9, rel=0)
            carried.add("average_traded_price")
        for k in ("last_trade_time", "exchange_timestamp"):
            if k in tick:
                assert tick[k] == datetime.fromtimestamp(int(row[k])), k
                carried.add(k)
        if "depth" in tick:
            for side, prefix in (("buy", "bid"), ("sell", "ask")):
                for i, level in enumerate(tick["depth"][side]):
                    assert row[f"{prefix}_price"][i] == pytest.approx(level["price"], abs=1e-9, rel=0)
                    assert int(row[f"{prefix}_quantity"][i]) == level["quantity"]
                    assert int(row[f"{prefix}_orders"][i]) == level["orders"]
            carried |= {f"{p}_{f}" for p in ("bid", "ask") for f in ("price", "quantity", "orders")}
        for name in KITE_TICK_DTYPE.names:
            if name not in carried:
                assert not np.any(row[name]), f"{name} should be 0 in mode {tick['mode']}"
    return rows


def test_ltp_frame_matches_kiteticker(kite) -> None:
    rows = assert_matches_kiteticker(kite, frame(ltp_packet(INFY, 157370)))
    assert rows["mode"][0] == MODE_LTP and rows["last_price"][0] == 1573.70


def test_quote_frame_matches_kiteticker(kite) -> None:
    rows = assert_matches_kiteticker(kite, frame(*(sample_quote(token(1000 + i, 2), 10000 + i) for i in range(7))))
    assert (rows["mode"] == MODE_QUOTE).all() and rows["tradable"].all()


def test_full_frame_matches_kiteticker(kite) -> None:
    rows = assert_matches_kiteticker(kite, frame(*(sample_full(token(5000 + i, 2), 20000 + 5 * i) for i in range(25))))
    assert (rows["mode"] == MODE_FULL).all()


def test_full_frame_zero_close_gives_zero_change(kite) -> None:
    rows = assert_matches_kiteticker(kite, frame(sample_full(INFY, close=0), sample_full(INFY)))
    assert rows["change"][0] == 0.0 and rows["change"][1] != 0.0


def test_index_quote_frame_matches_kiteticker(kite) -> None:
    data = frame(index_packet(NIFTY50, 912685, 913000, 910000, 911000, 910000, -36))
    rows = assert_matches_kiteticker(kite, data)
    assert not rows["tradable"][0] and rows["mode"][0] == MODE_QUOTE
    # wire order high, low, open, close
    assert (rows["high"][0], rows["low"][0], rows["open"][0], rows["close"][0]) == (9130.0, 9100.0, 9110.0, 9100.0)
    assert rows["exchange_timestamp"][0] == 0


def test_index_full_frame_sets_exchange_timestamp(kite) -> None:
    data = frame(index_packet(NIFTY50, 912685, 913000, 910000, 911000, 912685, -36, TS))
    rows = assert_matches_kiteticker(kite, data)
    assert rows["mode"][0] == MODE_FULL and rows["exchange_timestamp"][0] == TS
    assert rows["last_trade_time"][0] == 0 and rows["change"][0] == 0.0


@pytest.mark.parametrize(("segment", "div"), [(1, 100), (2, 100), (3, 1e7), (6, 1e4), (7, 100), (9, 100), (12, 1e4)])
def test_segment_divisors_match_kiteticker(kite, segment: int, div: float) -> None:
    tok = token(4242, segment)
    assert price_divisor(tok) == div
    packets = [ltp_packet(tok, 123456789), sample_quote(tok, 123456789, 123450000),
               sample_full(tok, 123456789, 123450000),
               index_packet(tok, 123456789, 2, 3, 4, 123450000, 0, TS)]
    rows = assert_matches_kiteticker(kite, frame(*packets))
    assert rows["last_price"] == pytest.approx(123456789 / div, abs=1e-9, rel=0)
    assert (rows["tradable"] == (segment != 9)).all()


def test_price_divisor_is_vectorised() -> None:
    toks = np.array([token(1, s) for s in SEGMENTS], dtype=np.uint32)
    np.testing.assert_array_equal(price_divisor(toks), [divisor(int(t)) for t in toks])


def test_mixed_frame_index_future_options_matches_kiteticker(kite) -> None:
    packets = [index_packet(NIFTY50, 2450000, 2460000, 2440000, 2445000, 2430000, 82, TS),
               sample_full(token(70001, 2), 2465000, 2440000)]
    packets += [sample_full(token(80000 + i, 2), 10000 + 100 * i, 9000) for i in range(30)]
    rows = assert_matches_kiteticker(kite, frame(*packets))
    assert list(rows["mode"]) == [MODE_FULL] * 32
    assert rows["tradable"].tolist() == [False] + [True] * 31


def test_interleaved_lengths_match_kiteticker(kite) -> None:
    packets = []
    for i in range(40):
        tok = token(9000 + i, SEGMENTS[i % len(SEGMENTS)])
        kind = i % 5
        if kind == 0:
            packets.append(ltp_packet(tok, 1000 + i))
        elif kind == 1:
            packets.append(sample_quote(tok, 2000 + i))
        elif kind == 2:
            packets.append(sample_full(tok, 3000 + i))
        elif kind == 3:
            packets.append(index_packet(tok, 4000 + i, 5, 6, 7, 8, 9))
        else:
            packets.append(index_packet(tok, 5000 + i, 5, 6, 7, 8, 9, TS + i))
    # and a few runs of equal length in between
    packets[10:10] = [sample_full(token(77, 2), 100 + i) for i in range(20)]
    packets[45:45] = [ltp_packet(token(78, 2), 100 + i) for i in range(33)]
    assert_matches_kiteticker(kite, frame(*packets))


def test_infy_mock_full_packet_decodes_documented_values(kite) -> None:
    """Worked example of kite-protocol.md section 3.8 (official mock INFY full packet)."""
    q = quote_packet(408065, 157370, 7, 157037, 1192471, 256443, 363009, 156915, 157500, 156105, 156780)
    depth = [(5, 157340, 1)] + [(0, 0, 0)] * 4 + [(172, 157370, 3)] + [(0, 0, 0)] * 4
    packet = full_packet(q, 0x60E2947F, 0, 0, 0, 0x60E2947F, depth)
    assert len(packet) == 184 and packet[:4] == bytes.fromhex("00063A01")
    row = assert_matches_kiteticker(kite, frame(packet))[0]
    assert row["instrument_token"] == 408065 and row["instrument_token"] & 0xFF == 1
    assert row["tradable"] and row["mode"] == MODE_FULL
    assert row["last_price"] == 1573.70
    assert row["last_traded_quantity"] == 7
    assert row["average_traded_price"] == 1570.37
    assert row["volume_traded"] == 1192471
    assert row["total_buy_quantity"] == 256443
    assert row["total_sell_quantity"] == 363009
    assert (row["open"], row["high"], row["low"], row["close"]) == (1569.15, 1575.00, 1561.05, 1567.80)
    assert row["last_trade_time"] == row["exchange_timestamp"] == 1625461887
    assert datetime.fromisoformat("2021-07-05T10:41:27+05:30").timestamp() == 1625461887
    assert row["oi"] == row["oi_day_high"] == row["oi_day_low"] == 0
    assert (row["bid_quantity"][0], row["bid_price"][0], row["bid_orders"][0]) == (5, 1573.40, 1)
    assert (row["ask_quantity"][0], row["ask_price"][0], row["ask_orders"][0]) == (172, 1573.70, 3)
    assert row["change"] == pytest.approx((1573.70 - 1567.80) * 100 / 1567.80, abs=1e-12)
    assert encode_frame(decode_frame(frame(packet))) == frame(packet)


def test_signed_prices_decode_negative() -> None:
    rows = decode_frame(frame(ltp_packet(token(1, 7), -12345), index_packet(NIFTY50, 100, 1, 1, 1, -200)))
    assert rows["last_price"][0] == -123.45
    assert rows["close"][1] == -2.0
    assert rows["change"][1] == pytest.approx((1.0 + 2.0) * 100 / -2.0)


def test_memoryview_and_bytearray_inputs_decode() -> None:
    data = frame(sample_full(INFY), ltp_packet(INFY, 1))
    ref = decode_frame(data)
    assert decode_frame(bytearray(data)).tobytes() == ref.tobytes()
    assert decode_frame(memoryview(data)).tobytes() == ref.tobytes()
    assert decode_frame(memoryview(b"xx" + data)[2:]).tobytes() == ref.tobytes()


# ---------------------------------------------------- hypothesis: raw packets

u32 = st.integers(0, U32)
price_u = st.integers(0, I32_MAX)  # KiteTicker reads prices unsigned: agree below 2**31
tokens = st.builds(token, st.integers(0, 2**24 - 1), st.sampled_from(SEGMENTS + [0, 10, 11, 255]))


@st.composite
def raw_packets(draw, prices=price_u, consistent: bool = False) -> bytes:
    """One packet of any layout. ``consistent``: index layouts only for segment 9 tokens and
    tradable layouts only for other segments (what a real server sends); otherwise any mix,
    which KiteTicker (and our decoder) read by length whatever the token says."""
    tok = draw(tokens)
    kind = draw(st.sampled_from(["ltp", "iq", "if", "quote", "full"]))
    if consistent and kind != "ltp" and (kind in ("iq", "if")) != ((tok & 0xFF) == 9):
        kind = "ltp" if kind in ("quote", "full") else "quote"
    if kind == "ltp":
        return ltp_packet(tok, draw(prices))
    if kind in ("iq", "if"):
        vals = [draw(prices) for _ in range(5)]
        ts = draw(u32) if kind == "if" else None
        return index_packet(tok, *vals, change=draw(st.integers(I32_MIN, I32_MAX)), ts=ts)
    q = quote_packet(tok, draw(prices), draw(u32), draw(prices), draw(u32), draw(u32), draw(u32),
                     draw(prices), draw(prices), draw(prices), draw(prices))
    if kind == "quote":
        return q
    depth = [(draw(u32), draw(prices), draw(st.integers(0, 0xFFFF))) for _ in range(10)]
    ts = st.integers(0, 2**32 - 1)
    return full_packet(q, draw(ts), draw(u32), draw(u32), draw(u32), draw(ts), depth)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(raw_packets(), min_size=1, max_size=12))
def test_random_frames_match_kiteticker(kite, packets: list[bytes]) -> None:
    assert_matches_kiteticker(kite, frame(*packets))


@settings(max_examples=150, deadline=None)
@given(st.lists(raw_packets(prices=st.integers(I32_MIN, I32_MAX), consistent=True), min_size=1, max_size=12))
def test_decoded_frames_reencode_byte_identical(packets: list[bytes]) -> None:
    # the index change field (@24) is not decoded: expect the encoder's value there
    rows = decode_frame(frame(*packets))
    again = encode_frame(rows)
    assert decode_frame(again).tobytes() == rows.tobytes()
    expected = []
    for p, row in zip(packets, rows):
        if len(p) in (28, 32):
            last, close = struct.unpack_from(">i", p, 4)[0], struct.unpack_from(">i", p, 20)[0]
            change = 0 if close == 0 else max(I32_MIN, min(I32_MAX, round(float(last - close) * 10000 / close)))
            p = p[:24] + struct.pack(">i", change) + p[28:]
        expected.append(p)
    assert again == frame(*expected)


# ----------------------------------------------- hypothesis: tick round trip


@st.composite
def valid_ticks(draw) -> np.ndarray:
    """Valid rows: prices int32 multiples of 1/divisor, fields the mode does not carry zero."""
    n = draw(st.integers(0, 20))
    ticks = np.zeros(n, dtype=KITE_TICK_DTYPE)
    prices = st.integers(I32_MIN, I32_MAX)
    for r in range(n):
        tok = draw(st.builds(token, st.integers(0, 2**24 - 1), st.sampled_from(SEGMENTS)))
        div = divisor(tok)
        mode = draw(st.sampled_from([MODE_LTP, MODE_QUOTE, MODE_FULL]))
        row = ticks[r:r + 1]
        row["instrument_token"] = tok
        row["tradable"] = (tok & 0xFF) != 9
        row["mode"] = mode
        row["last_price"] = draw(prices) / div
        if mode == MODE_LTP:
            continue
        for k in ("open", "high", "low", "close"):
            row[k] = draw(prices) / div
        last, close = float(row["last_price"][0]), float(row["close"][0])
        row["change"] = (last - close) * 100 / close if close != 0 else 0.0
        if (tok & 0xFF) == 9:
            if mode == MODE_FULL:
                row["exchange_timestamp"] = draw(u32)
            continue
        for k in ("last_traded_quantity", "volume_traded", "total_buy_quantity", "total_sell_quantity"):
            row[k] = draw(u32)
        row["average_traded_price"] = draw(prices) / div
        if mode == MODE_FULL:
            for k in ("oi", "oi_day_high", "oi_day_low", "last_trade_time", "exchange_timestamp"):
                row[k] = draw(u32)
            for side in ("bid", "ask"):
                row[f"{side}_price"] = [draw(prices) / div for _ in range(5)]
                row[f"{side}_quantity"] = [draw(u32) for _ in range(5)]
                row[f"{side}_orders"] = [draw(st.integers(0, 0xFFFF)) for _ in range(5)]
    return ticks


@settings(max_examples=300, deadline=None)
@given(valid_ticks())
def test_encode_then_decode_is_identity(ticks: np.ndarray) -> None:
    data = encode_frame(ticks)
    back = decode_frame(data)
    assert back.dtype == KITE_TICK_DTYPE
    assert back.tobytes() == ticks.tobytes()
    assert encode_frame(back) == data


@settings(max_examples=100, deadline=None)
@given(valid_ticks(), st.integers(1, 12))
def test_long_runs_encode_then_decode_is_identity(ticks: np.ndarray, repeat: int) -> None:
    # runs of equal packet lengths: exercises the vectorised (contiguous and gathered) group paths
    kind = ticks["mode"].astype(int) * 2 + ticks["tradable"]
    grouped = np.repeat(ticks[np.argsort(kind, kind="stable")], repeat)
    for arr in (grouped, np.tile(ticks, repeat)):
        assert decode_frame(encode_frame(arr)).tobytes() == arr.tobytes()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(raw_packets(prices=st.integers(I32_MIN, I32_MAX)), st.integers(1, 9)),
                min_size=1, max_size=10))
def test_scalar_and_vectorised_paths_agree(runs: list[tuple[bytes, int]]) -> None:
    """Tiny frames/groups are read with struct, others with numpy views: same bytes out."""
    packets = [p for p, k in runs for _ in range(k)]
    whole = decode_frame(frame(*packets))
    one_by_one = np.concatenate([decode_frame(frame(p)) for p in packets])
    assert whole.tobytes() == one_by_one.tobytes()
    by_kind = sorted(packets, key=len)
    whole_sorted = decode_frame(frame(*by_kind))
    assert whole_sorted.tobytes() == np.concatenate([decode_frame(frame(p)) for p in by_kind]).tobytes()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 16, 64])
def test_homogeneous_frames_of_any_size_match_kiteticker(kite, n: int) -> None:
    assert_matches_kiteticker(kite, frame(*(ltp_packet(token(i, 3), 1000 + i) for i in range(n))))
    assert_matches_kiteticker(kite, frame(*(sample_quote(token(i, 6), 1000 + i) for i in range(n))))
    assert_matches_kiteticker(kite, frame(*(sample_full(token(i, 12), 1000 + i) for i in range(n))))
    assert_matches_kiteticker(kite, frame(*(index_packet(token(i, 9), 1000 + i, 1, 2, 3, 990) for i in range(n))))
    assert_matches_kiteticker(kite, frame(*(index_packet(token(i, 9), 1000 + i, 1, 2, 3, 0, 0, TS)
                                            for i in range(n))))


def test_encode_packet_lengths_follow_tradable_and_mode() -> None:
    ticks = np.zeros(5, dtype=KITE_TICK_DTYPE)
    ticks["instrument_token"] = [INFY, NIFTY50, NIFTY50, INFY, INFY]
    ticks["tradable"] = [True, False, False, True, True]
    ticks["mode"] = [MODE_LTP, MODE_QUOTE, MODE_FULL, MODE_QUOTE, MODE_FULL]
    data = encode_frame(ticks)
    lengths, j = [], 2
    for _ in range(5):
        (length,) = struct.unpack_from(">H", data, j)
        lengths.append(length)
        j += 2 + length
    assert lengths == [8, 28, 32, 44, 184] and j == len(data)


def test_encode_index_change_field_in_hundredths_of_percent() -> None:
    ticks = np.zeros(1, dtype=KITE_TICK_DTYPE)
    ticks["instrument_token"], ticks["mode"] = NIFTY50, MODE_QUOTE
    ticks["last_price"], ticks["close"] = 9093.99, 9126.85
    data = encode_frame(ticks)
    assert struct.unpack_from(">i", data, 4 + 24)[0] == -36  # -0.36 %


def test_encode_rejects_unrepresentable_values() -> None:
    ticks = np.zeros(1, dtype=KITE_TICK_DTYPE)
    ticks["instrument_token"], ticks["mode"] = INFY, MODE_LTP
    ticks["last_price"] = 3e7  # 3e9 paise > int32
    with pytest.raises(ValueError):
        encode_frame(ticks)
    ticks["last_price"], ticks["mode"] = 1.0, 7
    with pytest.raises(ValueError):
        encode_frame(ticks)
    with pytest.raises(TypeError):
        encode_frame(np.zeros(1, dtype=[("x", "<u4")]))


def test_empty_tick_array_encodes_to_zero_count_frame() -> None:
    assert encode_frame(np.zeros(0, dtype=KITE_TICK_DTYPE)) == b"\x00\x00"
    assert len(decode_frame(b"\x00\x00")) == 0


# ------------------------------------------------------------ malformed frames

GOOD = frame(sample_full(INFY), ltp_packet(INFY, 100), sample_full(INFY))


@pytest.mark.parametrize(
    ("data", "reason", "text"),
    [
        (b"", "empty", "empty"),
        (b"\x01", "heartbeat", "heartbeat"),
        (b"\x00\x01", "count_mismatch", "header says 1 packets, frame holds 0"),
        (b"\x00\x01\x00", "truncated", "truncated packet 1"),
        (GOOD[:-1], "truncated", "truncated packet 3: needs 184 bytes, 183 left"),
        (GOOD[:-90], "truncated", "truncated packet 3: needs 184 bytes, 94 left"),
        (GOOD[:2 + 186 + 1], "truncated", "truncated packet 2"),
        (b"\x00\x04" + GOOD[2:], "count_mismatch", "header says 4 packets, frame holds 3"),
        (b"\x00\x02" + GOOD[2:], "count_mismatch", "header says 2 packets, frame holds 3"),
        (b"\x00\x00" + GOOD[2:], "count_mismatch", "header says 0 packets, frame holds 3"),
        (frame(b"\x00" * 9), "bad_length", "unknown packet length 9"),
        (frame(ltp_packet(INFY, 1), b"\x00" * 0), "bad_length", "unknown packet length 0"),
        (GOOD + b"\x00", "trailing_bytes", "1 trailing bytes after 3 packets"),
        (GOOD + b"garbage!", "trailing_bytes", "8 trailing bytes"),
        (b"\x00\x00garbage", "trailing_bytes", "7 trailing bytes after 0 packets"),
    ],
    ids=["empty", "heartbeat", "count_no_packets", "truncated_header", "truncated_last_byte",
         "truncated_packet", "truncated_mid_frame", "count_too_high", "count_too_low", "count_zero",
         "unknown_length", "zero_length", "trailing_byte", "trailing_garbage", "zero_count_garbage"],
)
def test_malformed_frame_raises_frame_error(data: bytes, reason: str, text: str) -> None:
    with pytest.raises(FrameError, match=text) as info:
        decode_frame(data)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)

    decoder = FrameDecoder()
    assert decoder.decode(data) is None
    if reason == "heartbeat":
        assert decoder.heartbeats == 1 and decoder.errors == {}
    else:
        assert decoder.errors == {reason: 1} and decoder.heartbeats == 0
    assert decoder.frames == decoder.packets == 0


def test_heartbeat_detection() -> None:
    assert is_heartbeat(b"\x00") and is_heartbeat(b"\xff") and is_heartbeat(b"")
    assert not is_heartbeat(b"\x00\x00") and not is_heartbeat(GOOD)


def test_frame_decoder_counts_and_take_new_errors_resets_delta() -> None:
    decoder = FrameDecoder()
    assert len(decoder.decode(GOOD)) == 3
    assert decoder.decode(b"\x07") is None
    assert decoder.decode(GOOD[:-1]) is None
    assert decoder.decode(GOOD[:-1]) is None
    assert decoder.decode(GOOD + b"x") is None
    assert (decoder.frames, decoder.packets, decoder.heartbeats) == (1, 3, 1)
    assert decoder.take_new_errors() == {"truncated": 2, "trailing_bytes": 1}
    assert decoder.take_new_errors() == {}
    assert decoder.decode(b"") is None
    assert decoder.decode(GOOD[:-1]) is None
    assert decoder.take_new_errors() == {"empty": 1, "truncated": 1}
    assert decoder.errors == {"truncated": 3, "trailing_bytes": 1, "empty": 1}
    assert "truncated packet 3" in decoder.last_error


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_frame_error(data: bytes) -> None:
    try:
        rows = decode_frame(data)
    except FrameError:
        rows = None
    else:
        assert rows.dtype == KITE_TICK_DTYPE
    decoder = FrameDecoder()
    got = decoder.decode(data)
    assert (got is None) == (rows is None)
    assert decoder.frames + decoder.heartbeats + sum(decoder.errors.values()) == 1
    assert "internal" not in decoder.errors


@settings(max_examples=300, deadline=None)
@given(st.lists(raw_packets(), min_size=1, max_size=8), st.data())
def test_damaged_valid_frames_yield_nothing_or_everything(packets: list[bytes], data) -> None:
    good = frame(*packets)
    cut = data.draw(st.integers(0, len(good) - 1))
    decoder = FrameDecoder()
    assert decoder.decode(good[:cut]) is None  # a truncated frame never yields part of its ticks
    assert decoder.decode(good + data.draw(st.binary(min_size=1, max_size=5))) is None
    pos = data.draw(st.integers(0, len(good) - 1))
    flipped = bytearray(good)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    rows = decoder.decode(bytes(flipped))
    if rows is not None:
        assert rows.dtype == KITE_TICK_DTYPE
    assert "internal" not in decoder.errors


BIG = frame(*[ltp_packet(INFY, 1000 + i) for i in range(9)])  # 9 packets: the compiled walk's frames


@pytest.mark.parametrize(
    ("data", "reason", "text"),
    [
        (BIG[:-1], "truncated", "truncated packet 9"),
        (b"\x00\x0a" + BIG[2:], "count_mismatch", "header says 10 packets, frame holds 9"),
        (b"\x00\x08" + BIG[2:], "count_mismatch", "header says 8 packets, frame holds 9"),
        (BIG[:2 + 10 * 4] + b"\x00\x09" + b"\x00" * 9 + BIG[2 + 10 * 5:], "bad_length", "unknown packet length 9"),
        (BIG + b"xy", "trailing_bytes", "2 trailing bytes after 9 packets"),
    ],
    ids=["truncated", "count_too_high", "count_too_low", "unknown_length", "trailing"],
)
def test_malformed_large_frames_raise_the_same_precise_error(data: bytes, reason: str, text: str) -> None:
    """Frames of more than a few packets take the compiled walk; a malformed one falls back to the checked
    path and raises exactly what the small frames raise."""
    n = (data[0] << 8) | data[1]
    assert decode_into(np.frombuffer(data, np.uint8), n, DIVISOR_TABLE, np.zeros(n, KITE_TICK_DTYPE)) == MALFORMED
    with pytest.raises(FrameError, match=text) as info:
        decode_frame(data)
    assert info.value.reason == reason
