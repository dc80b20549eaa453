"""The Kite instruments master: CSV in Kite's exact column order, and universe selection.

The simulator serves rows through :func:`instruments_csv`; the ingestor
reads them back through ``kiteconnect``'s ``KiteConnect.instruments()`` (the
same code path as a real account), whose conversions :func:`parse_instruments_csv`
mirrors for tests and capture files: ``instrument_token``/``lot_size`` -> int,
``last_price``/``strike``/``tick_size`` -> float, ``expiry`` -> ``date`` (empty
string when none), ``exchange_token`` stays a string.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.instrument_index import is_index_row, underlying_of_row

INSTRUMENT_COLUMNS = (
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry",
    "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange",
)


def instruments_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows -> Kite's CSV text (header + one line per instrument, columns in Kite's order)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(INSTRUMENT_COLUMNS)
    for row in rows:
        line = []
        for column in INSTRUMENT_COLUMNS:
            value = row.get(column, "")
            if isinstance(value, dt.date):
                value = value.isoformat()
            elif isinstance(value, float) and value.is_integer() and column != "last_price":
                value = int(value)
            line.append(value)
        writer.writerow(line)
    return out.getvalue()


def parse_instruments_csv(text: str) -> list[dict[str, Any]]:
    """Kite's CSV text -> dicts, converted exactly as ``KiteConnect.instruments()`` does."""
    rows = []
    for raw in csv.DictReader(io.StringIO(text.strip())):
        row: dict[str, Any] = dict(raw)
        row["instrument_token"] = int(row["instrument_token"])
        row["last_price"] = float(row["last_price"] or 0)
        row["strike"] = float(row["strike"] or 0)
        row["tick_size"] = float(row["tick_size"] or 0)
        row["lot_size"] = int(row["lot_size"] or 0)
        expiry = row.get("expiry") or ""
        row["expiry"] = dt.date.fromisoformat(expiry) if len(expiry) == 10 else ""
        rows.append(row)
    return rows


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and len(value) == 10:
        return dt.date.fromisoformat(value)
    return None


def select_universe(
    rows: Sequence[Mapping[str, Any]],
    underlyings: Sequence[str],
    expiries: int,
    strikes_around_atm: int,
    today: dt.date | None = None,
) -> list[Mapping[str, Any]]:
    """The instruments to subscribe: per underlying, its index row, its futures of the chosen
    expiries (and the nearest future in any case), and the options of the ``expiries`` nearest
    option expiries on or after ``today`` with ``strikes_around_atm`` strikes each side of the
    money (both CE and PE).

    The money is the index row's ``last_price`` in the master (a snapshot of the day), else
    the nearest future's, else the middle listed strike. ``today`` defaults to the IST date.
    """
    if today is None:
        today = dt.datetime.now(dt.timezone(dt.timedelta(hours=5, minutes=30))).date()
    wanted = {u.upper() for u in underlyings}
    by_underlying: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        name = underlying_of_row(row).upper()
        if name in wanted:
            by_underlying.setdefault(name, []).append(row)

    selected: list[Mapping[str, Any]] = []
    for name, group in by_underlying.items():
        index_rows = [r for r in group if is_index_row(r)]
        futures = sorted(
            (r for r in group if r.get("instrument_type") == "FUT" and (_as_date(r.get("expiry")) or today) >= today),
            key=lambda r: _as_date(r["expiry"]),
        )
        options = [r for r in group if r.get("instrument_type") in ("CE", "PE") and (_as_date(r.get("expiry")) or today) >= today]
        chosen_expiries = sorted({_as_date(r["expiry"]) for r in options})[:expiries]
        spot = next((float(r["last_price"]) for r in index_rows if float(r.get("last_price") or 0) > 0), None)
        if spot is None and futures and float(futures[0].get("last_price") or 0) > 0:
            spot = float(futures[0]["last_price"])
        selected.extend(index_rows)
        selected.extend(r for i, r in enumerate(futures) if i == 0 or _as_date(r["expiry"]) in chosen_expiries)
        for expiry in chosen_expiries:
            chain = [r for r in options if _as_date(r["expiry"]) == expiry]
            strikes = sorted({float(r["strike"]) for r in chain})
            if not strikes:
                continue
            anchor = spot if spot is not None else strikes[len(strikes) // 2]
            atm = min(range(len(strikes)), key=lambda i: abs(strikes[i] - anchor))
            keep = set(strikes[max(0, atm - strikes_around_atm): atm + strikes_around_atm + 1])
            selected.extend(r for r in chain if float(r["strike"]) in keep)
    return selected


__all__ = ["INSTRUMENT_COLUMNS", "instruments_csv", "parse_instruments_csv", "select_universe"]
