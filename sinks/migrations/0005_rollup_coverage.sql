-- strikeflow 0005: the rollups say what they cover and use fresh prices only (DESIGN.md "PCR", "ATM").
--   strike_bars_*: call_mid_iv, put_mid_iv   each side's mid IV at its close (null: no fresh two-sided quote)
--   chain_bars_*:  strikes_listed            strikes the instrument master lists for the expiry
--                  strikes_covered           of those, strikes whose call and put OI are both known: PCR,
--                                            max pain and the totals cover these; fewer than listed = partial
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I
            ADD COLUMN IF NOT EXISTS call_mid_iv double precision,
            ADD COLUMN IF NOT EXISTS put_mid_iv  double precision', 'strike_bars_' || tf);
        EXECUTE format('ALTER TABLE {schema}.%I
            ADD COLUMN IF NOT EXISTS strikes_listed  bigint,
            ADD COLUMN IF NOT EXISTS strikes_covered bigint', 'chain_bars_' || tf);
    END LOOP;
END
$$;
-- rollback
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I DROP COLUMN IF EXISTS call_mid_iv, DROP COLUMN IF EXISTS put_mid_iv',
                       'strike_bars_' || tf);
        EXECUTE format('ALTER TABLE {schema}.%I DROP COLUMN IF EXISTS strikes_listed,
                        DROP COLUMN IF EXISTS strikes_covered', 'chain_bars_' || tf);
    END LOOP;
END
$$;
