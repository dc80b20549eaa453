-- strikeflow 0009: where a bar came from (`strikeflow backfill`):
--   source  (bars_1m/5m/15m) 'live': built by the worker from the feed's ticks;
--           'historical': filled into a gap from Kite's historical minute candles (OHLC, volume and OI
--           of the candle, IV and Greeks of the close against the same minute's forward, tick_count 0).
-- A backfill only inserts where no bar exists; a live bar arriving later replaces a historical one.
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT ''live''',
                       'bars_' || tf);
    END LOOP;
END
$$;
-- rollback
DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1m', '5m', '15m'] LOOP
        EXECUTE format('ALTER TABLE {schema}.%I DROP COLUMN IF EXISTS source', 'bars_' || tf);
    END LOOP;
END
$$;
