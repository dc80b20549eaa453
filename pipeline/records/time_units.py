"""Time conventions of the records: IST, interval labels, calendar dates.

- Exchange and receive times are epoch seconds / microseconds (UTC); IST is
  UTC+05:30 (``greeks.IST``, the one definition, re-exported here).
- A bar interval is a whole number of seconds; its label is ``"<n>m"`` for
  whole minutes (60 <-> "1m", 300 <-> "5m", 900 <-> "15m"), else ``"<n>s"``.
  The label names Redis channels (``bars:1m:NIFTY``) and table suffixes
  (``bars_1m``).
- Dates (expiries) are ``datetime.date``; on the wire and in JSON 'YYYY-MM-DD'.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from greeks.expiry import IST, IST_OFFSET_SECONDS, SECONDS_PER_DAY, SECONDS_PER_YEAR

__all__ = ["IST", "IST_OFFSET_SECONDS", "SECONDS_PER_DAY", "SECONDS_PER_YEAR", "interval_of", "label_of", "parse_date", "parse_timestamp"]


def label_of(interval_s: int) -> str:
    """60 -> '1m', 300 -> '5m', 900 -> '15m' (other multiples of 60 likewise; else '<n>s')."""
    interval_s = int(interval_s)
    return f"{interval_s // 60}m" if interval_s % 60 == 0 else f"{interval_s}s"


def interval_of(label: str) -> int:
    """'1m' -> 60, '15m' -> 900, '30s' -> 30; ValueError naming the accepted form otherwise."""
    text = label.strip().lower()
    unit = {"m": 60, "s": 1}.get(text[-1:]) if text else None
    if unit is None or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"bad interval label {label!r}: expected minutes like '1m', '5m', '15m' or seconds like '30s'")
    return int(text[:-1]) * unit


def parse_date(value: Any) -> dt.date | None:
    """A date from a ``date``, a ``datetime`` or ``numpy.datetime64`` (its date part), or a string
    starting 'YYYY-MM-DD' (an ISO timestamp's date); None for '' / None.

    Anything else (a malformed string, a number) raises ValueError: instrument data, not a tick.
    """
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[D]").item()
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip()[:10])
    raise ValueError(f"not a date: {value!r}")


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an ISO 8601 date-time; one without a zone is IST (the exchange's clock).

    ValueError (naming the expected form) for anything else.
    """
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"bad time {text!r}: expected ISO 8601 like 2026-12-03T09:15 (IST unless a zone is given)"
                         ) from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=IST)).timestamp()
