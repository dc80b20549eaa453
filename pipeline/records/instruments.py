"""The instrument index: a column-wise view of the instruments in use, for per-batch lookups without Python loops.

Built from instrument rows (the ``instruments`` table or the parsed Kite CSV);
``positions(tokens)`` maps a token array to row positions with one
``np.searchsorted``. Expiry is held as epoch seconds of 15:30 IST on the
expiry date (the moment options stop trading), which is what time-to-expiry
is measured to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

import greeks
from pipeline.records.kinds import InstrumentKind
from pipeline.records.time_units import parse_date

# Kite's index rows are named after the index, the derivatives after the underlying.
INDEX_UNDERLYING = {"NIFTY 50": "NIFTY", "NIFTY BANK": "BANKNIFTY", "NIFTY FIN SERVICE": "FINNIFTY",
                    "NIFTY MID SELECT": "MIDCPNIFTY", "SENSEX": "SENSEX"}

def expiry_close_ts(expiry: dt.date) -> int:
    """Epoch seconds of 15:30 IST on ``expiry`` (as an int: the index stores int64)."""
    return int(greeks.expiry_close_ts(expiry))


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def is_index_row(row: Any) -> bool:
    """An index (not tradable): segment INDICES, or segment id 9 in the token."""
    return str(_field(row, "segment") or "").upper() == "INDICES" or (int(_field(row, "instrument_token")) & 0xFF) == 9


def underlying_of_row(row: Any) -> str:
    """The underlying an instruments-master row belongs to: ``name`` for derivatives; for index
    rows the derivatives' name of the index (``NIFTY 50`` -> ``NIFTY``), since they differ."""
    name = str(_field(row, "name") or "")
    if not is_index_row(row):
        return name
    symbol = str(_field(row, "tradingsymbol") or "")
    return INDEX_UNDERLYING.get(symbol, INDEX_UNDERLYING.get(name, name or symbol))


def positions_in(sorted_tokens: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Position of each of ``tokens`` in the sorted ``sorted_tokens`` (one searchsorted), -1 if absent."""
    tokens = np.asarray(tokens, dtype=np.uint32)
    if len(sorted_tokens) == 0:
        return np.full(len(tokens), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_tokens, tokens), len(sorted_tokens) - 1)
    return np.where(sorted_tokens[pos] == tokens, pos, -1)


@dataclass(frozen=True)
class InstrumentIndex:
    tokens: np.ndarray  # uint32, sorted
    underlying: np.ndarray  # object (str)
    kind: np.ndarray  # uint8, InstrumentKind
    strike: np.ndarray  # float64 rupees, NaN when not an option
    expiry_ts: np.ndarray  # int64 epoch s of 15:30 IST on expiry, 0 when none
    expiry: np.ndarray  # object: 'YYYY-MM-DD' or ''
    tradingsymbol: np.ndarray  # object

    @classmethod
    def from_rows(cls, rows: Iterable[Any]) -> InstrumentIndex:
        """Rows are mappings or objects with Kite's instrument columns."""
        records = []
        for row in rows:
            token = int(_field(row, "instrument_token"))
            itype = "INDEX" if is_index_row(row) else str(_field(row, "instrument_type") or "").upper()
            symbol = str(_field(row, "tradingsymbol") or "")
            name = underlying_of_row(row)
            expiry = _field(row, "expiry")
            expiry = parse_date(expiry)
            strike = _field(row, "strike")
            records.append((token, name, InstrumentKind.of_type(itype),
                            float(strike) if strike and itype in ("CE", "PE") else np.nan,
                            expiry_close_ts(expiry) if expiry else 0,
                            expiry.isoformat() if expiry else "", symbol))
        records.sort(key=lambda r: r[0])
        cols = list(zip(*records, strict=True)) if records else [[]] * 7
        return cls(
            tokens=np.asarray(cols[0], dtype=np.uint32),
            underlying=np.asarray(cols[1], dtype=object),
            kind=np.asarray(cols[2], dtype=np.uint8),
            strike=np.asarray(cols[3], dtype=np.float64),
            expiry_ts=np.asarray(cols[4], dtype=np.int64),
            expiry=np.asarray(cols[5], dtype=object),
            tradingsymbol=np.asarray(cols[6], dtype=object),
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def positions(self, tokens: np.ndarray) -> np.ndarray:
        """Row position of each token, -1 where the token is unknown."""
        return positions_in(self.tokens, tokens)

    def underlying_of(self, token: int) -> str | None:
        """The underlying of ``token``'s instrument; None when the index does not list it."""
        pos = self.positions(np.array([token]))[0]
        return None if pos < 0 else str(self.underlying[pos])

    def of_underlying(self, underlying: str) -> InstrumentIndex:
        """The rows of one underlying's instruments (its index, futures and options), still sorted by token."""
        own = self.underlying == underlying
        return InstrumentIndex(*(getattr(self, f.name)[own] for f in fields(self)))

