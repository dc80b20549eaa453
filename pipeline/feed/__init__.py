"""Kite protocol and connections: wire format, decoder/encoder, WebSocket connections, the ingestor, receive stamping,
the instruments master and universe, sharding, and the Kafka tick producer. Imports records and runtime only."""
