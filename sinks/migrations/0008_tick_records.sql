-- strikeflow 0008: the record each stored tick came in, so `strikeflow replay` feeds the worker's code the
-- very records the live worker processed (DESIGN.md "Pricing model": a record's ticks are priced against the
-- book after the whole record, so the Greeks depend on where records begin and end):
--   record_recv_ts  (ticks) receive time of the first tick of the Kafka record that carried the tick;
--                   NULL for rows stored before this version (a replay then makes one record per
--                   underlying and receive millisecond)
ALTER TABLE {schema}.ticks ADD COLUMN IF NOT EXISTS record_recv_ts timestamptz;
-- rollback
ALTER TABLE {schema}.ticks DROP COLUMN IF EXISTS record_recv_ts;
