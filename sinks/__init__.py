"""Sinks: everything that talks to PostgreSQL/TimescaleDB or Redis, writers and readers.

- ``sinks.migrate.migrate(dsn, schema)`` creates/upgrades the schema (ordered SQL
  files in ``sinks/migrations``, applied once each under an advisory lock).
- ``sinks.timescale_writer.TimescaleWriter`` bulk-upserts bars, ticks, rollups and
  instruments (COPY into a staging table, then one INSERT .. ON CONFLICT).
- ``sinks.instrument_store`` writes and reads the ``instruments`` table,
  ``sinks.bar_history`` reads stored bars back (rollup seeds), ``sinks.demo_queries``
  holds the demo's counts, its bars-vs-ticks check and schema housekeeping.
- ``sinks.redis`` publishes live ticks, closed bars and chain updates as JSON on
  Redis pub/sub (``RedisPublisher``, and ``ConflatingPublisher`` in front of it).

Importing ``sinks`` itself needs neither asyncpg nor redis.
"""
