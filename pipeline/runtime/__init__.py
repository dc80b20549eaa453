"""Process plumbing every layer may use: settings, logging, metrics, backoff, clocks."""
