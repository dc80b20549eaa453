"""The ``strikeflow`` command and one module per subcommand; the only layer that wires the others together."""
