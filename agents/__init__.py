"""Faust agents: thin routing of records through the pure core (``pipeline.core``) to the sinks.

``agents.app.create_app`` builds the worker's Faust app; ``agents.process`` is
the live path (ticks -> priced ticks, bars, rollups), ``agents.store`` the
database writers; ``agents.resources`` holds the connections they share.
"""
