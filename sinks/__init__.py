"""Sinks: idempotent bulk writes to PostgreSQL/TimescaleDB and live publishing to Redis.

- ``sinks.migrate.migrate(dsn, schema)`` creates/upgrades the schema (ordered SQL
  files in ``sinks/migrations``, applied once each under an advisory lock).
- ``sinks.timescale_writer.TimescaleWriter`` bulk-upserts bars, ticks and
  instruments (COPY into a staging table, then one INSERT .. ON CONFLICT).
- ``sinks.redis.publisher.RedisPublisher`` / ``ConflatingPublisher`` publish
  live ticks, closed bars and chain updates as JSON on Redis pub/sub.

Submodules are imported lazily by the callers (``from sinks.migrate import
migrate``), so importing ``sinks`` itself needs neither asyncpg nor redis.
"""
