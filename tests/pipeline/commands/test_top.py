import os
import shutil
import subprocess
import sys
import time

import pytest

from pipeline.commands.top import (
    Sample,
    View,
    bottleneck,
    render,
    view_between,
)

T = "strikeflow_ticks_ingested_total"
P = "strikeflow_ticks_processed_total"


@pytest.mark.unit
def test_rates_are_counter_deltas_per_second() -> None:
    old = Sample(10.0, {T: 100.0}, {P: 50.0}, {})
    new = Sample(12.0, {T: 300.0, "strikeflow_produce_buffer_bytes": 2048.0}, {P: 150.0}, {"ticks": 7})
    view = view_between(old, new)
    assert view.ticks_in_per_s == 100.0 and view.ticks_processed_per_s == 50.0
    assert view.produce_buffer_bytes == 2048.0 and view.consumer_lag == {"ticks": 7}


@pytest.mark.unit
def test_counter_reset_after_restart_counts_from_zero() -> None:
    view = view_between(Sample(0.0, {T: 1000.0}, {}, {}), Sample(1.0, {T: 30.0}, {}, {}))
    assert view.ticks_in_per_s == 30.0


@pytest.mark.unit
def test_unreachable_process_shows_down() -> None:
    view = view_between(Sample(0.0, {}, {}, {}), Sample(1.0, {}, {P: 1.0}, {}))
    text = render(view)
    assert "ingest   DOWN" in text and "worker   up" in text and view.ingest_up is False
    assert ">> ingest   DOWN" in text and "bottleneck: ingest DOWN" in text


def _up(**fields: float) -> View:
    base = {"ticks_in_per_s": 1000.0, "ticks_processed_per_s": 1000.0, "redis_msgs_per_s": 50.0,
            "rows_written_per_s": 200.0, "produce_buffer_bytes": 0.0, "process_lag_s": 0.1, "ws_connected": 2.0,
            "conflated": 0.0, "consumer_lag": {}, "ingest_up": True, "worker_up": True}
    return View(**{**base, **fields})


@pytest.mark.unit
@pytest.mark.parametrize(("fields", "stage", "why"), [
    ({}, "", "keeping up"),
    ({"worker_up": False}, "worker", "worker DOWN"),
    ({"ws_connected": 0.0}, "ingest", "no Kite connection up"),
    ({"produce_buffer_bytes": 64.0 * 2**20}, "ingest", "Kafka is slow or down"),
    ({"ticks_processed_per_s": 600.0}, "worker", "processing 600/s of 1,000/s"),
    ({"process_lag_s": 4.5}, "worker", "4.5s behind"),
])
def test_the_bottleneck_is_the_first_stage_holding_the_flow_back(fields: dict, stage: str, why: str) -> None:
    got_stage, got_why = bottleneck(_up(**fields))
    assert got_stage == stage and why in got_why
    text = render(_up(**fields), on_tty=True)
    marked = [line for line in text.splitlines() if line.startswith("\x1b[7m>> ")]
    assert len(marked) == (1 if stage else 0)


@pytest.mark.integration
def test_top_draws_in_tmux_and_quits_on_q(tmp_path) -> None:  # noqa: ANN001
    """A plain terminal over SSH: run it in tmux, read the screen with capture-pane, quit with q."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for this test (Debian: apt-get install tmux)")
    session = f"sftop{os.getpid()}"
    cmd = (f"{sys.executable} -m pipeline.commands.cli top --ingest http://127.0.0.1:1 --worker http://127.0.0.1:1 "
           f"--interval 0.3; echo exited > {tmp_path / 'done'}; sleep 30")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIKEFLOW_KAFKA")}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "20", cmd], check=True, env=env)
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while "bottleneck:" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        assert "strikeflow top" in screen and ">> ingest   DOWN" in screen and "bottleneck: ingest DOWN" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while not (tmp_path / "done").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "done").exists(), "top did not quit on q"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


