"""A seeded, simulated NSE index-options market for `strikeflow simulate` (pure: no I/O, no wall clock).

What it models, and the units:

- Contracts: per underlying an index (segment INDICES), monthly futures and
  options on weekly (NIFTY: every Tuesday; SENSEX: every Thursday) or monthly
  (last Tuesday of the month; SENSEX last Thursday) expiries, strikes every
  ``strike_step`` rupees around the spot. NIFTY, BANKNIFTY, FINNIFTY and
  MIDCPNIFTY trade on NFO (segment 2), SENSEX on BFO (BSE's F&O, segment 5).
  Tokens follow Kite: ``exchange_token << 8 | segment``; the indices use their
  real tokens (NIFTY 50 = 256265, NIFTY BANK = 260105, NIFTY FIN SERVICE =
  257801, NIFTY MID SELECT = 288009, SENSEX = 265).
- Underlying: geometric random walk at the underlying's volatility
  (annualised, over calendar time in years of 365 days) plus Poisson jumps
  (``jumps_per_day``, normal size ``jump_size``, in log terms).
- Options: Black-76 on the expiry's forward ``F = S * exp(r t)`` with a smile
  ``sigma(K) = atm_vol * (1 + skew * m + curvature * m^2)``, ``m = ln(K/F)``
  (convex in m, so no butterfly arbitrage from the smile), priced to the
  0.05 tick, never below one tick. Futures trade at the forward.
- Liquidity: ``liquidity`` weighs how often each instrument ticks, as on the
  real feed: the index and futures often, options by a Gaussian in
  standardised moneyness ``ln(K/F) / (vol sqrt(t))`` (near the money often,
  far strikes rarely, the farthest almost never) and less for later expiries.
- Trading: in the continuous session (09:15-15:30 IST) an instrument's tick
  is a trade of a whole number of lots with probability ``trade_share``, else
  only its quote moves (``last_price`` stays the last trade's, the five depth
  levels each side sit one tick apart around the model price, which follows
  the index). Cumulative day volume only increases within a day and starts
  from 0 on the next (yesterday's last trade becomes the close); OI moves in
  multiples of the lot and never below 0.
- Session and calendar (``exchange_calendar``): the index moves in the
  pre-open (09:00-09:08, no derivatives trading) and the session; nothing
  ticks outside them. Expiries on an NSE holiday move to the previous trading
  day (the shipped holiday list, ``nse_holidays.csv``).

Time enters only as the ``now`` argument (epoch seconds of exchange time), so a
seed and a start time give the same market on every run.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import greeks
from pipeline.feed.kite_wire import KITE_TICK_DTYPE, MODE_FULL
from pipeline.records.exchange_calendar import (
    Phase,
    phase_at,
    previous_trading_day,
    trading_date,
)
from pipeline.records.instruments import expiry_close_ts, positions_in
from pipeline.records.time_units import IST, SECONDS_PER_DAY, SECONDS_PER_YEAR

TICK_SIZE = 0.05
NFO_SEGMENT = 2
BFO_SEGMENT = 5
TUESDAY, THURSDAY = 1, 3
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKLY_MONTH_CODE = "123456789OND"


@dataclass(frozen=True)
class UnderlyingSpec:
    """One simulated underlying. ``spot`` rupees, ``atm_vol`` annualised (0.13 = 13 %)."""

    name: str
    index_symbol: str
    index_token: int
    spot: float
    strike_step: float
    lot_size: int
    atm_vol: float
    weekly: bool
    first_exchange_token: int
    exchange: str = "NFO"  # the derivatives' exchange; BFO for SENSEX
    index_exchange: str = "NSE"
    expiry_weekday: int = TUESDAY

    @property
    def segment_id(self) -> int:
        return BFO_SEGMENT if self.exchange == "BFO" else NFO_SEGMENT


DEFAULT_UNDERLYINGS: dict[str, UnderlyingSpec] = {
    "NIFTY": UnderlyingSpec("NIFTY", "NIFTY 50", 256265, 24500.0, 50.0, 75, 0.13, True, 40000),
    "BANKNIFTY": UnderlyingSpec("BANKNIFTY", "NIFTY BANK", 260105, 52000.0, 100.0, 35, 0.16, False, 50000),
    "FINNIFTY": UnderlyingSpec("FINNIFTY", "NIFTY FIN SERVICE", 257801, 26000.0, 50.0, 65, 0.14, False, 60000),
    "MIDCPNIFTY": UnderlyingSpec("MIDCPNIFTY", "NIFTY MID SELECT", 288009, 13000.0, 25.0, 120, 0.17, False, 70000),
    "SENSEX": UnderlyingSpec("SENSEX", "SENSEX", 265, 80500.0, 100.0, 20, 0.13, True, 80000, "BFO", "BSE", THURSDAY),
}


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def monthly_expiries(start: dt.date, n: int, weekday: int = TUESDAY) -> list[dt.date]:
    """The next ``n`` monthly expiries (the month's last ``weekday``, Tuesday by default, moved to the
    previous trading day when it is a holiday) on or after ``start``."""
    out: list[dt.date] = []
    year, month = start.year, start.month
    while len(out) < n:
        day = previous_trading_day(_last_weekday(year, month, weekday))
        if day >= start:
            out.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def option_expiries(start: dt.date, n: int, weekly: bool, weekday: int = TUESDAY) -> list[dt.date]:
    """The next ``n`` option expiries on or after ``start``: every ``weekday`` when ``weekly``, else monthly;
    one that falls on a holiday moves to the previous trading day (``exchange_calendar``)."""
    if not weekly:
        return monthly_expiries(start, n, weekday)
    out: list[dt.date] = []
    day = start - dt.timedelta(days=(start.weekday() - weekday) % 7)  # this week's, maybe before start
    while len(out) < n:
        shifted = previous_trading_day(day)
        if shifted >= start:
            out.append(shifted)
        day += dt.timedelta(weeks=1)
    return out


def _symbol(name: str, expiry: dt.date, monthly: bool, tail: str) -> str:
    yy = expiry.year % 100
    if monthly:
        return f"{name}{yy:02d}{_MONTHS[expiry.month - 1]}{tail}"
    return f"{name}{yy:02d}{_WEEKLY_MONTH_CODE[expiry.month - 1]}{expiry.day:02d}{tail}"


def build_instruments(
    specs: Sequence[UnderlyingSpec], start: dt.date, n_expiries: int = 3, strikes_each_side: int = 20,
    n_futures: int = 2,
) -> list[dict]:
    """The instruments master (Kite's columns, ``KiteConnect.instruments()`` types) of the market."""
    rows: list[dict] = []
    for spec in specs:
        rows.append(dict(instrument_token=spec.index_token, exchange_token=str(spec.index_token >> 8),
                         tradingsymbol=spec.index_symbol, name=spec.index_symbol, last_price=spec.spot, expiry="",
                         strike=0.0, tick_size=0.0, lot_size=0, instrument_type="EQ", segment="INDICES",
                         exchange=spec.index_exchange))
        exchange_token, segment = spec.first_exchange_token, spec.segment_id
        monthlies = set(monthly_expiries(start, 12, spec.expiry_weekday))
        for expiry in monthly_expiries(start, n_futures, spec.expiry_weekday):
            rows.append(dict(instrument_token=exchange_token << 8 | segment, exchange_token=str(exchange_token),
                             tradingsymbol=_symbol(spec.name, expiry, True, "FUT"), name=spec.name,
                             last_price=spec.spot, expiry=expiry, strike=0.0, tick_size=TICK_SIZE,
                             lot_size=spec.lot_size, instrument_type="FUT", segment=f"{spec.exchange}-FUT",
                             exchange=spec.exchange))
            exchange_token += 1
        atm = round(spec.spot / spec.strike_step) * spec.strike_step
        for expiry in option_expiries(start, n_expiries, spec.weekly, spec.expiry_weekday):
            for i in range(-strikes_each_side, strikes_each_side + 1):
                strike = atm + i * spec.strike_step
                if strike <= 0:
                    continue
                for kind in ("CE", "PE"):
                    tail = f"{strike:.0f}{kind}"
                    rows.append(dict(instrument_token=exchange_token << 8 | segment,
                                     exchange_token=str(exchange_token),
                                     tradingsymbol=_symbol(spec.name, expiry, expiry in monthlies, tail),
                                     name=spec.name, last_price=0.0, expiry=expiry, strike=strike,
                                     tick_size=TICK_SIZE, lot_size=spec.lot_size, instrument_type=kind,
                                     segment=f"{spec.exchange}-OPT", exchange=spec.exchange))
                    exchange_token += 1
    return rows


def to_tick(price: np.ndarray) -> np.ndarray:
    """Round rupee prices to the 0.05 tick (never below one tick)."""
    return np.maximum(np.round(price / TICK_SIZE) * TICK_SIZE, TICK_SIZE)


class Market:
    """The evolving state of every instrument in ``rows``; ``advance`` moves it, ``trade``/``snapshot`` read it.

    ``start_ts``: exchange time of the first state, epoch seconds. ``r``: the
    continuously compounded rate of the model (annual).
    """

    skew = -3.0
    curvature = 40.0
    trade_share = 0.5  # of an instrument's ticks in the session, the share that are trades (the rest: quotes)
    jumps_per_day = 3.0
    jump_size = 0.004

    def __init__(self, rows: Sequence[dict], specs: Sequence[UnderlyingSpec], start_ts: float, *, seed: int = 1,
                 r: float = 0.065, around_the_clock: bool = False) -> None:
        """``around_the_clock``: trade at any hour on any day (no session phases, no holidays; a new IST
        date still starts a new trading day), for runs whose exchange time is the wall time."""
        self.rng = np.random.default_rng(seed)
        self.around_the_clock = around_the_clock
        self.r = r
        self.now = float(start_ts)
        self.specs = {s.name: s for s in specs}
        by_index = {s.index_symbol: s.name for s in specs}
        n = len(rows)
        self.tokens = np.array([int(r["instrument_token"]) for r in rows], dtype=np.uint32)
        self.underlying = np.array([by_index.get(r["tradingsymbol"], r["name"]) for r in rows], dtype=object)
        self.kind = np.array([r["instrument_type"] if r["segment"] != "INDICES" else "INDEX" for r in rows], dtype=object)
        self.is_index = self.kind == "INDEX"
        self.is_option = np.isin(self.kind, ("CE", "PE"))
        self.is_call = self.kind == "CE"
        self.strike = np.array([float(r["strike"] or 0) for r in rows])
        self.expiry_ts = np.array([expiry_close_ts(r["expiry"]) if isinstance(r["expiry"], dt.date) else 0
                                   for r in rows], dtype=np.int64)
        self.lot = np.array([max(int(r["lot_size"]), 1) for r in rows], dtype=np.int64)
        self.spot = {s.name: s.spot for s in specs}
        self.atm_vol = {s.name: s.atm_vol for s in specs}
        self._order = np.argsort(self.tokens)
        self._sorted_tokens = self.tokens[self._order]

        self.price = np.zeros(n)
        self._reprice()
        self.prev_close = self.price * np.exp(self.rng.normal(0, 0.004, n))
        self.prev_close = np.where(self.is_index, np.round(self.prev_close, 2), to_tick(self.prev_close))
        self.day_open = self.price.copy()
        self.day_high = self.price.copy()
        self.day_low = self.price.copy()
        self.volume = np.where(self.is_index, 0, self.lot * self.rng.integers(0, 50, n))
        self.turnover = self.volume * self.price
        self.last_qty = np.where(self.is_index, 0, self.lot)
        self.last_trade_ts = np.full(n, int(start_ts), dtype=np.int64)
        self.last_trade_price = self.price.copy()  # what last_price shows: the quotes move without trades
        self.day = trading_date(start_ts)
        moneyness = np.where(self.is_option, np.log(np.where(self.strike > 0, self.strike, 1) / self._spot_of()), 0.0)
        base_lots = np.where(self.is_option, 2000 * np.exp(-(moneyness / 0.03) ** 2) + 50, 5000)
        self.oi = np.where(self.is_index, 0, self.lot * self.rng.poisson(base_lots)).astype(np.int64)
        self.oi_high = self.oi.copy()
        self.oi_low = self.oi.copy()
        self._expiry_rank = np.zeros(n, dtype=np.int64)  # 0 = the underlying's nearest option expiry
        for name in self.specs:
            mine = self.is_option & (self.underlying == name)
            self._expiry_rank[mine] = np.searchsorted(np.unique(self.expiry_ts[mine]), self.expiry_ts[mine])
        self.liquidity = self._liquidity()

    def _liquidity(self) -> np.ndarray:
        """Relative tick rates (any scale): index and futures 20, an at-the-money option of the nearest
        expiry about 10, falling as a Gaussian in standardised moneyness and by half per later expiry,
        with a floor of 0.002 (a far strike ticks a few times an hour at a realistic rate). In the
        pre-open only the index ticks; outside the session nothing does."""
        spot = self._spot_of()
        t = np.maximum(self.expiry_ts - self.now, 6 * 3600) / SECONDS_PER_YEAR
        vol = np.array([self.atm_vol[u] for u in self.underlying])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.is_option, np.log(np.where(self.strike > 0, self.strike, 1) / spot) / (vol * np.sqrt(t)),
                         0.0)
        option = 10.0 * np.exp(-0.5 * (z / 0.8) ** 2) * 0.5 ** self._expiry_rank + 0.002
        phase = self.phase()
        if phase is Phase.CLOSED:
            return np.zeros(len(self.tokens))  # the feed is quiet outside the session
        if phase is Phase.PRE_OPEN:
            return np.where(self.is_index, 20.0, 0.0)  # only the index moves: no derivatives trading
        return np.where(self.is_option, option, 20.0)

    def __len__(self) -> int:
        return len(self.tokens)

    def positions(self, tokens: np.ndarray) -> np.ndarray:
        """Row positions of ``tokens`` (-1 where unknown)."""
        i = positions_in(self._sorted_tokens, tokens)
        return np.where(i >= 0, self._order[i], -1)

    def _spot_of(self) -> np.ndarray:
        return np.array([self.spot[u] for u in self.underlying])

    def _reprice(self) -> None:
        spot = self._spot_of()
        t = np.maximum(self.expiry_ts - self.now, 0.0) / SECONDS_PER_YEAR
        forward = spot * np.exp(self.r * t)
        vol = np.array([self.atm_vol[u] for u in self.underlying])
        price = np.where(self.is_index, np.round(spot, 2), to_tick(forward))
        opt = self.is_option
        if opt.any():
            m = np.log(self.strike[opt] / forward[opt])
            sigma = np.clip(vol[opt] * (1 + self.skew * m + self.curvature * m * m), 0.03, 3.0)
            value = greeks.black76_price(forward[opt], self.strike[opt], t[opt], self.r, sigma, self.is_call[opt])
            price[opt] = to_tick(value)
        self.price = price

    def advance(self, now: float) -> None:
        """Move the market to exchange time ``now`` (epoch seconds; earlier times are ignored). The index
        moves only in the pre-open and the continuous session; a new IST date starts a new trading day."""
        dt_s = now - self.now
        if dt_s <= 0:
            return
        if trading_date(now) != self.day:
            self._new_day(trading_date(now))
        if self.phase(now) is Phase.CLOSED:
            dt_s = 0.0  # the index is not computed outside the session: prices stand still
        years = dt_s / SECONDS_PER_YEAR
        for name, spec in self.specs.items():
            shock = spec.atm_vol * math.sqrt(years) * self.rng.standard_normal()
            jumps = self.rng.poisson(self.jumps_per_day * dt_s / SECONDS_PER_DAY)
            if jumps:
                shock += float(self.rng.normal(0.0, self.jump_size, jumps).sum())
            self.spot[name] *= math.exp(shock - 0.5 * (spec.atm_vol ** 2) * years)
            # ATM vol wanders, mean-reverting to the spec's level
            self.atm_vol[name] += 0.5 * (spec.atm_vol - self.atm_vol[name]) * years * 365 \
                + 0.02 * math.sqrt(years * 365) * self.rng.standard_normal()
            self.atm_vol[name] = min(max(self.atm_vol[name], 0.05), 1.0)
        self.now = float(now)
        self._reprice()
        self.liquidity = self._liquidity()
        self.day_high = np.maximum(self.day_high, self.price)
        self.day_low = np.minimum(self.day_low, self.price)

    def phase(self, ts: float | None = None) -> Phase:
        """The session phase at exchange time ``ts`` (default: now); always open around the clock."""
        return Phase.OPEN if self.around_the_clock else phase_at(self.now if ts is None else ts)

    def _new_day(self, day: dt.date) -> None:
        """A new trading day: cumulative volume from 0, yesterday's last trade is the previous close."""
        self.day = day
        self.prev_close = np.where(self.is_index, self.price, self.last_trade_price)
        self.volume[:] = 0
        self.turnover[:] = 0
        self.day_open, self.day_high, self.day_low = self.price.copy(), self.price.copy(), self.price.copy()
        self.oi_high, self.oi_low = self.oi.copy(), self.oi.copy()

    def tick(self, rows: np.ndarray) -> np.ndarray:
        """Instruments at positions ``rows`` update now: in the continuous session each one trades with
        probability ``trade_share`` (else only its quote moves, as Kite sends depth changes without
        trades); outside it nothing trades. Returns the rows that traded."""
        if self.phase() is not Phase.OPEN:
            return rows[:0]
        traded = rows[self.rng.random(len(rows)) < self.trade_share]
        self.trade(traded)
        return traded

    def trade(self, rows: np.ndarray) -> None:
        """Instruments at positions ``rows`` trade now at their model price: volume grows by whole lots,
        OI moves by lots."""
        rows = rows[~self.is_index[rows]]
        if not len(rows):
            return
        self.last_trade_price[rows] = self.price[rows]
        lots = self.rng.geometric(0.35, len(rows))
        qty = lots * self.lot[rows]
        self.volume[rows] += qty
        self.turnover[rows] += qty * self.price[rows]
        self.last_qty[rows] = qty
        self.last_trade_ts[rows] = int(self.now)
        change = self.rng.integers(-3, 5, len(rows)) * self.lot[rows] * (self.rng.random(len(rows)) < 0.5)
        self.oi[rows] = np.maximum(self.oi[rows] + change, 0)
        self.oi_high[rows] = np.maximum(self.oi_high[rows], self.oi[rows])
        self.oi_low[rows] = np.minimum(self.oi_low[rows], self.oi[rows])

    def snapshot(self, rows: np.ndarray, modes: np.ndarray | int = MODE_FULL) -> np.ndarray:
        """The current state of ``rows`` as Kite ticks (``KITE_TICK_DTYPE``) in the given modes."""
        n = len(rows)
        out = np.zeros(n, dtype=KITE_TICK_DTYPE)
        modes = np.broadcast_to(np.asarray(modes, dtype=np.uint8), (n,))
        out["instrument_token"] = self.tokens[rows]
        out["tradable"] = ~self.is_index[rows]
        out["mode"] = modes
        fair = self.price[rows]  # the model price: the quotes sit around it
        price = np.where(self.is_index[rows], fair, self.last_trade_price[rows])
        out["last_price"] = price
        quote = modes >= 2
        tradable = ~self.is_index[rows]
        q = quote & tradable
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(self.volume[rows] > 0, self.turnover[rows] / np.maximum(self.volume[rows], 1), price)
        out["last_traded_quantity"] = np.where(q, self.last_qty[rows], 0)
        out["average_traded_price"] = np.where(q, np.round(avg, 2), 0)
        out["volume_traded"] = np.where(q, self.volume[rows], 0)
        depth_qty = self.lot[rows, None] * self.rng.integers(1, 40, (n, 5))
        out["total_buy_quantity"] = np.where(q, depth_qty.sum(1) * 7, 0)
        out["total_sell_quantity"] = np.where(q, depth_qty.sum(1) * 6, 0)
        for field, values in (("open", self.day_open), ("high", self.day_high), ("low", self.day_low),
                              ("close", self.prev_close)):
            out[field] = np.where(quote, values[rows], 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["change"] = np.where(quote & (out["close"] != 0), (price - out["close"]) * 100 / out["close"], 0)
        full = modes == MODE_FULL
        ft = full & tradable
        out["last_trade_time"] = np.where(ft, self.last_trade_ts[rows], 0)
        out["oi"] = np.where(ft, self.oi[rows], 0)
        out["oi_day_high"] = np.where(ft, self.oi_high[rows], 0)
        out["oi_day_low"] = np.where(ft, self.oi_low[rows], 0)
        out["exchange_timestamp"] = np.where(full, int(self.now), 0)
        spread = 1 + self.rng.integers(0, 3, n)
        level = np.arange(5)
        bid0 = np.maximum(fair - TICK_SIZE * np.ceil(spread / 2), 0.0)
        bids = np.maximum(bid0[:, None] - TICK_SIZE * level, 0.0)
        asks = (bid0 + TICK_SIZE * spread)[:, None] + TICK_SIZE * level
        ftc = ft[:, None]
        out["bid_price"] = np.where(ftc & (bids > 0), np.round(bids, 2), 0)
        out["ask_price"] = np.where(ftc, np.round(asks, 2), 0)
        out["bid_quantity"] = np.where(ftc & (bids > 0), depth_qty, 0)
        out["ask_quantity"] = np.where(ftc, self.lot[rows, None] * self.rng.integers(1, 40, (n, 5)), 0)
        out["bid_orders"] = np.where(ftc & (bids > 0), self.rng.integers(1, 12, (n, 5)), 0)
        out["ask_orders"] = np.where(ftc, self.rng.integers(1, 12, (n, 5)), 0)
        return out


def session_start_ts(day: dt.date) -> float:
    """Epoch seconds of 09:15 IST on ``day`` (the NSE open)."""
    return dt.datetime.combine(day, dt.time(9, 15), IST).timestamp()


__all__ = [
    "DEFAULT_UNDERLYINGS", "Market", "UnderlyingSpec", "build_instruments", "monthly_expiries",
    "option_expiries", "session_start_ts", "to_tick",
]
