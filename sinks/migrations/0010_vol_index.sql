-- strikeflow 0010: the live 30-day volatility index per underlying (DESIGN.md "Definitions";
-- pipeline/core/vol_index_live.py): the Cboe VIX method NSE's India VIX follows, from the near and next
-- expiries' fresh two-sided quotes at each bar close (near rolled over within STRIKEFLOW_VIX_ROLL_DAYS).
--   vix                                  index in volatility points (30 calendar days)
--   near_expiry, next_expiry             the two expiries used
--   near_variance, next_variance         their model-free variances (annualised)
--   forward_near, forward_next           their put-call-parity forwards (rupees)
--   strikes_used_near, strikes_used_next strikes that entered each variance
--   last_recv_ts                         version (newest wins, as on every rollup row)
-- Small tables (one row per underlying and bucket): plain tables, no hypertables.
CREATE TABLE IF NOT EXISTS {schema}.vol_index_1m (
    underlying        text NOT NULL,
    bucket            timestamptz NOT NULL,
    vix               double precision,
    near_expiry       date,
    next_expiry       date,
    near_variance     double precision,
    next_variance     double precision,
    forward_near      double precision,
    forward_next      double precision,
    strikes_used_near bigint,
    strikes_used_next bigint,
    last_recv_ts      timestamptz NOT NULL,
    PRIMARY KEY (underlying, bucket)
);
CREATE TABLE IF NOT EXISTS {schema}.vol_index_5m (LIKE {schema}.vol_index_1m INCLUDING ALL);
CREATE TABLE IF NOT EXISTS {schema}.vol_index_15m (LIKE {schema}.vol_index_1m INCLUDING ALL);
-- rollback
DROP TABLE IF EXISTS {schema}.vol_index_15m;
DROP TABLE IF EXISTS {schema}.vol_index_5m;
DROP TABLE IF EXISTS {schema}.vol_index_1m;
