"""One redaction for every log sink and error line (``pipeline.runtime.redaction``, ``pipeline.runtime.logs``)."""

from __future__ import annotations

import io
import json

import pytest
from loguru import logger

from pipeline.runtime.logs import configure_logging
from pipeline.runtime.redaction import escape_line, redact, redact_url
from pipeline.runtime.settings import load_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "secret"), [
    ("InvalidUrlClientError (ws://127.0.0.1:99999?api_key=k&access_token=tok123)", "tok123"),
    ("postgresql://user:pa/ss#w?rd@db:5432/markets", "pa/ss#w?rd"),
    ("postgresql://user@db/markets?password=hunter22&sslmode=require", "hunter22"),
    ("redis://:r3dis-pw@cache:6379/0", "r3dis-pw"),
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
    ("Authorization: token key:acc3ss", "key:acc3ss"),
    ("GET /?token=dash-board-tok HTTP/1.1", "dash-board-tok"),
])
def test_redact_hides_passwords_tokens_and_credentials(text: str, secret: str) -> None:
    assert secret not in redact(text) and "***" in redact(text)


def test_redact_url_keeps_what_is_not_secret() -> None:
    assert redact_url("postgresql://strikeflow:pw@timescale:5432/markets") == "postgresql://strikeflow:***@timescale:5432/markets"
    assert redact_url("kafka://broker1:9092") == "kafka://broker1:9092"
    assert redact("instrument 256265 ticked at 24500.05") == "instrument 256265 ticked at 24500.05"


def test_escape_line_makes_one_capped_line() -> None:
    assert escape_line("a\nERROR forged\r\x1b[31m") == "a\\nERROR forged\\x0d\\x1b[31m"
    long = escape_line("x" * 10_000, limit=100)
    assert long.startswith("x" * 100) and "9,900 more characters" in long and len(long) < 140


def _configured(monkeypatch: pytest.MonkeyPatch, json_logs: bool) -> tuple[io.StringIO, dict[str, str]]:
    secrets = {"KITE_ACCESS_TOKEN": "acc-TOKEN-91", "STRIKEFLOW_DASHBOARD_TOKEN": "dash-TOKEN-42",
               "STRIKEFLOW_PG_DSN": "postgresql://u:pg-PASS-77@db/x", "STRIKEFLOW_REDIS_URL": "redis://:rd-PASS-55@r:6379/0"}
    for name, value in {**secrets, "KITE_API_KEY": "key"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    out = io.StringIO()
    configure_logging("DEBUG", json_logs, "test", secrets=settings.secret_values(), stream=out)
    return out, secrets


@pytest.mark.parametrize("json_logs", [False, True])
def test_no_sink_prints_a_configured_secret_even_in_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                               json_logs: bool) -> None:
    out, secrets = _configured(monkeypatch, json_logs)
    try:
        token = secrets["KITE_ACCESS_TOKEN"]  # a local variable: loguru's diagnose would print its value
        raise RuntimeError(f"refused {token}")
    except RuntimeError:
        logger.exception("failed with {}", secrets["STRIKEFLOW_DASHBOARD_TOKEN"])
    logger.warning("dsn {} and {}", secrets["STRIKEFLOW_PG_DSN"], secrets["STRIKEFLOW_REDIS_URL"])
    logger.info("feed says: {}", "line one\n12:00:00.000 ERROR ingest | FORGED")
    text = out.getvalue()
    configure_logging("INFO")  # back to stderr for the other tests
    for value in ("acc-TOKEN-91", "dash-TOKEN-42", "pg-PASS-77", "rd-PASS-55"):
        assert value not in text, value
    assert "RuntimeError" in text and "***" in text
    lines = [json.loads(line)["text"] if json_logs else line for line in text.splitlines() if "FORGED" in line]
    assert len(lines) == 1 and "\\n12:00:00.000 ERROR ingest | FORGED" in lines[0]  # escaped, not a new line
