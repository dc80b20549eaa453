-- requires: timescaledb
-- strikeflow 0002: TimescaleDB hypertables, compression and retention policies.
-- Applied only when the timescaledb extension is available (sinks.migrate creates
-- it first); skipped and NOT recorded otherwise, so it applies on a later
-- migrate once the extension is installed. {timescaledb} is the schema the
-- extension lives in, {schema} the target schema (both quoted identifiers).
--
-- Policies (change them with alter_job / remove_*_policy + add_*_policy):
--   ticks                     chunk 1 day,   compress after 1 day,   drop after 30 days
--   bars_1m, strike/chain 1m  chunk 7 days,  compress after 7 days,  drop after 2 years
--   bars_5m/15m, strike/chain chunk 30 days, compress after 30 days, no retention

SELECT {timescaledb}.create_hypertable('{schema}.ticks', 'recv_ts',
    chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.ticks SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_token', timescaledb.compress_orderby = 'recv_ts DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.ticks', INTERVAL '1 day', if_not_exists => TRUE);
SELECT {timescaledb}.add_retention_policy('{schema}.ticks', INTERVAL '30 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.bars_1m', 'bucket',
    chunk_time_interval => INTERVAL '7 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.bars_1m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_token', timescaledb.compress_orderby = 'bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.bars_1m', INTERVAL '7 days', if_not_exists => TRUE);
SELECT {timescaledb}.add_retention_policy('{schema}.bars_1m', INTERVAL '730 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.bars_5m', 'bucket',
    chunk_time_interval => INTERVAL '30 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.bars_5m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_token', timescaledb.compress_orderby = 'bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.bars_5m', INTERVAL '30 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.bars_15m', 'bucket',
    chunk_time_interval => INTERVAL '30 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.bars_15m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'instrument_token', timescaledb.compress_orderby = 'bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.bars_15m', INTERVAL '30 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.strike_bars_1m', 'bucket',
    chunk_time_interval => INTERVAL '7 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.strike_bars_1m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'underlying, expiry', timescaledb.compress_orderby = 'strike, bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.strike_bars_1m', INTERVAL '7 days', if_not_exists => TRUE);
SELECT {timescaledb}.add_retention_policy('{schema}.strike_bars_1m', INTERVAL '730 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.strike_bars_5m', 'bucket',
    chunk_time_interval => INTERVAL '30 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.strike_bars_5m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'underlying, expiry', timescaledb.compress_orderby = 'strike, bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.strike_bars_5m', INTERVAL '30 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.strike_bars_15m', 'bucket',
    chunk_time_interval => INTERVAL '30 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.strike_bars_15m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'underlying, expiry', timescaledb.compress_orderby = 'strike, bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.strike_bars_15m', INTERVAL '30 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.chain_bars_1m', 'bucket',
    chunk_time_interval => INTERVAL '7 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.chain_bars_1m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'underlying, expiry', timescaledb.compress_orderby = 'bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.chain_bars_1m', INTERVAL '7 days', if_not_exists => TRUE);
SELECT {timescaledb}.add_retention_policy('{schema}.chain_bars_1m', INTERVAL '730 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.chain_bars_5m', 'bucket',
    chunk_time_interval => INTERVAL '30 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.chain_bars_5m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'underlying, expiry', timescaledb.compress_orderby = 'bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.chain_bars_5m', INTERVAL '30 days', if_not_exists => TRUE);

SELECT {timescaledb}.create_hypertable('{schema}.chain_bars_15m', 'bucket',
    chunk_time_interval => INTERVAL '30 days', if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE {schema}.chain_bars_15m SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'underlying, expiry', timescaledb.compress_orderby = 'bucket DESC');
SELECT {timescaledb}.add_compression_policy('{schema}.chain_bars_15m', INTERVAL '30 days', if_not_exists => TRUE);
-- rollback
-- TimescaleDB cannot turn a hypertable back into a plain table in place: the rollback removes the
-- policies and the compression (decompressing every chunk first); the tables stay hypertables until
-- 0001's rollback drops them.
DO $$
DECLARE
    t text;
    c regclass;
BEGIN
    FOREACH t IN ARRAY ARRAY['ticks', 'bars_1m', 'bars_5m', 'bars_15m', 'strike_bars_1m', 'strike_bars_5m',
                             'strike_bars_15m', 'chain_bars_1m', 'chain_bars_5m', 'chain_bars_15m'] LOOP
        PERFORM {timescaledb}.remove_retention_policy(('{schema}.' || t)::regclass, if_exists => TRUE);
        PERFORM {timescaledb}.remove_compression_policy(('{schema}.' || t)::regclass, if_exists => TRUE);
        FOR c IN SELECT {timescaledb}.show_chunks(('{schema}.' || t)::regclass) LOOP
            PERFORM {timescaledb}.decompress_chunk(c, if_compressed => TRUE);
        END LOOP;
        EXECUTE format('ALTER TABLE {schema}.%I SET (timescaledb.compress = false)', t);
    END LOOP;
END
$$;
