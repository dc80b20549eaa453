-- strikeflow 0007: gamma exposure, OI build-up and 25-delta skew of the rollups (DESIGN.md "Definitions";
-- pipeline/core/chain_analytics.py).
--   strike_bars_*: call_gex, put_gex       +/- OI x gamma x F^2 x 0.01 (rupees of delta per 1 % move)
--                  call_buildup, put_buildup  'long_buildup' | 'short_buildup' | 'short_covering' |
--                                             'long_unwinding' against the option's previous bar, or NULL
--   chain_bars_*:  gex, gex_flip            total GEX; the forward level where it changes sign (NULL: none)
--                  rr25, bf25               25-delta risk reversal and butterfly (IVs interpolated in delta)
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I
            ADD COLUMN IF NOT EXISTS call_gex double precision, ADD COLUMN IF NOT EXISTS put_gex double precision,
            ADD COLUMN IF NOT EXISTS call_buildup text, ADD COLUMN IF NOT EXISTS put_buildup text', 'strike_bars_' || tf);
        EXECUTE format('ALTER TABLE {schema}.%I
            ADD COLUMN IF NOT EXISTS rr25 double precision, ADD COLUMN IF NOT EXISTS bf25 double precision,
            ADD COLUMN IF NOT EXISTS gex double precision, ADD COLUMN IF NOT EXISTS gex_flip double precision',
            'chain_bars_' || tf);
    END LOOP;
END
$$;
-- rollback
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I DROP COLUMN IF EXISTS call_gex, DROP COLUMN IF EXISTS put_gex,
            DROP COLUMN IF EXISTS call_buildup, DROP COLUMN IF EXISTS put_buildup', 'strike_bars_' || tf);
        EXECUTE format('ALTER TABLE {schema}.%I DROP COLUMN IF EXISTS rr25, DROP COLUMN IF EXISTS bf25,
            DROP COLUMN IF EXISTS gex, DROP COLUMN IF EXISTS gex_flip', 'chain_bars_' || tf);
    END LOOP;
END
$$;
