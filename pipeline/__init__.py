"""strikeflow: real-time options analytics for NSE F&O (Kite feed -> Kafka -> Faust -> TimescaleDB/Redis)."""

__version__ = "0.1.0"
