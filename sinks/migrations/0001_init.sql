-- strikeflow 0001: tables and analyst views (plain PostgreSQL; TimescaleDB extras are in 0002).
-- {schema} is replaced with the quoted schema identifier by sinks.migrate.

CREATE TABLE IF NOT EXISTS {schema}.instruments (
    instrument_token  bigint PRIMARY KEY,
    exchange_token    text,
    tradingsymbol     text NOT NULL,
    name              text,
    expiry            date,
    strike            double precision,
    tick_size         double precision,
    lot_size          integer,
    instrument_type   text,
    segment           text,
    exchange          text,
    last_price        double precision,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS instruments_underlying_expiry_idx
    ON {schema}.instruments (name, expiry, strike);

CREATE TABLE IF NOT EXISTS {schema}.ticks (
    exchange_ts       timestamptz NOT NULL,
    recv_ts           timestamptz NOT NULL,
    instrument_token  bigint NOT NULL,
    last_price        double precision,
    volume            bigint,
    oi                bigint,
    bid               double precision,
    ask               double precision,
    forward           double precision,
    iv                double precision,
    delta             double precision,
    gamma             double precision,
    theta             double precision,
    vega              double precision,
    rho               double precision,
    PRIMARY KEY (instrument_token, recv_ts)
);

CREATE TABLE IF NOT EXISTS {schema}.bars_1m (
    bucket            timestamptz NOT NULL,
    instrument_token  bigint NOT NULL,
    open              double precision,
    high              double precision,
    low               double precision,
    close             double precision,
    volume            bigint,
    oi                bigint,
    oi_open           bigint,
    oi_high           bigint,
    oi_low            bigint,
    vwap              double precision,
    tick_count        integer,
    forward           double precision,
    iv                double precision,
    delta             double precision,
    gamma             double precision,
    theta             double precision,
    vega              double precision,
    rho               double precision,
    last_recv_ts      timestamptz NOT NULL,
    PRIMARY KEY (instrument_token, bucket)
);
CREATE TABLE IF NOT EXISTS {schema}.bars_5m (LIKE {schema}.bars_1m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS {schema}.bars_15m (LIKE {schema}.bars_1m INCLUDING ALL);

CREATE TABLE IF NOT EXISTS {schema}.strike_bars_1m (
    underlying        text NOT NULL,
    expiry            date NOT NULL,
    strike            double precision NOT NULL,
    bucket            timestamptz NOT NULL,
    forward           double precision,
    call_close        double precision,
    call_volume       bigint,
    call_oi           bigint,
    call_oi_change    bigint,
    call_iv           double precision,
    call_delta        double precision,
    put_close         double precision,
    put_volume        bigint,
    put_oi            bigint,
    put_oi_change     bigint,
    put_iv            double precision,
    put_delta         double precision,
    last_recv_ts      timestamptz NOT NULL,
    PRIMARY KEY (underlying, expiry, strike, bucket)
);
CREATE TABLE IF NOT EXISTS {schema}.strike_bars_5m (LIKE {schema}.strike_bars_1m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS {schema}.strike_bars_15m (LIKE {schema}.strike_bars_1m INCLUDING ALL);

CREATE TABLE IF NOT EXISTS {schema}.chain_bars_1m (
    underlying        text NOT NULL,
    expiry            date NOT NULL,
    bucket            timestamptz NOT NULL,
    total_call_oi     bigint,
    total_put_oi      bigint,
    pcr               double precision,
    max_pain          double precision,
    atm_strike        double precision,
    atm_iv            double precision,
    forward           double precision,
    call_volume       bigint,
    put_volume        bigint,
    last_recv_ts      timestamptz NOT NULL,
    PRIMARY KEY (underlying, expiry, bucket)
);
CREATE TABLE IF NOT EXISTS {schema}.chain_bars_5m (LIKE {schema}.chain_bars_1m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS {schema}.chain_bars_15m (LIKE {schema}.chain_bars_1m INCLUDING ALL);

-- Analyst views --------------------------------------------------------------

-- Option bars with contract attributes and moneyness = ln(strike / forward).
CREATE OR REPLACE VIEW {schema}.option_bars_1m AS
SELECT b.bucket, b.instrument_token, i.tradingsymbol, i.name AS underlying, i.expiry, i.strike,
       i.instrument_type AS option_type,
       b.open, b.high, b.low, b.close, b.volume, b.oi, b.oi_open, b.oi_high, b.oi_low, b.vwap, b.tick_count,
       b.forward, b.iv, b.delta, b.gamma, b.theta, b.vega, b.rho,
       CASE WHEN b.forward > 0 AND i.strike > 0 THEN ln(i.strike / b.forward) END AS moneyness,
       b.last_recv_ts
FROM {schema}.bars_1m b
JOIN {schema}.instruments i USING (instrument_token)
WHERE i.instrument_type IN ('CE', 'PE');

CREATE OR REPLACE VIEW {schema}.option_bars_5m AS
SELECT b.bucket, b.instrument_token, i.tradingsymbol, i.name AS underlying, i.expiry, i.strike,
       i.instrument_type AS option_type,
       b.open, b.high, b.low, b.close, b.volume, b.oi, b.oi_open, b.oi_high, b.oi_low, b.vwap, b.tick_count,
       b.forward, b.iv, b.delta, b.gamma, b.theta, b.vega, b.rho,
       CASE WHEN b.forward > 0 AND i.strike > 0 THEN ln(i.strike / b.forward) END AS moneyness,
       b.last_recv_ts
FROM {schema}.bars_5m b
JOIN {schema}.instruments i USING (instrument_token)
WHERE i.instrument_type IN ('CE', 'PE');

CREATE OR REPLACE VIEW {schema}.option_bars_15m AS
SELECT b.bucket, b.instrument_token, i.tradingsymbol, i.name AS underlying, i.expiry, i.strike,
       i.instrument_type AS option_type,
       b.open, b.high, b.low, b.close, b.volume, b.oi, b.oi_open, b.oi_high, b.oi_low, b.vwap, b.tick_count,
       b.forward, b.iv, b.delta, b.gamma, b.theta, b.vega, b.rho,
       CASE WHEN b.forward > 0 AND i.strike > 0 THEN ln(i.strike / b.forward) END AS moneyness,
       b.last_recv_ts
FROM {schema}.bars_15m b
JOIN {schema}.instruments i USING (instrument_token)
WHERE i.instrument_type IN ('CE', 'PE');

-- Put-call ratio (and max pain, ATM IV) series per underlying and expiry.
CREATE OR REPLACE VIEW {schema}.pcr_1m AS
SELECT underlying, expiry, bucket, total_call_oi, total_put_oi, pcr, max_pain, atm_strike, atm_iv, forward
FROM {schema}.chain_bars_1m;

CREATE OR REPLACE VIEW {schema}.pcr_5m AS
SELECT underlying, expiry, bucket, total_call_oi, total_put_oi, pcr, max_pain, atm_strike, atm_iv, forward
FROM {schema}.chain_bars_5m;

CREATE OR REPLACE VIEW {schema}.pcr_15m AS
SELECT underlying, expiry, bucket, total_call_oi, total_put_oi, pcr, max_pain, atm_strike, atm_iv, forward
FROM {schema}.chain_bars_15m;

-- Latest known 1-minute bar of every option (one index probe per instrument on
-- the (instrument_token, bucket) primary key), pivoted to one row per strike.
CREATE OR REPLACE VIEW {schema}.strike_oi_distribution AS
WITH latest AS (
    SELECT i.name AS underlying, i.expiry, i.strike, i.instrument_type, b.*
    FROM {schema}.instruments i
    CROSS JOIN LATERAL (
        SELECT lb.bucket, lb.close, lb.oi, lb.oi_open, lb.volume, lb.iv, lb.delta, lb.forward
        FROM {schema}.bars_1m lb
        WHERE lb.instrument_token = i.instrument_token
        ORDER BY lb.bucket DESC
        LIMIT 1
    ) b
    WHERE i.instrument_type IN ('CE', 'PE')
)
SELECT underlying, expiry, strike,
       max(bucket) AS bucket,
       max(oi) FILTER (WHERE instrument_type = 'CE') AS call_oi,
       max(oi) FILTER (WHERE instrument_type = 'PE') AS put_oi,
       max(oi - oi_open) FILTER (WHERE instrument_type = 'CE') AS call_oi_change_in_bar,
       max(oi - oi_open) FILTER (WHERE instrument_type = 'PE') AS put_oi_change_in_bar,
       max(close) FILTER (WHERE instrument_type = 'CE') AS call_close,
       max(close) FILTER (WHERE instrument_type = 'PE') AS put_close,
       max(iv) FILTER (WHERE instrument_type = 'CE') AS call_iv,
       max(iv) FILTER (WHERE instrument_type = 'PE') AS put_iv,
       max(volume) FILTER (WHERE instrument_type = 'CE') AS call_volume,
       max(volume) FILTER (WHERE instrument_type = 'PE') AS put_volume,
       avg(forward) AS forward,
       CASE WHEN avg(forward) > 0 AND strike > 0 THEN ln(strike / avg(forward)) END AS moneyness
FROM latest
GROUP BY underlying, expiry, strike;
-- rollback
DROP VIEW IF EXISTS {schema}.strike_oi_distribution;
DROP VIEW IF EXISTS {schema}.pcr_1m;
DROP VIEW IF EXISTS {schema}.pcr_5m;
DROP VIEW IF EXISTS {schema}.pcr_15m;
DROP VIEW IF EXISTS {schema}.option_bars_1m;
DROP VIEW IF EXISTS {schema}.option_bars_5m;
DROP VIEW IF EXISTS {schema}.option_bars_15m;
-- one table per statement: TimescaleDB drops a hypertable only on its own
DROP TABLE IF EXISTS {schema}.chain_bars_1m;
DROP TABLE IF EXISTS {schema}.chain_bars_5m;
DROP TABLE IF EXISTS {schema}.chain_bars_15m;
DROP TABLE IF EXISTS {schema}.strike_bars_1m;
DROP TABLE IF EXISTS {schema}.strike_bars_5m;
DROP TABLE IF EXISTS {schema}.strike_bars_15m;
DROP TABLE IF EXISTS {schema}.bars_1m;
DROP TABLE IF EXISTS {schema}.bars_5m;
DROP TABLE IF EXISTS {schema}.bars_15m;
DROP TABLE IF EXISTS {schema}.ticks;
DROP TABLE IF EXISTS {schema}.instruments;
