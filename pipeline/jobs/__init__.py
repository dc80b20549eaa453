"""Offline jobs: work over stored data with the worker's own core, started by a command, not by Kafka.

- ``replay``: rebuild a schema's bars and rollups from another schema's stored ticks;
- ``backfill``: fill gaps in the 1-minute bars from Kite's historical candles.

They sit beside the agents (neither imports the other) and use the same core (``pipeline.core``) and
sinks; ``pipeline.commands.replay`` and ``pipeline.commands.backfill`` parse arguments and run them.
"""
