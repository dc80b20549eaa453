"""Time to expiry (Definitions: exchange time to 15:30 IST on the expiry date, 365-day years).

Behaviour around expiry
-----------------------
* On the expiry day ``t`` keeps shrinking until 15:30:00 IST, where it is 0.
  Any positive ``t`` (even seconds) is priced normally.
* At or after 15:30 IST on the expiry date ``t <= 0``: ``implied_vol`` and
  ``black76_greeks`` return NaN for those rows, ``black76_price`` returns the
  intrinsic value. ``years_to_expiry`` itself does not clip: it returns the
  negative value so callers can tell "expired" from "expiring".
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

#: The project's time constants, defined once here (greeks is the leaf every layer may import).
SECONDS_PER_DAY = 86400
SECONDS_PER_YEAR = 365.0 * SECONDS_PER_DAY
IST_OFFSET_SECONDS = 5 * 3600 + 30 * 60
IST = _dt.timezone(_dt.timedelta(seconds=IST_OFFSET_SECONDS), "IST")
EXPIRY_CLOSE_IST_SECONDS = 15 * 3600 + 30 * 60
#: seconds after 00:00 UTC of the date at which 15:30 IST falls (10:00 UTC)
_CLOSE_UTC_SECONDS = EXPIRY_CLOSE_IST_SECONDS - IST_OFFSET_SECONDS


def expiry_close_ts(expiry_dates: ArrayLike | _dt.date | str | Iterable) -> np.ndarray:
    """Epoch seconds (float64) of 15:30 IST (= 10:00 UTC) on each expiry date.

    Accepts a ``datetime.date`` (a ``datetime`` uses its date part), a
    ``'YYYY-MM-DD'`` string, a ``numpy.datetime64`` or any array/sequence of
    those (``datetime64[D]`` arrays included). Returns an ndarray of the input's
    shape (0-d for a scalar). Raises ValueError for unparseable dates (this is
    configuration/instrument data, not a per-tick row).
    """
    if isinstance(expiry_dates, _dt.datetime):
        expiry_dates = expiry_dates.date()
    if isinstance(expiry_dates, (_dt.date, str)):
        days = np.datetime64(expiry_dates, "D")
    else:
        arr = np.asarray(expiry_dates)
        if arr.dtype == object:
            arr = np.vectorize(
                lambda d: np.datetime64(d.date() if isinstance(d, _dt.datetime) else d, "D"),
                otypes=["datetime64[D]"],
            )(arr)
        days = arr.astype("datetime64[D]")
    epoch_days = days.astype(np.int64)
    return np.asarray(epoch_days * 86400.0 + _CLOSE_UTC_SECONDS, dtype=np.float64)


def years_to_expiry(exchange_ts: ArrayLike, expiry_close: ArrayLike) -> np.ndarray:
    """``(expiry_close - exchange_ts) / (365 * 86400)``: calendar years, float64.

    Both in epoch seconds (floats allowed, broadcasting). Not clipped: the
    result is <= 0 at/after the expiry close (see module docstring).
    """
    ts = np.asarray(exchange_ts, dtype=np.float64)
    ex = np.asarray(expiry_close, dtype=np.float64)
    return np.asarray((ex - ts) / SECONDS_PER_YEAR)
