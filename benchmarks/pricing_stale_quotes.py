"""The stale-quote scenario of the pricing issue, before and after the freshness rules.

Run:  .venv/bin/python benchmarks/pricing_stale_quotes.py

NIFTY's simulator chain, a flat-volatility Black-76 market (15 %, r = 6.5 %):
at 09:25 IST the index is at 24,500 and the ATM call and put trade and are quoted;
by 09:28 the index is at 24,560 and the out-of-the-money options trade (and are quoted)
at the market's prices on the 09:28 forward; the ATM pair has not traded since 09:25.

- before: the rule main used until the freshness rules: the same-expiry future's last price of
  any age, else parity from the last trades of the strike nearest the money (whatever their age),
  else spot carry (``greeks.forward_for_expiry`` fed with last prices, one strike);
- after: ``price_ticks`` (fresh future, else the median parity of fresh mids, else carry).

Printed: the forward each used and the true one, and per option the IV of its last trade
under each, against the market's 15 %.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

import greeks
from pipeline.core.price_book import PriceBook
from pipeline.core.pricing import PricingContext, price_ticks
from pipeline.feed.instruments import select_universe
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import FORWARD_SOURCES, MODE_FULL, TICK_DTYPE
from sim.market import DEFAULT_UNDERLYINGS, build_instruments, session_start_ts

DAY, R, VOL = dt.date(2026, 12, 28), 0.065, 0.15  # Monday; Tuesday 29th is a weekly and the monthly expiry
T0 = int(session_start_ts(DAY)) + 600
T1 = T0 + 180
SPOT0, SPOT1 = 24500.0, 24560.0
OTM = [(24600.0, True), (24700.0, True), (24800.0, True), (24900.0, True),
       (24400.0, False), (24300.0, False), (24200.0, False), (24100.0, False)]


def main() -> None:
    spec = DEFAULT_UNDERLYINGS["NIFTY"]
    index = InstrumentIndex.from_rows(select_universe(build_instruments([spec], DAY, n_expiries=2, strikes_each_side=10),
                                                      ["NIFTY"], 2, 10, today=DAY))
    expiry = int(index.expiry_ts[index.kind == InstrumentKind.FUT][0])
    years = lambda ts: (expiry - ts) / (365 * 86400)  # noqa: E731
    fwd = lambda spot, ts: spot * math.exp(R * years(ts))  # noqa: E731

    def token(kind: InstrumentKind, strike: float = 0.0) -> int:
        mask = (index.kind == kind) & ((index.expiry_ts == expiry) | (kind == InstrumentKind.INDEX))
        if strike:
            mask &= index.strike == strike
        return int(index.tokens[np.flatnonzero(mask)[0]])

    recv = iter(range(1, 10_000))

    def tick(tok: int, ts: int, price: float, quoted: bool = True) -> np.ndarray:
        row = np.zeros(1, TICK_DTYPE)
        row["instrument_token"], row["mode"], row["exchange_ts"], row["recv_ts"] = tok, MODE_FULL, ts, next(recv)
        row["last_price"], row["volume"], row["last_trade_ts"] = round(price, 2), 75, ts
        row["bid"], row["ask"] = (price - 0.05, price + 0.05) if quoted else (np.nan, np.nan)
        return row

    def option(strike: float, is_call: bool, spot: float, ts: int) -> tuple[np.ndarray, float]:
        price = float(greeks.black76_price(fwd(spot, ts), strike, years(ts), R, VOL, is_call))
        kind = InstrumentKind.CALL if is_call else InstrumentKind.PUT
        return tick(token(kind, strike), ts, price), price

    first = [tick(token(InstrumentKind.INDEX), T0, SPOT0)]
    atm_call, c0 = option(24500.0, True, SPOT0, T0)
    atm_put, p0 = option(24500.0, False, SPOT0, T0)
    later = [tick(token(InstrumentKind.INDEX), T1, SPOT1)] + [option(k, c, SPOT1, T1)[0] for k, c in OTM]

    ctx, book = PricingContext.of(index, R), PriceBook(len(index))
    price_ticks(ctx, book, np.concatenate(first + [atm_call, atm_put]))
    after = price_ticks(ctx, book, np.concatenate(later))
    before_f = float(greeks.forward_for_expiry(np.array([years(T1)]), R, strikes=[24500.0], call_prices=[c0],
                                               put_prices=[p0], spot=SPOT1, near=1).forward[0])
    true_f = fwd(SPOT1, T1)
    opt = ~np.isnan(after["forward"])
    print(f"true forward at 09:28: {true_f:,.2f}")
    print(f"before: {before_f:,.2f} (parity of the 09:25 ATM last trades)")
    print(f"after:  {after['forward'][opt][0]:,.2f} ({FORWARD_SOURCES[int(after['forward_source'][opt][0])]})")
    print(f"{'option':>10} {'IV before':>10} {'IV after':>9} {'mid IV':>7}  (market: {VOL:.2%})")
    for row in after[opt]:
        pos = index.positions(np.array([row["instrument_token"]]))[0]
        strike, is_call = float(index.strike[pos]), bool(index.kind[pos] == InstrumentKind.CALL)
        iv_before = float(greeks.implied_vol(row["last_price"], before_f, strike, years(T1), R, is_call))
        print(f"{strike:>8.0f}{'CE' if is_call else 'PE'} {iv_before:>10.2%} {row['iv']:>9.2%} {row['mid_iv']:>7.2%}")


if __name__ == "__main__":
    main()
