"""Logging: loguru, human-readable on a terminal, one JSON object per line when configured.

Faust, aiokafka and other stdlib-logging libraries are routed into loguru so
every line has one format. Nothing here ever prints settings with secrets:
callers log ``Settings.describe()``.
"""

from __future__ import annotations

import logging
import sys

from loguru import logger


class _InterceptHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str = "INFO", json: bool = False, process: str = "strikeflow") -> None:
    """Send all logs to stderr in one format; ``json`` for log shippers."""
    logger.remove()
    if json:
        logger.add(sys.stderr, level=level, serialize=True)
    else:
        logger.add(
            sys.stderr,
            level=level,
            colorize=sys.stderr.isatty(),
            format=f"<green>{{time:HH:mm:ss.SSS}}</green> <level>{{level: <7}}</level> {process} | {{message}}",
        )
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
