"""The analysts' SQL functions (migration 0006) against the real PostgreSQL, checked against the base tables
with a plain recomputation here (group, sort, take the last)."""

from __future__ import annotations

import datetime as dt

import asyncpg
import numpy as np
import pytest

from pipeline.records.rollups import CHAIN_BAR_DTYPE, STRIKE_BAR_DTYPE, rows_of
from sinks.timescale_writer import TimescaleWriter

pytestmark = pytest.mark.integration

UTC = dt.timezone.utc
EXPIRY = dt.date(2030, 1, 31)
STRIKES = [21000.0 + 50 * i for i in range(41)]
T0 = dt.datetime(2030, 1, 10, 3, 45, tzinfo=UTC)  # 09:15 IST
BUCKETS = [T0 + dt.timedelta(minutes=i) for i in range(60)]
SIDE = ("close", "volume", "oi", "oi_change", "iv", "delta")


def _token(strike: float, typ: str) -> int:
    return 100_000 + int(strike) // 50 * 2 + (typ == "PE")


def _data(seed: int = 3) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """Instruments, option bars (gamma), strike rows and chain rows for one underlying and expiry."""
    rng = np.random.default_rng(seed)
    instruments = [{"instrument_token": _token(k, t), "tradingsymbol": f"NIFTY30JAN{k:.0f}{t}", "name": "NIFTY",
                    "expiry": EXPIRY, "strike": k, "instrument_type": t, "segment": "NFO-OPT", "exchange": "NFO"}
                   for k in STRIKES for t in ("CE", "PE")]
    strike_rows, chain_rows, bars = [], [], []
    forward = 22000.0
    for bucket in BUCKETS:
        forward += rng.normal(0, 15)
        recv = int(bucket.timestamp() * 1e6) + 59_000_000
        for k in STRIKES:
            row = {"underlying": "NIFTY", "expiry": EXPIRY, "strike": k, "bucket": bucket, "forward": forward,
                   "last_recv_ts": recv}
            for side in ("call", "put"):
                row.update({f"{side}_close": float(rng.uniform(1, 900)), f"{side}_volume": int(rng.integers(0, 5000)),
                            f"{side}_oi": int(rng.integers(0, 10**6)), f"{side}_oi_change": int(rng.integers(-999, 999)),
                            f"{side}_iv": float(rng.uniform(0.1, 0.3)), f"{side}_delta": float(rng.uniform(-1, 1))})
            strike_rows.append(row)
            for typ in ("CE", "PE"):
                if rng.random() < 0.7:  # an option that ticked in the bucket has a bar
                    bars.append((_token(k, typ), bucket, float(rng.uniform(0, 0.01)), recv))
        atm = min(STRIKES, key=lambda k: abs(k - forward))
        chain_rows.append({"underlying": "NIFTY", "expiry": EXPIRY, "bucket": bucket, "forward": forward,
                           "atm_strike": atm, "pcr": float(rng.uniform(0.5, 1.5)), "max_pain": atm - 100,
                           "total_call_oi": int(rng.integers(1, 10**8)), "total_put_oi": int(rng.integers(1, 10**8)),
                           "strikes_listed": len(STRIKES), "strikes_covered": len(STRIKES) - 1, "last_recv_ts": recv})
    return instruments, bars, strike_rows, chain_rows


@pytest.fixture
async def loaded(pool: asyncpg.Pool, pg_schema: str):  # noqa: ANN201
    instruments, bars, strike_rows, chain_rows = _data()
    writer = TimescaleWriter(pool, pg_schema)
    await writer.write_instruments(instruments)
    await writer.write_strike_bars(60, rows_of(STRIKE_BAR_DTYPE, 60, strike_rows))
    await writer.write_chain_bars(60, rows_of(CHAIN_BAR_DTYPE, 60, chain_rows))
    async with pool.acquire() as conn:
        await conn.executemany(f'INSERT INTO "{pg_schema}".bars_1m (instrument_token, bucket, close, volume, oi, '
                               "oi_open, oi_high, oi_low, tick_count, gamma, last_recv_ts) "
                               "VALUES ($1, $2, 1, 0, 0, 0, 0, 0, 1, $3, to_timestamp($4 / 1e6))", bars)
    return pool, pg_schema, strike_rows, chain_rows, bars


async def test_strike_distribution_is_every_strike_of_the_last_bucket_at_or_before(loaded) -> None:
    pool, schema, strike_rows, _, _ = loaded
    at = BUCKETS[30] + dt.timedelta(seconds=42)  # inside bucket 30: its row is the last one at or before
    got = await pool.fetch(f'SELECT * FROM "{schema}".strike_distribution($1, $2, $3)', "NIFTY", EXPIRY, at)
    want = sorted((r for r in strike_rows if r["bucket"] == BUCKETS[30]), key=lambda r: r["strike"])
    assert len(got) == len(STRIKES) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["strike"] == w["strike"] and g["bucket"] == BUCKETS[30]
        for name in ("call_oi", "put_oi", "call_oi_change", "put_oi_change", "call_iv", "put_iv", "call_delta",
                     "put_delta"):
            assert g[name] == pytest.approx(w[name]), name
    before = await pool.fetch(f'SELECT * FROM "{schema}".strike_distribution($1, $2, $3)', "NIFTY", EXPIRY,
                              T0 - dt.timedelta(minutes=1))
    assert before == []  # nothing at or before: no rows (a valid answer, not an error)


@pytest.mark.parametrize("metric", ["iv", "delta", "oi", "oi_change", "close", "volume"])
async def test_moneyness_series_offsets_count_strikes_from_each_buckets_atm(loaded, metric: str) -> None:
    pool, schema, strike_rows, chain_rows, _ = loaded
    got = await pool.fetch(f'SELECT * FROM "{schema}".moneyness_series($1, $2, $3, $4, $5, $6, $7)',
                           "NIFTY", EXPIRY, metric, BUCKETS[5], BUCKETS[24], "1m", 3)
    want = []
    for chain in chain_rows:
        if not BUCKETS[5] <= chain["bucket"] <= BUCKETS[24]:
            continue
        rows = sorted((r for r in strike_rows if r["bucket"] == chain["bucket"]), key=lambda r: r["strike"])
        atm = [r["strike"] for r in rows].index(chain["atm_strike"])
        for i in range(max(atm - 3, 0), min(atm + 4, len(rows))):
            want.append((chain["bucket"], i - atm, rows[i]["strike"], rows[i][f"call_{metric}"], rows[i][f"put_{metric}"]))
    assert len(got) == len(want) == 20 * 7
    for g, w in zip(got, want, strict=True):
        assert (g["bucket"], g["offset"], g["strike"]) == w[:3]
        assert (g["call_value"], g["put_value"]) == pytest.approx(w[3:])


async def test_moneyness_series_of_gamma_takes_each_options_bar_of_the_bucket(loaded) -> None:
    pool, schema, _, chain_rows, bars = loaded
    got = await pool.fetch(f'SELECT * FROM "{schema}".moneyness_series($1, $2, $3, $4, $5)',
                           "NIFTY", EXPIRY, "gamma", BUCKETS[10], BUCKETS[10])
    gamma = {(token, bucket): g for token, bucket, g, _ in bars}
    assert len(got) == 11
    atm = next(c["atm_strike"] for c in chain_rows if c["bucket"] == BUCKETS[10])
    for g in got:
        assert g["strike"] == atm + 50 * g["offset"]
        assert g["call_value"] == pytest.approx(gamma.get((_token(g["strike"], "CE"), BUCKETS[10])))
        assert g["put_value"] == pytest.approx(gamma.get((_token(g["strike"], "PE"), BUCKETS[10])))


async def test_pcr_and_max_pain_series_are_the_chain_rows_in_order(loaded) -> None:
    pool, schema, _, chain_rows, _ = loaded
    pcr = await pool.fetch(f'SELECT * FROM "{schema}".pcr_series($1, $2, $3, $4)', "NIFTY", EXPIRY, BUCKETS[0], BUCKETS[-1])
    pain = await pool.fetch(f'SELECT * FROM "{schema}".max_pain_series($1, $2, $3, $4, $5)', "NIFTY", EXPIRY,
                            BUCKETS[0], BUCKETS[-1], "1m")
    assert [(r["bucket"], r["pcr"], r["strikes_covered"]) for r in pcr] == [
        (c["bucket"], pytest.approx(c["pcr"]), c["strikes_covered"]) for c in chain_rows]
    assert [(r["bucket"], r["max_pain"], r["atm_strike"]) for r in pain] == [
        (c["bucket"], c["max_pain"], c["atm_strike"]) for c in chain_rows]


@pytest.mark.parametrize(("call", "message"), [
    ("strike_distribution('NIFTY', '2030-01-31', now(), '2m')", "unknown timeframe '2m': use one of 1m, 5m, 15m"),
    ("pcr_series('NIFTY', '2030-01-31', now(), now(), NULL)", "unknown timeframe NULL: use one of 1m, 5m, 15m"),
    ("moneyness_series('NIFTY', '2030-01-31', 'skew', now(), now())",
     "unknown metric 'skew': use one of iv, delta, gamma, theta, vega, oi, oi_change, close, volume"),
    ("moneyness_series('NIFTY', '2030-01-31', 'iv', now(), now(), '1m', -1)", "strikes must be >= 0, got -1"),
])
async def test_bad_arguments_raise_an_error_naming_the_allowed_values(pool, pg_schema, call: str, message: str) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidParameterValueError, match=message.replace("(", r"\(")):
            await conn.fetch(f'SELECT * FROM "{pg_schema}".{call}')


@pytest.mark.parametrize(("call", "error", "message"), [
    ("strike_distribution('NIFTY', NULL, now())", asyncpg.NullValueNotAllowedError,
     "strike_distribution: expiry must not be NULL"),
    ("gex_by_strike(NULL, '2030-01-31', now())", asyncpg.NullValueNotAllowedError,
     "gex_by_strike: underlying must not be NULL"),
    ("vol_index_series('NIFTY', now(), NULL)", asyncpg.NullValueNotAllowedError,
     "vol_index_series: to_ts must not be NULL"),
    ("pcr_series('NIFTY', '2030-01-31', '2030-01-02', '2030-01-01')", asyncpg.InvalidParameterValueError,
     r"pcr_series: to_ts 2030-01-01 00:00:00\+00 is before from_ts 2030-01-02 00:00:00\+00"),
    ("chain_quality_series('NIFTY', '2030-01-31', now(), now() - interval '1 hour')", asyncpg.InvalidParameterValueError,
     "chain_quality_series: to_ts .* is before from_ts"),
    ("moneyness_series('NIFTY', '2030-01-31', 'iv', now(), now(), strikes => 2147483647)",
     asyncpg.InvalidParameterValueError, "moneyness_series: strikes must be at most 100 .*got 2147483647"),
])
async def test_null_arguments_reversed_ranges_and_absurd_strikes_are_clear_errors(
        pool, pg_schema, call: str, error: type, message: str) -> None:  # noqa: ANN001
    async with pool.acquire() as conn:
        await conn.execute("SET TIME ZONE 'UTC'")
        with pytest.raises(error, match=message) as raised:
            await conn.fetch(f'SELECT * FROM "{pg_schema}".{call}')
    assert "SELECT" not in str(raised.value)  # never the internal query


async def test_the_checked_functions_still_answer_as_before(loaded) -> None:
    pool, schema, *_ = loaded
    async with pool.acquire() as conn:
        checked = await conn.fetch(f'SELECT * FROM "{schema}".pcr_series(\'NIFTY\', \'2030-01-31\', \'-infinity\', '
                                   f'\'infinity\')')
        unchecked = await conn.fetch(f'SELECT * FROM "{schema}"._unchecked_pcr_series(\'NIFTY\', \'2030-01-31\', '
                                     f'\'-infinity\', \'infinity\')')
    assert checked == unchecked and len(checked) > 0


async def test_option_chain_latest_is_each_options_newest_bar(loaded) -> None:
    pool, schema, _, _, bars = loaded
    got = {r["instrument_token"]: r for r in await pool.fetch(f'SELECT * FROM "{schema}".option_chain_latest')}
    newest: dict[int, tuple] = {}
    for token, bucket, gamma, _ in sorted(bars, key=lambda b: b[1]):
        newest[token] = (bucket, gamma)
    assert set(got) == set(newest)
    for token, (bucket, gamma) in newest.items():
        assert got[token]["bucket"] == bucket and got[token]["gamma"] == pytest.approx(gamma)
        assert got[token]["option_type"] in ("CE", "PE") and got[token]["underlying"] == "NIFTY"


@pytest.mark.parametrize(("function", "args"), [
    ("strike_distribution", "'NIFTY', $1, $2"),
    ("gex_by_strike", "'NIFTY', $1, $2"),
])
async def test_as_of_functions_read_only_the_latest_bucket_on_a_table_without_statistics(
        loaded, function: str, args: str) -> None:
    """Right after a bulk load nothing has analysed the table: the plan must still be index probes, the newest
    bucket found once and its rows read, never a scan per row (34.6 s for one call before; counted here in
    tuples read, which do not depend on the machine's speed)."""
    pool, schema, strike_rows, _, _ = loaded
    async with pool.acquire() as conn:
        analysed = await conn.fetchval("SELECT coalesce(last_analyze, last_autoanalyze) FROM pg_stat_user_tables "
                                       "WHERE schemaname = $1 AND relname = 'strike_bars_1m'", schema)
        assert analysed is None  # as freshly loaded as a replay's or a new chunk's
        async with conn.transaction():
            rows = await conn.fetch(f'SELECT * FROM "{schema}".{function}({args})', EXPIRY, BUCKETS[30])
            read = await conn.fetchval("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                                       "FROM pg_stat_xact_user_tables WHERE schemaname = $1 AND relname = 'strike_bars_1m'",
                                       schema)
    assert len(rows) == len(STRIKES) and {r["bucket"] for r in rows} == {BUCKETS[30]}
    assert read <= 2 * len(STRIKES) + 2, f"{read} tuples read for {len(STRIKES)} rows"


@pytest.mark.parametrize("metric", ["gamma", "iv"])
async def test_moneyness_series_reads_one_row_per_cell_on_a_table_without_statistics(loaded, metric: str) -> None:
    pool, schema, _, _, _ = loaded
    table = "bars_1m" if metric == "gamma" else "strike_bars_1m"
    async with pool.acquire() as conn:
        async with conn.transaction():
            rows = await conn.fetch(f'SELECT * FROM "{schema}".moneyness_series($1, $2, $3, $4, $5)', "NIFTY", EXPIRY,
                                    metric, BUCKETS[0], BUCKETS[-1])
            read = await conn.fetchval("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                                       "FROM pg_stat_xact_user_tables WHERE schemaname = $1 AND relname = $2",
                                       schema, table)
    # the strikes of the range are found once (one pass over the strike rows); each cell is then a lookup per
    # side in its own bucket (a bar by its primary key; a strike row among its bucket's rows at most): never a
    # scan of the range per cell (an iv series read 815,811 rows of a fresh strike_bars_1m for 660 cells before)
    per_cell = 2 if table == "bars_1m" else len(STRIKES)
    budget = per_cell * len(rows) + (len(STRIKES) * len(BUCKETS) if table == "strike_bars_1m" else 0) + 10
    assert rows and read <= budget, f"{read} tuples of {table} read for {len(rows)} cells"
