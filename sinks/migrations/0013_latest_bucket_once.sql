-- strikeflow 0013: the "as of a time" analyst functions find the latest bucket once, then read that bucket by
-- index (docs/design.md, "Database"). Before, the latest bucket was an aggregate joined to the rows, and on a
-- table without statistics (right after a bulk load: a replay, a backfill, every new TimescaleDB chunk) the
-- planner could recompute it once per row: 34.6 s for one call over a day of one expiry, 31 ms after ANALYZE.
-- Now the plan is two index probes whatever the statistics: the newest bucket at or before "at"
-- (ORDER BY bucket DESC LIMIT 1 on (underlying, expiry, bucket)), then that bucket's rows.
-- moneyness_series (38 s for a gamma series on a fresh table) reads each cell's rows by an explicit
-- per-cell lookup (LATERAL ... LIMIT 1 on the primary key), which no plan turns into a scan per cell.
CREATE OR REPLACE FUNCTION {schema}.strike_distribution(underlying text, expiry date, at timestamptz,
                                                         timeframe text DEFAULT '1m')
RETURNS TABLE (strike double precision, call_oi bigint, put_oi bigint, call_oi_change bigint,
               put_oi_change bigint, call_iv double precision, put_iv double precision,
               call_delta double precision, put_delta double precision, bucket timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    tbl text := {schema}._timeframe_table('strike_bars', timeframe);
    newest timestamptz;
BEGIN
    EXECUTE format('SELECT s.bucket FROM %s s WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket <= $3
                    ORDER BY s.bucket DESC LIMIT 1', tbl)
        INTO newest USING underlying, expiry, at;
    IF newest IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT s.strike, s.call_oi, s.put_oi, s.call_oi_change, s.put_oi_change, s.call_iv, s.put_iv,
                s.call_delta, s.put_delta, s.bucket
         FROM %s s WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket = $3
         ORDER BY s.strike', tbl)
    USING underlying, expiry, newest;
END
$fn$;

CREATE OR REPLACE FUNCTION {schema}.gex_by_strike(underlying text, expiry date, at timestamptz,
                                                   timeframe text DEFAULT '1m')
RETURNS TABLE (strike double precision, call_gex double precision, put_gex double precision,
               gex double precision, forward double precision, bucket timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    tbl text := {schema}._timeframe_table('strike_bars', timeframe);
    newest timestamptz;
BEGIN
    EXECUTE format('SELECT s.bucket FROM %s s WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket <= $3
                    ORDER BY s.bucket DESC LIMIT 1', tbl)
        INTO newest USING underlying, expiry, at;
    IF newest IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT s.strike, s.call_gex, s.put_gex,
                CASE WHEN s.call_gex IS NULL AND s.put_gex IS NULL THEN NULL
                     ELSE coalesce(s.call_gex, 0) + coalesce(s.put_gex, 0) END,
                s.forward, s.bucket
         FROM %s s WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket = $3
         ORDER BY s.strike', tbl)
    USING underlying, expiry, newest;
END
$fn$;

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
         SELECT x.bucket, x.off, x.strike, cb.v, pb.v
         FROM cells x LEFT JOIN toks t ON t.strike = x.strike
         LEFT JOIN LATERAL (SELECT b.%1$I AS v FROM %2$s b
                            WHERE b.instrument_token = t.ce AND b.bucket = x.bucket LIMIT 1) cb ON true
         LEFT JOIN LATERAL (SELECT b.%1$I AS v FROM %2$s b
                            WHERE b.instrument_token = t.pe AND b.bucket = x.bucket LIMIT 1) pb ON true
         ORDER BY 1, 2', metric, bars_tbl)
        USING underlying, expiry, from_ts, to_ts, strikes;
    ELSE
        RETURN QUERY EXECUTE cells || format('
         SELECT x.bucket, x.off, x.strike, s.c, s.p
         FROM cells x LEFT JOIN LATERAL (
             SELECT r.%2$I::double precision AS c, r.%3$I::double precision AS p FROM %1$s r
             WHERE r.underlying = $1 AND r.expiry = $2 AND r.strike = x.strike AND r.bucket = x.bucket LIMIT 1) s ON true
         ORDER BY 1, 2', strike_tbl, 'call_' || metric, 'put_' || metric)
        USING underlying, expiry, from_ts, to_ts, strikes;
    END IF;
END
$fn$;
-- rollback
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
