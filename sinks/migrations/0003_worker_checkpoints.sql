-- The process agent's checkpoints: per ticks partition, the working state of its underlyings
-- (open bars, volume baselines, retained ticks, rollup carry-forward, price book) and the offset
-- of the first record the state does not reflect. One row per partition, replaced at every
-- checkpoint; a worker that takes the partition over restores it and replays from next_offset.
CREATE TABLE IF NOT EXISTS {schema}.worker_checkpoints (
    app_id      text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    format      integer     NOT NULL,
    state       bytea       NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, topic, partition)
);
-- Stored uncompressed: the state is mostly numpy arrays that pglz barely shrinks, and compressing
-- megabytes at every checkpoint costs seconds.
ALTER TABLE {schema}.worker_checkpoints ALTER COLUMN state SET STORAGE EXTERNAL;
-- rollback
DROP TABLE IF EXISTS {schema}.worker_checkpoints;
