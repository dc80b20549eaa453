"""Open-interest rollups: per-strike and per-expiry (chain) rows from closed option bars.

Pure core: numpy only, no I/O, no wall clock. Time enters only through the
bars' ``bucket`` (event time) and ``last_recv_ts``.

Input: closed (or late-corrected) bars of one interval (``pipeline.records.bars.BAR_DTYPE``).
Only option bars (``InstrumentKind.CALL``/``InstrumentKind.PUT`` in the instrument index, with an
expiry and a strike) of the rollup's underlying and interval are used; every
other bar (index, future, unknown token, other underlying, other interval) is
ignored.

Units: ``bucket`` epoch seconds (start of the interval, as in the bars);
``interval_s`` seconds; ``last_recv_ts`` epoch microseconds; prices and
strikes in rupees; OI and volume in contracts as the exchange reports them
(shares for NSE F&O); ``iv`` annualised (0.15 = 15 %); ``delta`` per rupee of
the forward.

Carry-forward: the rollup keeps the last known bar of every option
instrument. At bucket ``b`` an instrument's *state* is its newest bar with
``bucket <= b``; an option that did not trade in ``b`` still counts with its
last known close, oi, iv and delta, and with volume 0 and oi_change 0.

Strike row (``STRIKE_BAR_DTYPE``, one per (expiry, strike, bucket) with at
least one side known at ``b``; prefix ``call_``/``put_``):

- close, oi (at the bar's close), iv, delta, mid_iv: of the side's state at ``b``;
- volume: the side's bar volume in ``b`` (0 when it did not trade in ``b``);
- oi_change: oi at this bucket's close minus oi at the instrument's previous
  bucket close known to the rollup; for the instrument's first known bar:
  ``oi - oi_open``; 0 when it did not trade in ``b``;
- a side with no known bar: NaN floats and ``MISSING_INT`` ints (NULL in SQL,
  null in JSON; see :func:`row_dicts`);
- forward: the expiry's forward at ``b`` (below), the same on every strike row.

Chain row (``CHAIN_BAR_DTYPE``, one per (expiry, bucket)):

- forward: median of ``forward`` over the expiry's option bars *of bucket b*
  (NaN values ignored; NaN when none);
- total_call_oi / total_put_oi: sums of the states' oi;
- pcr = total_put_oi / total_call_oi; NaN (NULL) when total_call_oi is 0;
- max_pain: the listed strike ``K`` (strikes with a known bar in the expiry)
  minimising the total intrinsic value paid to holders at expiry,
  ``sum_i call_oi_i * max(K - K_i, 0) + put_oi_i * max(K_i - K, 0)``; ties go
  to the lowest strike; NaN when the expiry's total OI is 0;
- atm_strike: the listed strike nearest the forward (ties: lowest); NaN when
  the forward is NaN;
- atm_iv: :func:`atm_iv` at the forward, from sides that are fresh in ``b``
  (ticked in ``b``, ``stale`` 0 at their close), each side's ``mid_iv`` where it has
  one, else its ``iv``: a carried-forward or stale IV never enters it;
- strikes_listed: distinct strikes the instrument index lists for the expiry;
  strikes_covered: strikes whose call and put OI are both known (PCR, max pain and
  the totals are over the known ones: fewer covered than listed = partial);
- call_volume / put_volume: sums of the bucket's option bar volumes.

Versioning: a row's ``last_recv_ts`` is the max ``last_recv_ts`` of the bars
that fed it (the states, and for instruments that traded in ``b`` also their
previous bar, which fixes oi_change). A late-corrected bar of bucket ``b``
recomputes ``b`` and every later bucket of its expiry it feeds (through
carry-forward, or the oi_change of the instrument's next bar); all those rows
carry the correction's newer ``last_recv_ts``, so the sinks' newest-wins
upserts keep them.

Restart (seed and warm-up): a restarted worker replays the ticks from the
first unacked record, which can start in the middle of an already-closed
bucket, and the rollup has lost its carry-forward state. Two calls, both
before the first ``update``, make the rows it emits from then on the rows an
uninterrupted rollup would have emitted:

- ``start(first_tick_ts)``: the exchange time (epoch seconds) of the first
  replayed tick. Its bucket ``w`` is the *start bucket*. When ``first_tick_ts``
  is exactly ``w`` the replay holds all of ``w`` and nothing is suppressed;
  otherwise ``w`` is a *warm-up* bucket whose bars are partial (the ticks
  before ``first_tick_ts`` were processed before the restart), and rows of
  ``w`` are not emitted. Incoming bars of buckets before ``w`` (a late tick
  of a bucket older than the replay: a one-tick partial bar) are dropped.
  ``suppressed`` counts the (expiry, bucket) rollups not emitted for either
  reason (each one a chain row and its strike rows). The stored rows of those
  buckets stay as they are.
- ``seed(bars, index)``: known closed bars (``BAR_DTYPE``; per option the
  newest stored bar with ``bucket < seed_before``) go into the carry-forward
  history without producing rows. ``seed_before`` is ``w``, or ``w +
  interval_s`` for a warm-up bucket: the stored complete bar of the warm-up
  bucket is the state of an option that traded in ``w`` only before the
  replay started. A replayed partial bar of ``w`` then replaces it (equal
  ``last_recv_ts``: the same newest tick), which changes nothing later rows
  use: close, oi, iv and delta are those of the newest tick, and the partial
  volume, oi_open and forward only feed the suppressed rows of ``w``.
  A seed with no bar of the warm-up bucket says nothing of ``w`` was stored:
  no worker saw its earlier ticks (a first start, e.g. ticks beginning a few
  seconds into the session), so ``w`` is complete and its rows are emitted.

Without ``start`` nothing is suppressed or dropped (a rollup that sees the
stream from its beginning); ``start`` without ``seed`` (the stored bars could
not be read) suppresses the warm-up bucket.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.chain_analytics import atm_iv, atm_strike, chain_analytics, fresh_ivs
from pipeline.core.chain_quality import QUALITY_FIELDS, QualityLedger
from pipeline.core.state import field, optional_int
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.rollups import CHAIN_BAR_DTYPE, MISSING_INT, STRIKE_BAR_DTYPE
from pipeline.records.time_units import SECONDS_PER_YEAR

# What the rollup keeps per option bar (self-contained: no index needed later).
_HIST_DTYPE = np.dtype(
    [
        ("token", "<u4"), ("bucket", "<i8"), ("kind", "u1"), ("strike", "<f8"), ("expiry_ts", "<i8"),
        ("close", "<f8"), ("volume", "<i8"), ("oi", "<i8"), ("oi_open", "<i8"), ("iv", "<f8"),
        ("delta", "<f8"), ("forward", "<f8"), ("last_recv_ts", "<i8"), ("mid_iv", "<f8"), ("stale", "<f8"),
        ("gamma", "<f8"),
    ]
)
_NO_TS = np.iinfo(np.int64).min


# --------------------------------------------------------------------------
# Pure formulas
# --------------------------------------------------------------------------


def max_pain(strikes: np.ndarray, call_oi: np.ndarray, put_oi: np.ndarray) -> float:
    """The strike of ``strikes`` (ascending) minimising the total payout to holders at expiry.

    ``payout(K) = sum_i call_oi_i * max(K - K_i, 0) + put_oi_i * max(K_i - K, 0)``, evaluated at every
    listed strike at once (an n x n matrix); ties -> lowest strike; NaN when there are no strikes or the
    total OI is 0.
    """
    strikes = np.asarray(strikes, np.float64)
    call_oi = np.asarray(call_oi, np.float64)
    put_oi = np.asarray(put_oi, np.float64)
    if len(strikes) == 0 or (call_oi.sum() + put_oi.sum()) == 0:
        return float("nan")
    diff = strikes[:, None] - strikes[None, :]  # [candidate K, listed K_i]
    payout = np.maximum(diff, 0.0) @ call_oi + np.maximum(-diff, 0.0) @ put_oi
    return float(strikes[int(np.argmin(payout))])  # argmin: first (lowest) strike on ties


def pcr(total_put_oi: int, total_call_oi: int) -> float:
    """Put-call ratio of open interest; NaN when there is no call OI."""
    return float(total_put_oi) / float(total_call_oi) if total_call_oi else float("nan")


def listed_strikes(index: InstrumentIndex, underlying: str | None, expiry_ts: int) -> int:
    """How many distinct strikes ``index`` lists for the options of (``underlying``, ``expiry_ts``)."""
    m = np.isin(index.kind, (InstrumentKind.CALL, InstrumentKind.PUT)) & (index.expiry_ts == expiry_ts)
    if underlying is not None:
        m &= index.underlying == underlying
    return len(np.unique(index.strike[m]))


def _nanmedian(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(np.median(values)) if len(values) else float("nan")


# --------------------------------------------------------------------------
# The rollup
# --------------------------------------------------------------------------


class OIRollup:
    """Strike and chain rollups of one underlying at one interval (see the module docstring).

    ``update(bars, index)`` takes closed or late-corrected bars (any mix; only this
    underlying's option bars of ``interval_s`` are used) and returns ``(strike_rows,
    chain_rows)`` for every (expiry, bucket) touched, sorted by (expiry, bucket[, strike]).
    After a restart, ``start(first_tick_ts)`` and ``seed(bars, index)`` come first
    (module docstring, "Restart"); ``suppressed`` counts the rollups ``start`` held back.

    Memory: the bars of the last ``retain_s`` seconds of buckets (relative to the newest
    bucket seen) plus, per instrument, its newest older bar (the carry-forward and
    oi_change baseline). A bar older than that window is still rolled up, from what is
    retained. Give ``retain_s`` at least the bars' late window plus two intervals.
    """

    def __init__(self, underlying: str | None, interval_s: int, *, retain_s: float = 3600.0) -> None:
        if int(interval_s) != interval_s or interval_s <= 0:
            raise ValueError(f"interval_s must be a positive whole number of seconds, got {interval_s!r}")
        self.underlying = underlying
        self.interval_s = int(interval_s)
        self.retain_s = float(retain_s)
        self._hist = np.empty(0, _HIST_DTYPE)  # sorted by (token, bucket), unique
        self._expiry_name: dict[int, str] = {}
        self._listed: dict[int, int] = {}  # expiry_ts -> strikes the index lists (both sides or one)
        self._newest_bucket: int | None = None
        self._start_bucket: int | None = None  # bars older than this are dropped (set by start())
        self._first_complete: int | None = None  # rows older than this are suppressed (set by start())
        self._updated = False
        self._seeded = False
        self.seed_before: int | None = None  # seed() wants the newest bar per option with bucket < this
        self.suppressed = 0  # (expiry, bucket) rollups not emitted: warm-up bucket or older (see start())

    def __len__(self) -> int:
        """Bars held."""
        return len(self._hist)

    def to_state(self) -> dict:
        """Explicit state (``pipeline.core.state``): the bars held, the expiries' names and listed strikes, the
        start and warm-up marks."""
        names = sorted(self._expiry_name)
        listed = sorted(self._listed)
        return {"hist": self._hist,
                "expiry_ts": np.array(names, np.int64), "expiry_name": np.array([self._expiry_name[e] for e in names], "U16"),
                "listed_ts": np.array(listed, np.int64), "listed": np.array([self._listed[e] for e in listed], np.int64),
                "newest_bucket": self._newest_bucket, "start_bucket": self._start_bucket,
                "first_complete": self._first_complete, "updated": self._updated, "seeded": self._seeded,
                "seed_before": self.seed_before, "suppressed": self.suppressed}

    def restore(self, state: dict) -> None:
        self._hist = np.asarray(field(state, "hist")).astype(_HIST_DTYPE)
        self._expiry_name = dict(zip(np.asarray(field(state, "expiry_ts")).tolist(),
                                     np.asarray(field(state, "expiry_name")).tolist(), strict=True))
        self._listed = dict(zip(np.asarray(field(state, "listed_ts")).tolist(),
                                np.asarray(field(state, "listed")).tolist(), strict=True))
        for name in ("newest_bucket", "start_bucket", "first_complete"):
            setattr(self, f"_{name}", optional_int(field(state, name)))
        self._updated, self._seeded = bool(field(state, "updated")), bool(field(state, "seeded"))
        self.seed_before = optional_int(field(state, "seed_before"))
        self.suppressed = int(field(state, "suppressed"))

    def start(self, first_tick_ts: int) -> int:
        """Tell the rollup the exchange time (epoch s) of the first tick of the stream it will see
        (module docstring, "Restart"); before the first ``update``. Returns ``seed_before``."""
        if self._updated:
            raise RuntimeError("OIRollup.start() must come before the first update()")
        first_tick_ts = int(first_tick_ts)
        start_bucket = first_tick_ts // self.interval_s * self.interval_s
        warm_up = first_tick_ts != start_bucket
        self._start_bucket = start_bucket
        self._first_complete = start_bucket + self.interval_s if warm_up else start_bucket
        self.seed_before = self._first_complete
        return self.seed_before

    def seed(self, bars: np.ndarray, index: InstrumentIndex) -> None:
        """Put known closed bars (``BAR_DTYPE``) into the carry-forward history without producing rows
        (module docstring, "Restart"); before the first ``update``. Filtered as ``update`` filters."""
        self._seeded = True
        new = self._option_rows(bars, index)
        if len(new):
            self._hist = _merge(self._hist, new)

    def update(self, bars: np.ndarray, index: InstrumentIndex,
               quality: QualityLedger | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The rows of every (expiry, bucket) the bars touch; with a ``quality`` ledger, each chain row carries
        the quote-quality counts of its expiry at the close that ends it (NULL without one)."""
        if not self._updated:
            self._updated = True
            if self._seeded and self._start_bucket is not None and not np.any(self._hist["bucket"] == self._start_bucket):
                self._first_complete = self._start_bucket  # nothing of the first bucket was stored: it is complete
        new = self._option_rows(bars, index)
        if self._start_bucket is not None and len(new):
            new = new[new["bucket"] >= self._start_bucket]
        if len(new) == 0:
            return np.empty(0, STRIKE_BAR_DTYPE), np.empty(0, CHAIN_BAR_DTYPE)
        old = self._hist
        self._hist = _merge(old, new)
        pairs = self._affected(new, old)
        if self._first_complete is not None:
            kept = [p for p in pairs if p[1] >= self._first_complete]
            self.suppressed += len(pairs) - len(kept)
            pairs = kept
        newest = int(new["bucket"].max())
        self._newest_bucket = newest if self._newest_bucket is None else max(self._newest_bucket, newest)
        if not pairs:
            self._prune()
            return np.empty(0, STRIKE_BAR_DTYPE), np.empty(0, CHAIN_BAR_DTYPE)
        strike_parts, chain_parts = [], []
        for expiry_ts, bucket in pairs:
            strike_rows, chain_row = self._rows(expiry_ts, bucket)
            if quality is not None:
                quality.fill(chain_row, expiry_ts)
            strike_parts.append(strike_rows)
            chain_parts.append(chain_row)
        self._prune()
        return np.concatenate(strike_parts), np.concatenate(chain_parts)

    # ------------------------------------------------------------- internals

    def _option_rows(self, bars: np.ndarray, index: InstrumentIndex) -> np.ndarray:
        if len(bars) == 0 or len(index) == 0:
            return np.empty(0, _HIST_DTYPE)
        pos = index.positions(bars["instrument_token"])
        safe = np.where(pos >= 0, pos, 0)
        kind = index.kind[safe]
        ok = (pos >= 0) & (bars["interval_s"] == self.interval_s) & ((kind == InstrumentKind.CALL) | (kind == InstrumentKind.PUT))
        ok &= (index.expiry_ts[safe] > 0) & np.isfinite(index.strike[safe])
        if self.underlying is not None:
            ok &= index.underlying[safe] == self.underlying
        sel = np.flatnonzero(ok)
        p = safe[sel]
        b = bars[sel]
        out = np.empty(len(sel), _HIST_DTYPE)
        out["token"] = b["instrument_token"]
        out["bucket"] = b["bucket"]
        out["kind"] = index.kind[p]
        out["strike"] = index.strike[p]
        out["expiry_ts"] = index.expiry_ts[p]
        for name in ("close", "volume", "oi", "oi_open", "iv", "delta", "forward", "last_recv_ts", "mid_iv", "stale",
                     "gamma"):
            out[name] = b[name]
        ets, first = np.unique(out["expiry_ts"], return_index=True)
        for e, name in zip(ets.tolist(), index.expiry[p[first]].tolist(), strict=True):
            self._expiry_name.setdefault(e, name)
            self._listed[e] = listed_strikes(index, self.underlying, e)
        return out

    def _affected(self, new: np.ndarray, old: np.ndarray) -> list[tuple[int, int]]:
        """(expiry_ts, bucket) pairs to (re)compute, sorted: the new bars' own buckets, plus, for a bar
        older than already rolled-up buckets of its expiry, those later buckets up to and including the
        instrument's next bar (which it feeds through carry-forward or oi_change)."""
        pairs = set(zip(new["expiry_ts"].tolist(), new["bucket"].tolist(), strict=True))
        if len(old):
            for ets in np.unique(new["expiry_ts"]).tolist():
                done = np.unique(old["bucket"][old["expiry_ts"] == ets])
                if len(done) == 0:
                    continue
                mine = new[(new["expiry_ts"] == ets) & (new["bucket"] < done[-1])]
                for token, bucket in zip(mine["token"].tolist(), mine["bucket"].tolist(), strict=True):
                    later = self._hist["bucket"][(self._hist["token"] == token) & (self._hist["bucket"] > bucket)]
                    upto = later.min() if len(later) else done[-1]
                    pairs.update((ets, int(x)) for x in done[(done > bucket) & (done <= upto)].tolist())
        return sorted(pairs)

    def _rows(self, expiry_ts: int, bucket: int) -> tuple[np.ndarray, np.ndarray]:
        hist = self._hist
        h = hist[(hist["expiry_ts"] == expiry_ts) & (hist["bucket"] <= bucket)]  # sorted by (token, bucket)
        n = len(h)
        last = np.ones(n, bool)
        last[:-1] = h["token"][1:] != h["token"][:-1]
        li = np.flatnonzero(last)
        cur = h[li]
        has_prev = np.zeros(len(li), bool)
        has_prev[li > 0] = h["token"][li[li > 0] - 1] == cur["token"][li > 0]
        prev_i = np.where(has_prev, li - 1, 0)
        traded = cur["bucket"] == bucket
        prev_oi = np.where(has_prev, h["oi"][prev_i], cur["oi_open"])
        oi_change = np.where(traded, cur["oi"] - prev_oi, 0)
        volume = np.where(traded, cur["volume"], 0)
        fed_ts = np.maximum(cur["last_recv_ts"], np.where(traded & has_prev, h["last_recv_ts"][prev_i], _NO_TS))
        forward = _nanmedian(h["forward"][h["bucket"] == bucket])

        strikes, inv = np.unique(cur["strike"], return_inverse=True)
        rows = np.zeros(len(strikes), STRIKE_BAR_DTYPE)
        rows["strike"] = strikes
        rows["forward"] = forward
        rows["last_recv_ts"] = _NO_TS
        np.maximum.at(rows["last_recv_ts"], inv, fed_ts)
        side_oi = {}
        for side, kind in (("call", InstrumentKind.CALL), ("put", InstrumentKind.PUT)):
            m = cur["kind"] == kind
            at = inv[m]
            for name in ("close", "iv", "delta", "mid_iv"):
                rows[f"{side}_{name}"] = np.nan
                rows[f"{side}_{name}"][at] = cur[name][m]
            for name, values in (("volume", volume), ("oi", cur["oi"]), ("oi_change", oi_change)):
                rows[f"{side}_{name}"] = MISSING_INT
                rows[f"{side}_{name}"][at] = values[m]
            side_oi[side] = np.where(rows[f"{side}_oi"] == MISSING_INT, 0, rows[f"{side}_oi"])

        chain = _new_chain_row()
        c = chain[0:1]
        c["total_call_oi"] = total_call = int(side_oi["call"].sum())
        c["total_put_oi"] = total_put = int(side_oi["put"].sum())
        c["pcr"] = pcr(total_put, total_call)
        c["max_pain"] = max_pain(strikes, side_oi["call"], side_oi["put"])
        c["forward"] = forward
        c["atm_strike"] = atm_strike(strikes, forward)
        fresh = fresh_ivs(cur, traded, inv, len(strikes))
        c["atm_iv"] = atm_iv(strikes, forward, *fresh)
        prev_close = np.where(traded & has_prev, h["close"][prev_i], np.nan)
        chain_analytics(rows, c, cur, (traded & has_prev, prev_close, prev_oi), inv, fresh,
                         (expiry_ts - bucket) / SECONDS_PER_YEAR)
        c["strikes_listed"] = self._listed.get(expiry_ts, 0)
        c["strikes_covered"] = int(((rows["call_oi"] != MISSING_INT) & (rows["put_oi"] != MISSING_INT)).sum())
        c["call_volume"] = int(volume[cur["kind"] == InstrumentKind.CALL].sum())
        c["put_volume"] = int(volume[cur["kind"] == InstrumentKind.PUT].sum())
        c["last_recv_ts"] = int(fed_ts.max())
        for out in (rows, chain):
            out["underlying"] = (self.underlying or "").encode()
            out["expiry"] = self._expiry_name.get(expiry_ts, "").encode()
            out["interval_s"] = self.interval_s
            out["bucket"] = bucket
        return rows, chain

    def _prune(self) -> None:
        """Drop bars older than ``retain_s`` except each instrument's newest one (its baseline)."""
        if self._newest_bucket is None or not len(self._hist):
            return
        h = self._hist
        old = h["bucket"] < self._newest_bucket - self.retain_s
        if not old.any():
            return
        last = np.ones(len(h), bool)
        last[:-1] = h["token"][1:] != h["token"][:-1]
        # an old bar is kept when it is its instrument's newest old bar
        next_is_old_same = np.zeros(len(h), bool)
        next_is_old_same[:-1] = ~last[:-1] & old[1:]
        self._hist = h[~(old & next_is_old_same)]


def _new_chain_row() -> np.ndarray:
    """One zeroed chain row; the quality counts NULL: they come from the quotes at the close, not from the bars
    (``pipeline.core.chain_quality``, filled in by the processor)."""
    chain = np.zeros(1, CHAIN_BAR_DTYPE)
    for name in QUALITY_FIELDS:
        chain[name] = MISSING_INT
    return chain


def _merge(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Union sorted by (token, bucket); per (token, bucket) the newest ``last_recv_ts`` wins (a tie: the new bar)."""
    both = np.concatenate([old, new]) if len(old) else new
    order = np.lexsort((both["last_recv_ts"], both["bucket"], both["token"]))  # stable: new after old on ties
    both = both[order]
    keep = np.ones(len(both), bool)
    keep[:-1] = (both["token"][1:] != both["token"][:-1]) | (both["bucket"][1:] != both["bucket"][:-1])
    return both[keep]


__all__ = ["OIRollup", "listed_strikes", "max_pain", "pcr"]
