-- strikeflow 0004: what priced ticks and bars say about their freshness (DESIGN.md "Pricing model",
-- "Fresh", "IV"):
--   last_trade_ts   (ticks) exchange time of the instrument's last trade (Kite full mode), NULL unknown
--   mid_iv          IV of the mid of best bid and ask: two-sided, fresh, spread within the configured width
--   forward_source  'future' | 'parity' | 'carry': which rule gave the forward the option was priced on
--   stale           the option's last trade is older than the freshness age: iv reported, not used downstream
--   near_expiry     within the configured minutes before 15:30 IST on expiry day
--   spot_delta      delta with respect to the index (F = S e^{rt}): what broker screens call delta
-- Bars take them from their last tick, like the Greeks. The option_bars views gain them at the end.
ALTER TABLE {schema}.ticks ADD COLUMN IF NOT EXISTS last_trade_ts timestamptz;

DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['ticks', 'bars_1m', 'bars_5m', 'bars_15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I
            ADD COLUMN IF NOT EXISTS mid_iv         double precision,
            ADD COLUMN IF NOT EXISTS forward_source text,
            ADD COLUMN IF NOT EXISTS stale          boolean,
            ADD COLUMN IF NOT EXISTS near_expiry    boolean,
            ADD COLUMN IF NOT EXISTS spot_delta     double precision', tf);
    END LOOP;
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('CREATE OR REPLACE VIEW {schema}.%I AS
            SELECT b.bucket, b.instrument_token, i.tradingsymbol, i.name AS underlying, i.expiry, i.strike,
                   i.instrument_type AS option_type,
                   b.open, b.high, b.low, b.close, b.volume, b.oi, b.oi_open, b.oi_high, b.oi_low, b.vwap,
                   b.tick_count, b.forward, b.iv, b.delta, b.gamma, b.theta, b.vega, b.rho,
                   CASE WHEN b.forward > 0 AND i.strike > 0 THEN ln(i.strike / b.forward) END AS moneyness,
                   b.last_recv_ts,
                   b.mid_iv, b.forward_source, b.stale, b.near_expiry, b.spot_delta
            FROM {schema}.%I b
            JOIN {schema}.instruments i USING (instrument_token)
            WHERE i.instrument_type IN (''CE'', ''PE'')', 'option_bars_' || tf, 'bars_' || tf);
    END LOOP;
END
$$;
-- rollback
-- the views read the new columns: put 0001's back first
DROP VIEW IF EXISTS {schema}.option_bars_1m;
DROP VIEW IF EXISTS {schema}.option_bars_5m;
DROP VIEW IF EXISTS {schema}.option_bars_15m;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ticks', 'bars_1m', 'bars_5m', 'bars_15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I DROP COLUMN IF EXISTS mid_iv, DROP COLUMN IF EXISTS forward_source,
            DROP COLUMN IF EXISTS stale, DROP COLUMN IF EXISTS near_expiry, DROP COLUMN IF EXISTS spot_delta', t);
    END LOOP;
END
$$;
ALTER TABLE {schema}.ticks DROP COLUMN IF EXISTS last_trade_ts;
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP  -- 0001's option_bars views
        EXECUTE format('CREATE VIEW {schema}.%I AS
            SELECT b.bucket, b.instrument_token, i.tradingsymbol, i.name AS underlying, i.expiry, i.strike,
                   i.instrument_type AS option_type,
                   b.open, b.high, b.low, b.close, b.volume, b.oi, b.oi_open, b.oi_high, b.oi_low, b.vwap,
                   b.tick_count, b.forward, b.iv, b.delta, b.gamma, b.theta, b.vega, b.rho,
                   CASE WHEN b.forward > 0 AND i.strike > 0 THEN ln(i.strike / b.forward) END AS moneyness,
                   b.last_recv_ts
            FROM {schema}.%I b
            JOIN {schema}.instruments i USING (instrument_token)
            WHERE i.instrument_type IN (''CE'', ''PE'')', 'option_bars_' || tf, 'bars_' || tf);
    END LOOP;
END
$$;
