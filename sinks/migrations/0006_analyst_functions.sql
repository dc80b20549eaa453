-- strikeflow 0006: SQL functions for analysts over the bar tables, the option_chain_latest view, and the
-- indexes that make them fast. Every function takes a timeframe ('1m' | '5m' | '15m'); an unknown
-- timeframe or metric raises an error naming the allowed values (SQLSTATE 22023), never an empty result.
-- Examples: sinks/README.md, "Functions for analysts".

CREATE INDEX IF NOT EXISTS strike_bars_1m_underlying_expiry_bucket ON {schema}.strike_bars_1m (underlying, expiry, bucket);
CREATE INDEX IF NOT EXISTS strike_bars_5m_underlying_expiry_bucket ON {schema}.strike_bars_5m (underlying, expiry, bucket);
CREATE INDEX IF NOT EXISTS strike_bars_15m_underlying_expiry_bucket ON {schema}.strike_bars_15m (underlying, expiry, bucket);

-- The table of a timeframe ('strike_bars', '1m' -> the schema's strike_bars_1m), or the error.
CREATE OR REPLACE FUNCTION {schema}._timeframe_table(kind text, timeframe text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF timeframe IS NULL OR timeframe NOT IN ('1m', '5m', '15m') THEN
        RAISE EXCEPTION 'unknown timeframe %: use one of 1m, 5m, 15m', coalesce(quote_literal(timeframe), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    RETURN '{schema}.' || kind || '_' || timeframe;
END
$fn$;

-- One row per strike of the expiry as of the last bucket at or before "at".
CREATE OR REPLACE FUNCTION {schema}.strike_distribution(underlying text, expiry date, at timestamptz,
                                                         timeframe text DEFAULT '1m')
RETURNS TABLE (strike double precision, call_oi bigint, put_oi bigint, call_oi_change bigint,
               put_oi_change bigint, call_iv double precision, put_iv double precision,
               call_delta double precision, put_delta double precision, bucket timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    tbl text := {schema}._timeframe_table('strike_bars', timeframe);
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH last AS (SELECT max(s.bucket) AS b FROM %s s
                       WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket <= $3)
         SELECT s.strike, s.call_oi, s.put_oi, s.call_oi_change, s.put_oi_change, s.call_iv, s.put_iv,
                s.call_delta, s.put_delta, s.bucket
         FROM %s s, last WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket = last.b
         ORDER BY s.strike', tbl, tbl)
    USING underlying, expiry, at;
END
$fn$;

-- Per bucket, each side's metric at offsets -strikes..+strikes from that bucket's ATM strike (0 = ATM),
-- counted in the expiry's strikes that have rows in the range; a cell whose strike has no row in that
-- bucket has NULL values. gamma, theta and vega are not in the strike rollup: they come from the option's
-- own bar of the bucket (NULL when it did not tick in it). Index probes only: the strikes once, then one
-- primary-key lookup per (bucket, offset).
CREATE OR REPLACE FUNCTION {schema}.moneyness_series(underlying text, expiry date, metric text,
                                                      from_ts timestamptz, to_ts timestamptz,
                                                      timeframe text DEFAULT '1m', strikes integer DEFAULT 5)
RETURNS TABLE (bucket timestamptz, "offset" integer, strike double precision,
               call_value double precision, put_value double precision)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    strike_tbl text := {schema}._timeframe_table('strike_bars', timeframe);
    chain_tbl text := {schema}._timeframe_table('chain_bars', timeframe);
    bars_tbl text := {schema}._timeframe_table('bars', timeframe);
    cells text;
BEGIN
    IF metric IS NULL OR metric NOT IN ('iv', 'delta', 'gamma', 'theta', 'vega', 'oi', 'oi_change', 'close', 'volume') THEN
        RAISE EXCEPTION 'unknown metric %: use one of iv, delta, gamma, theta, vega, oi, oi_change, close, volume',
            coalesce(quote_literal(metric), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF strikes IS NULL OR strikes < 0 THEN
        RAISE EXCEPTION 'strikes must be >= 0, got %', coalesce(strikes::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    cells := format(
        'WITH ks AS (SELECT k.strike, row_number() OVER (ORDER BY k.strike)::int AS rn
                     FROM (SELECT DISTINCT s.strike FROM %1$s s
                           WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket >= $3 AND s.bucket <= $4) k),
              atm AS (SELECT c.bucket, ks.rn AS atm_rn FROM %2$s c JOIN ks ON ks.strike = c.atm_strike
                      WHERE c.underlying = $1 AND c.expiry = $2 AND c.bucket >= $3 AND c.bucket <= $4),
              cells AS (SELECT a.bucket, ks.rn - a.atm_rn AS off, ks.strike
                        FROM atm a JOIN ks ON ks.rn BETWEEN a.atm_rn - $5 AND a.atm_rn + $5)', strike_tbl, chain_tbl);
    IF metric IN ('gamma', 'theta', 'vega') THEN
        RETURN QUERY EXECUTE cells || format(',
              toks AS (SELECT i.strike, max(i.instrument_token) FILTER (WHERE i.instrument_type = ''CE'') AS ce,
                              max(i.instrument_token) FILTER (WHERE i.instrument_type = ''PE'') AS pe
                       FROM {schema}.instruments i WHERE i.name = $1 AND i.expiry = $2 GROUP BY i.strike)
         SELECT x.bucket, x.off, x.strike, cb.%1$I, pb.%1$I
         FROM cells x LEFT JOIN toks t ON t.strike = x.strike
         LEFT JOIN %2$s cb ON cb.instrument_token = t.ce AND cb.bucket = x.bucket
         LEFT JOIN %2$s pb ON pb.instrument_token = t.pe AND pb.bucket = x.bucket
         ORDER BY 1, 2', metric, bars_tbl)
        USING underlying, expiry, from_ts, to_ts, strikes;
    ELSE
        RETURN QUERY EXECUTE cells || format('
         SELECT x.bucket, x.off, x.strike, s.%2$I::double precision, s.%3$I::double precision
         FROM cells x LEFT JOIN %1$s s
           ON s.underlying = $1 AND s.expiry = $2 AND s.strike = x.strike AND s.bucket = x.bucket
         ORDER BY 1, 2', strike_tbl, 'call_' || metric, 'put_' || metric)
        USING underlying, expiry, from_ts, to_ts, strikes;
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION {schema}.pcr_series(underlying text, expiry date, from_ts timestamptz, to_ts timestamptz,
                                                timeframe text DEFAULT '1m')
RETURNS TABLE (bucket timestamptz, pcr double precision, total_call_oi bigint, total_put_oi bigint,
               strikes_listed bigint, strikes_covered bigint)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT c.bucket, c.pcr, c.total_call_oi, c.total_put_oi, c.strikes_listed, c.strikes_covered FROM %s c
         WHERE c.underlying = $1 AND c.expiry = $2 AND c.bucket >= $3 AND c.bucket <= $4 ORDER BY c.bucket',
        {schema}._timeframe_table('chain_bars', timeframe))
    USING underlying, expiry, from_ts, to_ts;
END
$fn$;

CREATE OR REPLACE FUNCTION {schema}.max_pain_series(underlying text, expiry date, from_ts timestamptz,
                                                     to_ts timestamptz, timeframe text DEFAULT '1m')
RETURNS TABLE (bucket timestamptz, max_pain double precision, forward double precision, atm_strike double precision)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT c.bucket, c.max_pain, c.forward, c.atm_strike FROM %s c
         WHERE c.underlying = $1 AND c.expiry = $2 AND c.bucket >= $3 AND c.bucket <= $4 ORDER BY c.bucket',
        {schema}._timeframe_table('chain_bars', timeframe))
    USING underlying, expiry, from_ts, to_ts;
END
$fn$;

-- The latest 1-minute bar of every option, with its contract and Greeks (one index probe per option on the
-- (instrument_token, bucket) primary key).
CREATE OR REPLACE VIEW {schema}.option_chain_latest AS
SELECT i.name AS underlying, i.expiry, i.strike, i.instrument_type AS option_type, i.tradingsymbol,
       i.instrument_token, b.bucket, b.close, b.volume, b.oi, b.forward, b.iv, b.mid_iv, b.delta, b.gamma,
       b.theta, b.vega, b.rho, b.forward_source, b.stale, b.near_expiry
FROM {schema}.instruments i
CROSS JOIN LATERAL (
    SELECT lb.* FROM {schema}.bars_1m lb
    WHERE lb.instrument_token = i.instrument_token
    ORDER BY lb.bucket DESC
    LIMIT 1
) b
WHERE i.instrument_type IN ('CE', 'PE');

-- rollback
DROP VIEW IF EXISTS {schema}.option_chain_latest;
DROP FUNCTION IF EXISTS {schema}.max_pain_series(text, date, timestamptz, timestamptz, text);
DROP FUNCTION IF EXISTS {schema}.pcr_series(text, date, timestamptz, timestamptz, text);
DROP FUNCTION IF EXISTS {schema}.moneyness_series(text, date, text, timestamptz, timestamptz, text, integer);
DROP FUNCTION IF EXISTS {schema}.strike_distribution(text, date, timestamptz, text);
DROP FUNCTION IF EXISTS {schema}._timeframe_table(text, text);
DROP INDEX IF EXISTS {schema}.strike_bars_1m_underlying_expiry_bucket;
DROP INDEX IF EXISTS {schema}.strike_bars_5m_underlying_expiry_bucket;
DROP INDEX IF EXISTS {schema}.strike_bars_15m_underlying_expiry_bucket;
