"""Logging: loguru, human-readable on a terminal, one JSON object per line when configured.

Faust, aiokafka and other stdlib-logging libraries are routed into loguru so every line has one format.
Every line goes through one redaction before it is written (``pipeline.runtime.redaction``: URL passwords,
secret query parameters, bearer tokens, the settings' secret values), whatever its sink or format, also
tracebacks; a message is one line (control characters escaped, length capped), so text from the feed or a
URL cannot forge a log line. Tracebacks never show variable values (loguru's ``diagnose``) unless
``STRIKEFLOW_LOG_DIAGNOSE`` asks for them while debugging.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from loguru import logger

from pipeline.runtime.redaction import escape_line, redact, register_secrets


class _InterceptHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


class RedactingSink:
    """A loguru sink that writes each formatted line (traceback included) to ``stream`` after redaction."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, message: str) -> None:
        self.stream.write(redact(str(message)))
        self.stream.flush()


def _one_line(record: dict[str, Any]) -> None:
    record["message"] = escape_line(record["message"])


def configure_logging(level: str = "INFO", json: bool = False, process: str = "strikeflow",
                      secrets: Iterable[str | None] = (), diagnose: bool = False,
                      stream: TextIO | None = None) -> None:
    """Send all logs to ``stream`` (stderr) in one format, redacted; ``json`` for log shippers; ``secrets``
    (the settings' secret values) are masked wherever they appear."""
    register_secrets(secrets)
    sink = RedactingSink(stream or sys.stderr)
    logger.remove()
    logger.configure(patcher=_one_line)
    if json:
        logger.add(sink.write, level=level, serialize=True, diagnose=diagnose, backtrace=diagnose)
    else:
        logger.add(
            sink.write,
            level=level,
            colorize=(stream or sys.stderr).isatty(),
            diagnose=diagnose,
            backtrace=diagnose,
            format=f"<green>{{time:HH:mm:ss.SSS}}</green> <level>{{level: <7}}</level> {process} | {{message}}",
        )
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
