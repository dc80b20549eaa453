-- strikeflow 0011: chain-quality counts on the chain rows, and the analysts' functions over the volatility
-- analytics (DESIGN.md "Definitions"; pipeline/core/chain_quality.py, chain_analytics.py, vol_index_live.py).
--   chain_bars_*: parity_violations     strikes quoted on both sides whose synthetic forward band
--                                       [K + e^{rT}(C_bid - P_ask), K + e^{rT}(C_ask - P_bid)] excludes the forward
--                 crossed_quotes        fresh quotes with bid >= ask (crossed or locked), calls and puts
--                 butterfly_violations  call mids above the chord of their quoted neighbours (convexity)
--                 strikes_quoted        strikes with fresh two-sided uncrossed quotes on both sides
-- All four from the quotes at the close of the row's last minute; NULL when that close was not seen (a
-- row recomputed after a restart, a backfilled bucket).
-- Functions (same conventions as 0006: a timeframe '1m' | '5m' | '15m', SQLSTATE 22023 on a bad one):
--   skew_series, term_structure, gex_series, gex_by_strike, vol_index_series, chain_quality_series.
-- Examples: sinks/README.md, "Functions for analysts".
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I
            ADD COLUMN IF NOT EXISTS parity_violations bigint, ADD COLUMN IF NOT EXISTS crossed_quotes bigint,
            ADD COLUMN IF NOT EXISTS butterfly_violations bigint, ADD COLUMN IF NOT EXISTS strikes_quoted bigint',
            'chain_bars_' || tf);
    END LOOP;
END
$$;

-- 25-delta skew and ATM IV of one expiry per bucket.
CREATE OR REPLACE FUNCTION {schema}.skew_series(underlying text, expiry date, from_ts timestamptz, to_ts timestamptz,
                                                 timeframe text DEFAULT '1m')
RETURNS TABLE (bucket timestamptz, forward double precision, atm_iv double precision, rr25 double precision,
               bf25 double precision)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT c.bucket, c.forward, c.atm_iv, c.rr25, c.bf25 FROM %s c
         WHERE c.underlying = $1 AND c.expiry = $2 AND c.bucket >= $3 AND c.bucket <= $4 ORDER BY c.bucket',
        {schema}._timeframe_table('chain_bars', timeframe))
    USING underlying, expiry, from_ts, to_ts;
END
$fn$;

-- The term structure at "at": every expiry not yet expired at "at", its newest chain row at or before "at".
CREATE OR REPLACE FUNCTION {schema}.term_structure(underlying text, at timestamptz, timeframe text DEFAULT '1m')
RETURNS TABLE (expiry date, bucket timestamptz, forward double precision, atm_iv double precision,
               rr25 double precision, bf25 double precision)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    tbl text := {schema}._timeframe_table('chain_bars', timeframe);
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT e.expiry, l.bucket, l.forward, l.atm_iv, l.rr25, l.bf25
         FROM (SELECT DISTINCT c.expiry FROM %1$s c
               WHERE c.underlying = $1 AND c.expiry >= ($2 AT TIME ZONE ''Asia/Kolkata'')::date) e
         CROSS JOIN LATERAL (SELECT c.bucket, c.forward, c.atm_iv, c.rr25, c.bf25 FROM %1$s c
                             WHERE c.underlying = $1 AND c.expiry = e.expiry AND c.bucket <= $2
                             ORDER BY c.bucket DESC LIMIT 1) l
         ORDER BY e.expiry', tbl)
    USING underlying, at;
END
$fn$;

-- Total gamma exposure of one expiry per bucket and the forward level where it changes sign.
CREATE OR REPLACE FUNCTION {schema}.gex_series(underlying text, expiry date, from_ts timestamptz, to_ts timestamptz,
                                                timeframe text DEFAULT '1m')
RETURNS TABLE (bucket timestamptz, forward double precision, gex double precision, gex_flip double precision)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT c.bucket, c.forward, c.gex, c.gex_flip FROM %s c
         WHERE c.underlying = $1 AND c.expiry = $2 AND c.bucket >= $3 AND c.bucket <= $4 ORDER BY c.bucket',
        {schema}._timeframe_table('chain_bars', timeframe))
    USING underlying, expiry, from_ts, to_ts;
END
$fn$;

-- Gamma exposure by strike as of the last bucket at or before "at"; gex = call_gex + put_gex (a side with
-- no OI known counts 0; NULL when neither side is known).
CREATE OR REPLACE FUNCTION {schema}.gex_by_strike(underlying text, expiry date, at timestamptz,
                                                   timeframe text DEFAULT '1m')
RETURNS TABLE (strike double precision, call_gex double precision, put_gex double precision,
               gex double precision, forward double precision, bucket timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    tbl text := {schema}._timeframe_table('strike_bars', timeframe);
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH last AS (SELECT max(s.bucket) AS b FROM %1$s s
                       WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket <= $3)
         SELECT s.strike, s.call_gex, s.put_gex,
                CASE WHEN s.call_gex IS NULL AND s.put_gex IS NULL THEN NULL
                     ELSE coalesce(s.call_gex, 0) + coalesce(s.put_gex, 0) END,
                s.forward, s.bucket
         FROM %1$s s, last WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket = last.b
         ORDER BY s.strike', tbl)
    USING underlying, expiry, at;
END
$fn$;

-- The live 30-day volatility index per bucket.
CREATE OR REPLACE FUNCTION {schema}.vol_index_series(underlying text, from_ts timestamptz, to_ts timestamptz,
                                                      timeframe text DEFAULT '1m')
RETURNS TABLE (bucket timestamptz, vix double precision, near_expiry date, next_expiry date,
               near_variance double precision, next_variance double precision, forward_near double precision,
               forward_next double precision, strikes_used_near bigint, strikes_used_next bigint)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT v.bucket, v.vix, v.near_expiry, v.next_expiry, v.near_variance, v.next_variance, v.forward_near,
                v.forward_next, v.strikes_used_near, v.strikes_used_next FROM %s v
         WHERE v.underlying = $1 AND v.bucket >= $2 AND v.bucket <= $3 ORDER BY v.bucket',
        {schema}._timeframe_table('vol_index', timeframe))
    USING underlying, from_ts, to_ts;
END
$fn$;

-- Chain-quality counts of one expiry per bucket.
CREATE OR REPLACE FUNCTION {schema}.chain_quality_series(underlying text, expiry date, from_ts timestamptz,
                                                          to_ts timestamptz, timeframe text DEFAULT '1m')
RETURNS TABLE (bucket timestamptz, strikes_quoted bigint, parity_violations bigint, crossed_quotes bigint,
               butterfly_violations bigint)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT c.bucket, c.strikes_quoted, c.parity_violations, c.crossed_quotes, c.butterfly_violations FROM %s c
         WHERE c.underlying = $1 AND c.expiry = $2 AND c.bucket >= $3 AND c.bucket <= $4 ORDER BY c.bucket',
        {schema}._timeframe_table('chain_bars', timeframe))
    USING underlying, expiry, from_ts, to_ts;
END
$fn$;

-- rollback
DROP FUNCTION IF EXISTS {schema}.chain_quality_series(text, date, timestamptz, timestamptz, text);
DROP FUNCTION IF EXISTS {schema}.vol_index_series(text, timestamptz, timestamptz, text);
DROP FUNCTION IF EXISTS {schema}.gex_by_strike(text, date, timestamptz, text);
DROP FUNCTION IF EXISTS {schema}.gex_series(text, date, timestamptz, timestamptz, text);
DROP FUNCTION IF EXISTS {schema}.term_structure(text, timestamptz, text);
DROP FUNCTION IF EXISTS {schema}.skew_series(text, date, timestamptz, timestamptz, text);
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I DROP COLUMN IF EXISTS parity_violations,
            DROP COLUMN IF EXISTS crossed_quotes, DROP COLUMN IF EXISTS butterfly_violations,
            DROP COLUMN IF EXISTS strikes_quoted', 'chain_bars_' || tf);
    END LOOP;
END
$$;
