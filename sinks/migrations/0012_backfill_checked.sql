-- strikeflow 0012: what `strikeflow backfill` has already asked Kite for.
--   backfill_checked  one row per instrument and requested span [since, until) whose minutes Kite has
--                     answered: a session minute in it with no bar had no trade (Kite has no candle for
--                     a minute without trades), so a later backfill does not ask for it again.
--                     Only minutes that had ended a settling margin before the request are recorded
--                     (Kite may still be writing the newest candles).
CREATE TABLE IF NOT EXISTS {schema}.backfill_checked (
    instrument_token bigint NOT NULL,
    since timestamptz NOT NULL,
    until timestamptz NOT NULL CHECK (until > since),
    checked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_token, since, until)
);
-- rollback
DROP TABLE IF EXISTS {schema}.backfill_checked;
