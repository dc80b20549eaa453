"""The Kite instruments master: loading it (kiteconnect), CSV in Kite's exact column order, universe selection.

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
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kiteconnect import KiteConnect
from kiteconnect.exceptions import NetworkException, PermissionException, TokenException
from loguru import logger
from requests.exceptions import RequestException

from pipeline.records.instruments import is_index_row, underlying_of_row
from pipeline.records.time_units import IST, parse_date
from pipeline.runtime.backoff import Backoff
from pipeline.runtime.redaction import redact_url
from pipeline.runtime.settings import ConfigError, KiteAccount, Settings

INSTRUMENT_ATTEMPTS = 5

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
        row["expiry"] = parse_date(expiry) or ""
        rows.append(row)
    return rows


def select_universe(
    rows: Sequence[Mapping[str, Any]],
    underlyings: Sequence[str],
    expiries: int,
    strikes_around_atm: int | None,
    today: dt.date | None = None,
) -> list[Mapping[str, Any]]:
    """The instruments to subscribe: per underlying, its index row, its futures of the chosen
    expiries (and the nearest future in any case), and the options of the ``expiries`` nearest
    option expiries on or after ``today`` with ``strikes_around_atm`` strikes each side of the
    money (both CE and PE); ``None`` = every listed strike of those expiries.

    The money is the index row's ``last_price`` in the master (a snapshot of the day), else
    the nearest future's, else the middle listed strike. ``today`` defaults to the IST date.
    """
    if today is None:
        today = dt.datetime.now(IST).date()
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
            (r for r in group if r.get("instrument_type") == "FUT" and (parse_date(r.get("expiry")) or today) >= today),
            key=lambda r: parse_date(r["expiry"]),
        )
        options = [r for r in group if r.get("instrument_type") in ("CE", "PE") and (parse_date(r.get("expiry")) or today) >= today]
        chosen_expiries = sorted({parse_date(r["expiry"]) for r in options})[:expiries]
        spot = next((float(r["last_price"]) for r in index_rows if float(r.get("last_price") or 0) > 0), None)
        if spot is None and futures and float(futures[0].get("last_price") or 0) > 0:
            spot = float(futures[0]["last_price"])
        selected.extend(index_rows)
        selected.extend(r for i, r in enumerate(futures) if i == 0 or parse_date(r["expiry"]) in chosen_expiries)
        for expiry in chosen_expiries:
            chain = [r for r in options if parse_date(r["expiry"]) == expiry]
            strikes = sorted({float(r["strike"]) for r in chain})
            if not strikes:
                continue
            if strikes_around_atm is None:
                selected.extend(chain)
                continue
            anchor = spot if spot is not None else strikes[len(strikes) // 2]
            atm = min(range(len(strikes)), key=lambda i: abs(strikes[i] - anchor))
            keep = set(strikes[max(0, atm - strikes_around_atm): atm + strikes_around_atm + 1])
            selected.extend(r for r in chain if float(r["strike"]) in keep)
    return selected


__all__ = ["INSTRUMENT_COLUMNS", "instruments_csv", "parse_instruments_csv", "select_universe"]


def load_instruments(settings: Settings, account: KiteAccount | None, api_url: str) -> list[dict]:
    """The instruments master through kiteconnect's REST client (Kite or the simulator).

    A refused login is a configuration problem (:class:`ConfigError`, one line, no token);
    network trouble is retried a few times with backoff, then reported the same way.
    """
    api_key = account.api_key if account else "strikeflow"
    token = account.access_token.get_secret_value() if account else "simulator"
    kite = KiteConnect(api_key, access_token=token, root=api_url)
    backoff = Backoff(1.0, 30.0)
    for attempt in range(1, INSTRUMENT_ATTEMPTS + 1):
        try:
            return kite.instruments()
        except (TokenException, PermissionException) as exc:
            raise ConfigError(
                f"configuration error: KITE_ACCESS_TOKEN: Kite refused the instruments request for api_key "
                f"{api_key} ({type(exc).__name__}); log in again for today's access token") from None
        except (NetworkException, RequestException, OSError) as exc:
            if attempt == INSTRUMENT_ATTEMPTS:
                raise ConfigError(
                    f"configuration error: STRIKEFLOW_KITE_API_URL: cannot load instruments from "
                    f"{redact_url(api_url)} after {attempt} attempts ({type(exc).__name__})") from None
            delay = backoff.next()
            logger.warning("instruments from {} failed ({}); retrying in {:.0f}s", redact_url(api_url),
                           type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
