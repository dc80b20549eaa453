"""The simulated Kite market for development and tests: the market model, the Kite-compatible server, fault
windows and capture files."""
