"""The NSE exchange calendar: trading days, holidays and the session's phases (pure reference data).

Shared by the simulator (its sessions and expiries), the ingestor (the trading day whose expiries it
selects) and the backfill (the session minutes it fills).

Holidays: ``nse_holidays.csv`` next to this module (NSE's published list, its source in the file's
header; BSE keeps the same days). A weekly or monthly expiry that falls on a holiday moves to the
previous trading day, as NSE and BSE move them. Session (IST): pre-open 09:00-09:08 (orders and
the index's opening price; no options trading), continuous trading 09:15-15:30, then closed.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
from enum import Enum
from importlib import resources

from pipeline.records.time_units import IST


class Phase(Enum):
    CLOSED = "closed"
    PRE_OPEN = "pre_open"  # 09:00-09:08: the index moves, derivatives do not trade
    OPEN = "open"  # 09:15-15:30: continuous trading


PRE_OPEN_START, PRE_OPEN_END = dt.time(9, 0), dt.time(9, 8)
OPEN, CLOSE = dt.time(9, 15), dt.time(15, 30)


@functools.cache
def holidays() -> dict[dt.date, str]:
    """{date: name} of the weekday trading holidays shipped with the simulator."""
    text = resources.files("pipeline.records").joinpath("nse_holidays.csv").read_text()
    rows = csv.DictReader(io.StringIO("".join(line for line in text.splitlines(True) if not line.startswith("#"))))
    return {dt.date.fromisoformat(r["date"]): r["holiday"] for r in rows}


def is_trading_day(day: dt.date) -> bool:
    """A weekday that is not an exchange holiday."""
    return day.weekday() < 5 and day not in holidays()


def previous_trading_day(day: dt.date) -> dt.date:
    """``day`` itself when it is a trading day, else the nearest trading day before it."""
    while not is_trading_day(day):
        day -= dt.timedelta(days=1)
    return day


def phase_at(ts: float) -> Phase:
    """The session phase at exchange time ``ts`` (epoch seconds)."""
    moment = dt.datetime.fromtimestamp(ts, IST)
    if not is_trading_day(moment.date()):
        return Phase.CLOSED
    now = moment.time()
    if PRE_OPEN_START <= now < PRE_OPEN_END:
        return Phase.PRE_OPEN
    if OPEN <= now < CLOSE:
        return Phase.OPEN
    return Phase.CLOSED


def session_minutes(since: float, until: float) -> list[int]:
    """Starts (epoch s) of the minutes of continuous trading whose start is in [since, until)."""
    first = -(-int(since) // 60) * 60
    return [m for m in range(first, int(-(-until // 1)), 60) if phase_at(m) is Phase.OPEN]


def trading_date(ts: float) -> dt.date:
    """The IST calendar date of exchange time ``ts``: a new date starts a new trading day."""
    return dt.datetime.fromtimestamp(ts, IST).date()
