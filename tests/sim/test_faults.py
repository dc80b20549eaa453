"""Fault windows of the simulator on a manual clock: no sleeping."""

import pytest

from pipeline.runtime.clock import ManualClock
from sim.faults import FaultWindows

pytestmark = pytest.mark.unit


def test_stall_and_refuse_windows_open_and_close_with_the_clock() -> None:
    clock = ManualClock()
    faults = FaultWindows(clock)
    assert not faults.stalled() and not faults.refusing()
    faults.stall(2.0)
    faults.refuse(5.0)
    clock.advance(1.9)
    assert faults.stalled() and faults.refusing()
    clock.advance(0.2)
    assert not faults.stalled() and faults.refusing()
    clock.advance(3.0)
    assert not faults.refusing()


def test_malformed_frames_are_truncated_n_times_then_pass() -> None:
    faults = FaultWindows(ManualClock())
    frame = bytes(range(40))
    faults.malform(2)
    first, second, third = (faults.corrupt(frame, i) for i in (1, 2, 3))
    assert first == second == frame[:20] + b"\xff"
    assert third == frame


def test_every_nth_frame_is_malformed() -> None:
    faults = FaultWindows(ManualClock(), malformed_every=3)
    frame = b"\x00\x01" + bytes(30)
    out = [faults.corrupt(frame, i) != frame for i in range(1, 10)]
    assert out == [False, False, True] * 3
