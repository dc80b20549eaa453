"""OI rollups (pipeline.core.rollups) against brute-force definitions: max pain, PCR, carry-forward, versions."""

from __future__ import annotations

import numpy as np
import pytest

import greeks
from pipeline.core.chain_analytics import atm_iv
from pipeline.core.rollups import OIRollup, max_pain
from pipeline.records.bars import BAR_DTYPE
from pipeline.records.columnar import BatchFormatError
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.rollups import (
    CHAIN_BAR_DTYPE,
    MISSING_INT,
    STRIKE_BAR_DTYPE,
    decode_rollups,
    encode_rollups,
    row_dicts,
)

pytestmark = pytest.mark.unit

EXPIRY, EXPIRY2 = "2030-01-31", "2030-02-28"
STRIKES = (21900.0, 22000.0, 22100.0)
SPOT, FUT = 256265, 1001
T0 = 1_900_000_020 // 60 * 60


def _token(strike: float, typ: str, expiry: str = EXPIRY) -> int:
    return 2000 + int(strike) // 100 * 10 + (1 if typ == "PE" else 0) + (5 if expiry == EXPIRY2 else 0)


def _index(strikes=STRIKES, expiries=(EXPIRY,), underlying="NIFTY") -> InstrumentIndex:
    rows = [
        {"instrument_token": SPOT, "tradingsymbol": "NIFTY 50", "name": "NIFTY 50", "expiry": "", "strike": 0.0,
         "instrument_type": "EQ", "segment": "INDICES"},
        {"instrument_token": FUT, "tradingsymbol": "NIFTYFUT", "name": underlying, "expiry": EXPIRY, "strike": 0.0,
         "instrument_type": "FUT", "segment": "NFO-FUT"},
    ]
    for expiry in expiries:
        for k in strikes:
            for typ in ("CE", "PE"):
                rows.append({"instrument_token": _token(k, typ, expiry), "tradingsymbol": f"N{expiry}{k:.0f}{typ}",
                             "name": underlying, "expiry": expiry, "strike": k, "instrument_type": typ,
                             "segment": "NFO-OPT"})
    return InstrumentIndex.from_rows(rows)


def _bars(tokens, bucket=T0, *, oi=1000, oi_open=None, close=100.0, volume=50, iv=0.15, delta=0.5,
          forward=22040.0, recv=None, interval_s=60, mid_iv=np.nan, stale=0.0) -> np.ndarray:
    n = len(tokens)
    out = np.zeros(n, BAR_DTYPE)
    out["instrument_token"] = tokens
    out["interval_s"] = interval_s
    out["bucket"] = bucket
    out["close"] = close
    out["oi"] = oi
    out["oi_open"] = oi if oi_open is None else oi_open
    out["volume"] = volume
    out["iv"] = iv
    out["delta"] = delta
    out["forward"] = forward
    out["mid_iv"] = mid_iv
    out["stale"] = stale
    out["last_recv_ts"] = (bucket + 59) * 1_000_000 if recv is None else recv
    return out


def _chain_bars(oi_call, oi_put, bucket=T0, **kw) -> np.ndarray:
    tokens = [_token(k, "CE") for k in STRIKES] + [_token(k, "PE") for k in STRIKES]
    return _bars(tokens, bucket, oi=np.array(list(oi_call) + list(oi_put)), **kw)


def _by_strike(rows: np.ndarray) -> dict[float, np.void]:
    return {float(r["strike"]): r for r in rows}


# ------------------------------------------------------------------ max pain


def _brute_max_pain(strikes, call_oi, put_oi):
    best, best_k = None, None
    for k in strikes:  # ascending: strict < keeps the lowest strike on ties
        paid = 0
        for ki, c, p in zip(strikes, call_oi, put_oi, strict=True):
            paid += c * max(k - ki, 0) + p * max(ki - k, 0)
        if best is None or paid < best:
            best, best_k = paid, k
    return best_k


def test_max_pain_random_oi_matches_brute_force():
    rng = np.random.default_rng(11)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        strikes = np.sort(rng.choice(np.arange(18000, 26000, 50), size=n, replace=False)).astype(float)
        call_oi = rng.integers(0, 5, n) * int(rng.choice([1, 75, 10_000]))
        put_oi = rng.integers(0, 5, n) * int(rng.choice([1, 75, 10_000]))
        if call_oi.sum() + put_oi.sum() == 0:
            assert np.isnan(max_pain(strikes, call_oi, put_oi))
            continue
        assert max_pain(strikes, call_oi, put_oi) == _brute_max_pain(strikes.tolist(), call_oi.tolist(), put_oi.tolist())


def test_max_pain_ties_lowest_strike():
    assert max_pain(np.array([100.0, 110.0, 120.0]), np.array([0, 0, 0]), np.array([0, 5, 0])) == 110.0
    assert max_pain(np.array([100.0, 110.0]), np.array([1, 0]), np.array([0, 1])) == 100.0


def test_rollup_max_pain_random_chain_matches_brute_force():
    rng = np.random.default_rng(3)
    strikes = tuple(float(k) for k in range(21000, 23000, 100))
    index = _index(strikes)
    call_oi, put_oi = rng.integers(0, 100_000, len(strikes)), rng.integers(0, 100_000, len(strikes))
    tokens = [_token(k, "CE") for k in strikes] + [_token(k, "PE") for k in strikes]
    _, chain = OIRollup("NIFTY", 60).update(_bars(tokens, oi=np.concatenate([call_oi, put_oi])), index)
    assert chain["max_pain"][0] == _brute_max_pain(list(strikes), call_oi.tolist(), put_oi.tolist())


# ------------------------------------------------------------------ PCR, totals


def test_pcr_put_over_call_oi():
    strike, chain = OIRollup("NIFTY", 60).update(_chain_bars([100, 200, 300], [400, 500, 900]), _index())
    assert chain["total_call_oi"][0] == 600 and chain["total_put_oi"][0] == 1800
    assert chain["pcr"][0] == pytest.approx(3.0)
    assert len(strike) == 3 and chain["call_volume"][0] == 150 and chain["put_volume"][0] == 150


def test_pcr_zero_call_oi_nan():
    _, chain = OIRollup("NIFTY", 60).update(_chain_bars([0, 0, 0], [400, 500, 900]), _index())
    assert np.isnan(chain["pcr"][0])
    assert row_dicts(chain)[0]["pcr"] is None


def test_no_oi_max_pain_nan():
    _, chain = OIRollup("NIFTY", 60).update(_chain_bars([0, 0, 0], [0, 0, 0]), _index())
    assert np.isnan(chain["max_pain"][0]) and np.isnan(chain["pcr"][0])


# ------------------------------------------------------------------ carry-forward, oi_change


def test_non_trading_strike_carried_forward_volume_zero():
    index, rollup = _index(), OIRollup("NIFTY", 60)
    rollup.update(_chain_bars([100, 200, 300], [400, 500, 600], close=80.0, iv=0.2), index)
    # next bucket: only the 22000 call trades
    strike, chain = rollup.update(_bars([_token(22000.0, "CE")], T0 + 60, oi=250, oi_open=210, close=90.0), index)
    assert set(strike["bucket"]) == {T0 + 60} and len(strike) == 3  # every known strike, carried
    rows = _by_strike(strike)
    quiet = rows[21900.0]
    assert quiet["call_oi"] == 100 and quiet["put_oi"] == 400 and quiet["call_close"] == 80.0
    assert quiet["call_iv"] == pytest.approx(0.2) and quiet["call_volume"] == 0 and quiet["call_oi_change"] == 0
    assert rows[22000.0]["call_oi"] == 250 and rows[22000.0]["call_volume"] == 50
    assert chain["total_call_oi"][0] == 100 + 250 + 300 and chain["total_put_oi"][0] == 1500
    assert chain["call_volume"][0] == 50 and chain["put_volume"][0] == 0


def test_oi_change_across_buckets_previous_close_first_bucket_open():
    index, rollup = _index(), OIRollup("NIFTY", 60)
    ce = _token(22000.0, "CE")
    s1, _ = rollup.update(_bars([ce], T0, oi=1000, oi_open=900), index)
    assert s1["call_oi_change"][0] == 100  # first bucket: oi - oi_open
    rollup.update(_bars([_token(22100.0, "PE")], T0 + 60), index)  # ce quiet in T0+60
    s3, _ = rollup.update(_bars([ce], T0 + 120, oi=1300, oi_open=1250), index)
    assert _by_strike(s3)[22000.0]["call_oi_change"] == 300  # vs its previous known bar's close (T0), not oi_open


def test_side_without_bar_is_missing():
    strike, _ = OIRollup("NIFTY", 60).update(_bars([_token(22000.0, "CE")]), _index())
    row = strike[0]
    assert row["put_oi"] == MISSING_INT and np.isnan(row["put_close"])
    d = row_dicts(strike)[0]
    assert d["put_oi"] is None and d["put_volume"] is None and d["put_iv"] is None and d["call_oi"] == 1000
    assert d["underlying"] == "NIFTY" and d["expiry"] == EXPIRY


# ------------------------------------------------------------------ late corrections


def test_late_corrected_bar_rows_have_newer_last_recv_ts():
    index, rollup = _index(), OIRollup("NIFTY", 60)
    ce, pe = _token(22000.0, "CE"), _token(22000.0, "PE")
    s0, c0 = rollup.update(_bars([ce, pe], T0, oi=[1000, 2000], recv=10), index)
    s1, c1 = rollup.update(_bars([pe], T0 + 60, oi=2100, recv=20), index)
    assert c1["total_call_oi"][0] == 1000
    # late correction of the call's T0 bar: T0 and the carried T0+60 are recomputed
    s2, c2 = rollup.update(_bars([ce], T0, oi=1500, recv=30), index)
    assert c2["bucket"].tolist() == [T0, T0 + 60]
    assert c2["total_call_oi"].tolist() == [1500, 1500]
    assert c2["last_recv_ts"].tolist() == [30, 30]
    assert all(c2["last_recv_ts"] > np.array([c0["last_recv_ts"][0], c1["last_recv_ts"][0]]))
    assert (s2["last_recv_ts"] == 30).all() and s2["call_oi"].tolist() == [1500, 1500]


def test_late_bar_feeding_next_bar_oi_change_recomputes_it():
    index, rollup = _index(), OIRollup("NIFTY", 60)
    ce = _token(22000.0, "CE")
    rollup.update(_bars([ce], T0, oi=1000, recv=10), index)
    rollup.update(_bars([ce], T0 + 60, oi=1200, recv=20), index)
    rollup.update(_bars([ce], T0 + 120, oi=1250, recv=25), index)
    s, c = rollup.update(_bars([ce], T0 + 60, oi=1100, recv=40), index)  # correction of the middle bar
    assert c["bucket"].tolist() == [T0 + 60, T0 + 120]  # T0+120's oi_change depends on it; T0 does not
    by_bucket = {int(r["bucket"]): r for r in s}
    assert by_bucket[T0 + 60]["call_oi_change"] == 100 and by_bucket[T0 + 120]["call_oi_change"] == 150
    assert (c["last_recv_ts"] == 40).all()


def test_older_redelivery_does_not_replace_newer_bar():
    index, rollup = _index(), OIRollup("NIFTY", 60)
    ce = _token(22000.0, "CE")
    rollup.update(_bars([ce], T0, oi=1500, recv=30), index)
    _, c = rollup.update(_bars([ce], T0, oi=1000, recv=10), index)
    assert c["total_call_oi"][0] == 1500 and c["last_recv_ts"][0] == 30


# ------------------------------------------------------------------ ATM, forward


def test_atm_iv_interpolates_from_the_otm_put_below_to_the_otm_call_above():
    index = _index()
    tokens = [_token(22000.0, "PE"), _token(22100.0, "CE"), _token(22000.0, "CE"), _token(22100.0, "PE")]
    bars = _bars(tokens, forward=np.array([22040.0, 22040.0, 22030.0, 22050.0]),
                 iv=np.array([0.20, 0.10, 0.5, 0.9]))  # the in-the-money sides (0.5, 0.9) never enter
    strike, chain = OIRollup("NIFTY", 60).update(bars, index)
    assert chain["forward"][0] == 22040.0  # median of the bucket's bars
    assert (strike["forward"] == 22040.0).all()
    w = (22040.0 - 22000.0) / 100.0
    assert chain["atm_strike"][0] == 22000.0
    assert chain["atm_iv"][0] == pytest.approx(0.20 + w * (0.10 - 0.20))


def test_atm_iv_leaves_out_a_stale_side_and_uses_the_fresh_one():
    """The issue's case: a fresh 0.20 and a stale 0.13 gave 0.165; the stale one is reported, not used."""
    index = _index()
    bars = _bars([_token(22000.0, "PE"), _token(22100.0, "CE")], forward=22050.0,
                 iv=np.array([0.20, 0.13]), stale=np.array([0.0, 1.0]))
    strike, chain = OIRollup("NIFTY", 60).update(bars, index)
    assert chain["atm_iv"][0] == pytest.approx(0.20)
    assert _by_strike(strike)[22100.0]["call_iv"] == 0.13


def test_atm_iv_leaves_out_a_side_carried_forward_from_an_older_bucket():
    index = _index()
    rollup = OIRollup("NIFTY", 60)
    rollup.update(_bars([_token(22100.0, "CE")], T0, forward=22050.0, iv=0.13), index)
    _, chain = rollup.update(_bars([_token(22000.0, "PE")], T0 + 60, forward=22050.0, iv=0.20), index)
    assert chain["atm_iv"][0] == pytest.approx(0.20)


def test_atm_iv_prefers_each_sides_mid_iv():
    index = _index()
    bars = _bars([_token(22000.0, "PE"), _token(22100.0, "CE")], forward=22050.0,
                 iv=np.array([0.30, 0.30]), mid_iv=np.array([0.16, np.nan]))
    _, chain = OIRollup("NIFTY", 60).update(bars, index)
    assert chain["atm_iv"][0] == pytest.approx(0.16 + 0.5 * (0.30 - 0.16))


def test_atm_iv_at_a_listed_strike_is_the_mean_of_its_sides_and_ties_go_to_the_lower_strike():
    index = _index()
    at = _bars([_token(22000.0, "PE"), _token(22000.0, "CE")], forward=22000.0, iv=np.array([0.18, 0.14]))
    _, chain = OIRollup("NIFTY", 60).update(at, index)
    assert chain["atm_strike"][0] == 22000.0 and chain["atm_iv"][0] == pytest.approx(0.16)
    tie = _bars([_token(22000.0, "PE"), _token(22100.0, "CE")], forward=22050.0, iv=np.array([0.18, np.nan]))
    _, chain = OIRollup("NIFTY", 60).update(tie, index)
    assert chain["atm_strike"][0] == 22000.0 and chain["atm_iv"][0] == pytest.approx(0.18)


def test_atm_iv_outside_the_listed_strikes_is_nan():
    assert np.isnan(atm_iv(np.array(STRIKES), 21800.0, np.array([0.1, 0.1, 0.1]), np.array([0.1, 0.1, 0.1])))
    assert np.isnan(atm_iv(np.array(STRIKES), 22050.0, np.full(3, np.nan), np.full(3, np.nan)))


def test_chain_rows_count_listed_and_covered_strikes():
    index = _index(strikes=(21800.0, 21900.0, 22000.0, 22100.0, 22200.0))
    tokens = [_token(21900.0, "CE"), _token(21900.0, "PE"), _token(22000.0, "CE"), _token(22000.0, "PE"),
              _token(22100.0, "CE")]  # 22100's put and 21800/22200 never ticked
    _, chain = OIRollup("NIFTY", 60).update(_bars(tokens), index)
    assert (chain["strikes_listed"][0], chain["strikes_covered"][0]) == (5, 2)


def test_forward_unknown_atm_nan():
    _, chain = OIRollup("NIFTY", 60).update(_bars([_token(22000.0, "CE")], forward=np.nan), _index())
    assert np.isnan(chain["forward"][0]) and np.isnan(chain["atm_strike"][0]) and np.isnan(chain["atm_iv"][0])


# ------------------------------------------------------------------ input filtering, expiries


def test_empty_input_empty_rows():
    strike, chain = OIRollup("NIFTY", 60).update(np.empty(0, BAR_DTYPE), _index())
    assert strike.dtype == STRIKE_BAR_DTYPE and chain.dtype == CHAIN_BAR_DTYPE
    assert len(strike) == 0 and len(chain) == 0


def test_non_option_bars_ignored():
    rollup = OIRollup("NIFTY", 60)
    strike, chain = rollup.update(_bars([SPOT, FUT, 999_999]), _index())
    assert len(strike) == 0 and len(chain) == 0 and len(rollup) == 0
    strike, chain = rollup.update(_bars([SPOT, FUT, _token(22000.0, "PE")]), _index())
    assert len(chain) == 1 and chain["total_put_oi"][0] == 1000 and chain["total_call_oi"][0] == 0


def test_other_interval_and_underlying_ignored():
    index = _index(underlying="BANKNIFTY")
    assert len(OIRollup("NIFTY", 60).update(_bars([_token(22000.0, "CE")]), index)[1]) == 0
    assert len(OIRollup("BANKNIFTY", 300).update(_bars([_token(22000.0, "CE")]), index)[1]) == 0


def test_two_expiries_separate_chain_rows():
    index = _index(expiries=(EXPIRY, EXPIRY2))
    bars = _bars([_token(22000.0, "CE"), _token(22000.0, "CE", EXPIRY2), _token(22100.0, "PE", EXPIRY2)],
                 oi=np.array([10, 20, 30]))
    strike, chain = OIRollup("NIFTY", 60).update(bars, index)
    assert [e.decode() for e in chain["expiry"]] == [EXPIRY, EXPIRY2]
    assert chain["total_call_oi"].tolist() == [10, 20] and chain["total_put_oi"].tolist() == [0, 30]
    assert len(strike) == 3


def test_prune_keeps_baseline_for_carry_forward():
    index, rollup = _index(), OIRollup("NIFTY", 60, retain_s=120)
    rollup.update(_bars([_token(21900.0, "CE")], T0, oi=77), index)
    for i in range(1, 10):
        rollup.update(_bars([_token(22000.0, "CE")], T0 + 60 * i, oi=100 + i), index)
    assert len(rollup) <= 5
    _, chain = rollup.update(_bars([_token(22000.0, "CE")], T0 + 600, oi=200), index)
    assert chain["total_call_oi"][0] == 77 + 200


# ------------------------------------------------------------------ record


def test_encode_decode_roundtrip_both_arrays():
    strike, chain = OIRollup("NIFTY", 60).update(_chain_bars([1, 2, 3], [4, 5, 6]), _index())
    key, s, c, _ = decode_rollups(encode_rollups("NIFTY", strike, chain))
    assert key == "NIFTY" and s.tobytes() == strike.tobytes() and c.tobytes() == chain.tobytes()  # NaN-safe
    key, s, c, _ = decode_rollups(encode_rollups("NIFTY", strike[:0], chain[:0]))
    assert len(s) == 0 and len(c) == 0


def test_decode_truncated_record_raises():
    strike, chain = OIRollup("NIFTY", 60).update(_chain_bars([1, 2, 3], [4, 5, 6]), _index())
    payload = encode_rollups("NIFTY", strike, chain)
    for bad in (payload[:3], payload[:-1], payload[: len(payload) // 2]):
        with pytest.raises(BatchFormatError):
            decode_rollups(bad)


# ------------------------------------------------------------------ restart: seed and warm-up


def _stream(n_buckets: int, seed: int = 5) -> list[np.ndarray]:
    """Complete bars, one array per bucket from T0: a random subset of the options trades in each."""
    rng = np.random.default_rng(seed)
    index = _index(expiries=(EXPIRY, EXPIRY2))
    tokens = np.array(sorted(t for t in index.tokens.tolist() if t not in (SPOT, FUT)))
    oi = {t: int(rng.integers(1_000, 5_000)) for t in tokens.tolist()}
    out = []
    for i in range(n_buckets):
        bucket = T0 + 60 * i
        traded = tokens[rng.random(len(tokens)) < 0.4]
        b = _bars(traded, bucket, volume=rng.integers(1, 500, len(traded)), close=rng.uniform(10, 300, len(traded)),
                  iv=np.where(rng.random(len(traded)) < 0.1, np.nan, rng.uniform(0.1, 0.3, len(traded))),
                  delta=rng.uniform(-1, 1, len(traded)), forward=rng.uniform(22000, 22100, len(traded)),
                  recv=(bucket + rng.integers(1, 60, len(traded))) * 1_000_000)
        for row in b:
            t = int(row["instrument_token"])
            row["oi_open"] = oi[t]
            oi[t] += int(rng.integers(-300, 300))
            row["oi"] = oi[t]
        out.append(b)
    return out


def _partial(bars: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The warm-up versions of a bucket's complete bars after a restart mid-bucket: bars that had ticks
    after the replay start come back with the same newest tick (close, oi, iv, delta, last_recv_ts) but
    fewer ticks (smaller volume, another oi_open and forward); the others (traded only before) not at all."""
    out = bars[rng.random(len(bars)) < 0.6].copy()
    out["volume"] //= 3
    out["oi_open"] += 17
    out["forward"] += 1.5
    return out


def _latest_before(stream: list[np.ndarray], before: int) -> np.ndarray:
    """What the database holds for a seed: the newest complete bar per option with bucket < before."""
    bars = np.concatenate([b for b in stream if len(b) and b["bucket"][0] < before])
    bars = bars[np.lexsort((bars["bucket"], bars["instrument_token"]))]
    last = np.ones(len(bars), bool)
    last[:-1] = bars["instrument_token"][1:] != bars["instrument_token"][:-1]
    return bars[last]


def _rows_by_bucket(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _assert_rows_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert len(got) == len(want)
    for name in want.dtype.names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)  # NaN == NaN


def test_restart_mid_bucket_seeded_rows_after_warmup_equal_uninterrupted():
    index, stream, rng = _index(expiries=(EXPIRY, EXPIRY2)), _stream(10), np.random.default_rng(9)
    full = OIRollup("NIFTY", 60)
    expected = _rows_by_bucket([full.update(b, index) for b in stream])
    w = 4  # the worker restarts 25 s into bucket T0 + 240 (already closed and stored)
    fresh = OIRollup("NIFTY", 60)
    assert fresh.start(T0 + 60 * w + 25) == T0 + 60 * (w + 1)
    fresh.seed(_latest_before(stream, fresh.seed_before), index)
    warm_up = _partial(stream[w], rng)
    expiries = len(np.unique(index.expiry_ts[index.positions(warm_up["instrument_token"])]))
    parts = [fresh.update(warm_up, index)] + [fresh.update(b, index) for b in stream[w + 1:]]
    strike, chain = _rows_by_bucket(parts)
    assert len(parts[0][1]) == 0 and fresh.suppressed == expiries > 0  # no rows for the warm-up bucket
    assert chain["bucket"].min() == T0 + 60 * (w + 1)
    _assert_rows_equal(strike, expected[0][expected[0]["bucket"] > T0 + 60 * w])
    _assert_rows_equal(chain, expected[1][expected[1]["bucket"] > T0 + 60 * w])


def test_restart_option_traded_only_before_replay_start_carried_from_stored_warmup_bar():
    index, ce, pe = _index(), _token(22000.0, "CE"), _token(22000.0, "PE")
    stream = [_bars([ce, pe], T0, oi=[100, 200]), _bars([ce], T0 + 60, oi=150), _bars([pe], T0 + 120, oi=260)]
    full = OIRollup("NIFTY", 60)
    want = [full.update(b, index) for b in stream][-1]
    fresh = OIRollup("NIFTY", 60)
    fresh.start(T0 + 60 + 40)  # the call traded in T0+60 only before the restart: no warm-up bar of it
    fresh.seed(_latest_before(stream, fresh.seed_before), index)
    assert len(fresh.update(np.empty(0, BAR_DTYPE), index)[1]) == 0
    got = fresh.update(stream[2], index)
    assert got[1]["total_call_oi"][0] == 150
    _assert_rows_equal(got[0], want[0])
    _assert_rows_equal(got[1], want[1])


def test_start_on_bucket_boundary_suppresses_nothing():
    index, stream = _index(expiries=(EXPIRY, EXPIRY2)), _stream(4, seed=8)
    full, fresh = OIRollup("NIFTY", 60), OIRollup("NIFTY", 60)
    assert fresh.start(T0) == T0
    fresh.seed(np.empty(0, BAR_DTYPE), index)
    for b in stream:
        want, got = full.update(b, index), fresh.update(b, index)
        _assert_rows_equal(got[0], want[0])
        _assert_rows_equal(got[1], want[1])
    assert fresh.suppressed == 0


def test_late_bar_older_than_replay_start_dropped_no_rows():
    index, ce = _index(), _token(22000.0, "CE")
    fresh = OIRollup("NIFTY", 60)
    fresh.start(T0 + 120)
    fresh.seed(_bars([ce], T0, oi=100), index)
    strike, chain = fresh.update(_bars([ce], T0 + 60, oi=999, recv=10**18), index)  # one-tick partial version
    assert len(strike) == 0 and len(chain) == 0 and fresh.suppressed == 0
    _, chain = fresh.update(_bars([_token(22000.0, "PE")], T0 + 120, oi=5), index)
    assert chain["total_call_oi"][0] == 100 and chain["last_recv_ts"][0] == (T0 + 120 + 59) * 1_000_000


def test_start_after_update_raises():
    rollup = OIRollup("NIFTY", 60)
    rollup.update(_bars([_token(22000.0, "CE")]), _index())
    with pytest.raises(RuntimeError):
        rollup.start(T0)


def test_start_mid_bucket_seed_without_warmup_bucket_bars_first_bucket_emitted():
    index, stream = _index(expiries=(EXPIRY, EXPIRY2)), _stream(4, seed=2)
    full, fresh = OIRollup("NIFTY", 60), OIRollup("NIFTY", 60)
    fresh.start(T0 + 30)  # a first start: ticks begin 30 s into the session, nothing of T0 was stored
    fresh.seed(np.empty(0, BAR_DTYPE), index)
    for b in stream:
        want, got = full.update(b, index), fresh.update(b, index)
        _assert_rows_equal(got[0], want[0])
        _assert_rows_equal(got[1], want[1])
    assert fresh.suppressed == 0


def test_start_mid_bucket_unseeded_warmup_suppressed():
    index, stream = _index(expiries=(EXPIRY, EXPIRY2)), _stream(3, seed=4)
    fresh = OIRollup("NIFTY", 60)
    fresh.start(T0 + 30)  # the stored bars could not be read
    assert len(fresh.update(stream[0], index)[1]) == 0 and fresh.suppressed > 0
    assert set(fresh.update(stream[1], index)[1]["bucket"].tolist()) == {T0 + 60}


def test_rollup_rows_carry_gex_buildup_and_skew_from_their_bars() -> None:
    index = _index(expiries=("2030-06-27",))  # after T0: the options have time to expiry
    rollup = OIRollup("NIFTY", 60)
    tokens = [_token(22000.0, "CE"), _token(22000.0, "PE"), _token(22100.0, "CE")]
    first = _bars(tokens, T0, oi=1000, close=100.0, forward=22050.0)
    rollup.update(first, index)
    bars = _bars(tokens, T0 + 60, oi=np.array([1200, 900, 1000]), close=np.array([110.0, 90.0, 100.0]),
                 forward=22050.0, delta=np.array([0.25, -0.25, 0.2]), iv=np.array([0.16, 0.19, 0.15]))
    bars["gamma"] = [0.0004, 0.0005, 0.0003]
    strike, chain = rollup.update(bars, index)
    row = _by_strike(strike)[22000.0]
    t = (index.expiry_ts[index.positions(np.array([tokens[0]]))[0]] - (T0 + 60)) / (365 * 86400)

    def gamma(k: float, iv: float, is_call: bool) -> float:  # at the bucket's forward, from the option's IV
        return float(greeks.black76_greeks(22050.0, k, t, 0.0, iv, is_call).gamma)

    # the bars' own gammas (0.0004, 0.0005) are of their closes: GEX re-evaluates them at the bucket's forward
    assert row["call_gex"] == pytest.approx(1200 * gamma(22000.0, 0.16, True) * 22050.0**2 * 0.01, rel=1e-12)
    assert row["put_gex"] == pytest.approx(-900 * gamma(22000.0, 0.19, False) * 22050.0**2 * 0.01, rel=1e-12)
    assert (row["call_buildup"], row["put_buildup"]) == (b"long_buildup", b"long_unwinding")
    other = _by_strike(strike)[22100.0]
    assert other["call_buildup"] == b"" and np.isnan(other["put_gex"])  # price down, OI flat: no label
    assert chain["gex"][0] == pytest.approx(row["call_gex"] + row["put_gex"] + other["call_gex"])
    assert chain["rr25"][0] == pytest.approx(0.16 - 0.19)
    assert chain["atm_iv"][0] == pytest.approx(0.17)  # 0.19 at 22000 (put) to 0.15 at 22100 (call), at 22050
    assert chain["bf25"][0] == pytest.approx((0.16 + 0.19) / 2 - 0.17)
    first_rows = row_dicts(OIRollup("NIFTY", 60).update(first, index)[0])
    assert first_rows[0]["call_buildup"] is None  # no previous bar: no label


def _gex_chain(traded_strikes: set[float], forward: float, strikes=(21800.0, 21900.0, 22000.0, 22100.0, 22200.0)):  # noqa: ANN202
    """Every option of a 5-strike chain traded at T0 (forward 22000) with set OI and IVs; at T0+60 only the
    options at ``traded_strikes`` trade again, at ``forward``. Returns (index, chain row of T0+60)."""
    index = _index(strikes=strikes, expiries=("2030-06-27",))
    rollup = OIRollup("NIFTY", 60)
    tokens = [_token(k, typ) for k in strikes for typ in ("CE", "PE")]
    oi = np.array([(9e5 if k >= 22000 else 2e5) if typ == "CE" else (9e5 if k <= 22000 else 2e5)
                   for k in strikes for typ in ("CE", "PE")], dtype=np.int64)
    iv = np.array([0.14 + abs(k - 22000) / 1e5 for k in strikes for _ in ("CE", "PE")])
    rollup.update(_bars(tokens, T0, oi=oi, iv=iv, forward=22000.0), index)
    again = np.array([i for i, k in enumerate(k for k in strikes for _ in ("CE", "PE")) if k in traded_strikes])
    _, chain = rollup.update(_bars(np.array(tokens)[again], T0 + 60, oi=oi[again], iv=iv[again], forward=forward),
                             index)
    return chain[chain["bucket"] == T0 + 60][0]


def test_gex_and_its_flip_are_one_function_over_every_listed_strike_whatever_traded() -> None:
    everything = _gex_chain({21800.0, 21900.0, 22000.0, 22100.0, 22200.0}, 22000.0)
    near_only = _gex_chain({22000.0}, 22000.0)
    low_only = _gex_chain({21800.0, 21900.0, 22000.0}, 22000.0)
    # the same OI and IVs: the same total and the same flip, whichever options traded in the bucket
    for other in (near_only, low_only):
        assert other["gex"] == pytest.approx(everything["gex"], rel=1e-12)
        assert other["gex_flip"] == pytest.approx(everything["gex_flip"], rel=1e-12)
    assert 21800.0 < everything["gex_flip"] < 22200.0


def test_gex_flip_is_a_root_of_the_function_whose_value_at_the_forward_is_gex() -> None:
    from pipeline.core.chain_analytics import gex_total

    strikes = np.array([21800.0, 21900.0, 22000.0, 22100.0, 22200.0])
    moved = _gex_chain({22000.0}, 22300.0)  # the forward moved 300 points; only the money traded
    t = (_index(strikes=tuple(strikes), expiries=("2030-06-27",)).expiry_ts.max() - (T0 + 60)) / (365 * 86400)
    call_oi = np.where(strikes >= 22000, 9e5, 2e5)
    put_oi = np.where(strikes <= 22000, 9e5, 2e5)
    iv = 0.14 + np.abs(strikes - 22000) / 1e5
    assert moved["gex"] == pytest.approx(gex_total(22300.0, strikes, t, call_oi, put_oi, iv, iv), rel=1e-12)
    # plainly: the total at each strike, the sign change, the interpolated root
    totals = [gex_total(float(k), strikes, t, call_oi, put_oi, iv, iv) for k in strikes]
    i = next(j for j in range(len(strikes) - 1) if totals[j] * totals[j + 1] < 0)
    assert moved["gex_flip"] == pytest.approx(strikes[i] + totals[i] / (totals[i] - totals[i + 1]) * 100.0, rel=1e-9)


def test_gex_is_null_not_zero_when_no_forward_is_known() -> None:
    index = _index(expiries=("2030-06-27",))
    tokens = [_token(22000.0, "CE"), _token(22000.0, "PE")]
    _, chain = OIRollup("NIFTY", 60).update(_bars(tokens, T0, oi=1000, forward=np.nan), index)
    assert np.isnan(chain["gex"][0]) and np.isnan(chain["gex_flip"][0]) and np.isnan(chain["rr25"][0])
    assert row_dicts(chain)[0]["gex"] is None  # NULL in the table and on Redis
