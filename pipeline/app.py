"""Entry point for ``faust -A pipeline.app worker`` (docs/design.md's contract): the app is ``agents.app``'s.

Part of the commands layer: it only wires settings from the environment to
``agents.app.create_app``. ``strikeflow worker`` is the usual way in.
"""

from __future__ import annotations

import faust

from agents.app import create_app
from pipeline.runtime.settings import load_settings


def __getattr__(name: str) -> faust.App:
    # Built on first access, so importing this module needs no environment.
    if name == "app":
        app = create_app(load_settings())
        globals()["app"] = app
        return app
    raise AttributeError(name)
