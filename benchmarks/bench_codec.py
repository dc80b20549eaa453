"""Benchmark: pipeline.feed.kite_codec.decode_frame vs kiteconnect's KiteTicker._parse_binary.

Run from the repository root::

    .venv/bin/python benchmarks/bench_codec.py            # table
    .venv/bin/python benchmarks/bench_codec.py --json     # one JSON object

Frames (built with ``encode_frame`` from deterministic pseudo-random ticks):

- ``full_1``: a single full packet; ``index_plus_2_full``: index full + 2
  full packets (tiny frames take the struct-based scalar path)
- ``full_100`` / ``full_500``: 100 / 500 tradable full-mode (184 B) packets
- ``quote_500``: 500 tradable quote-mode (44 B) packets
- ``mixed_index_fut_opt``: NIFTY 50 index full (32 B) + future full + 200
  option full packets (a typical connection: index, future, options)
- ``mixed_index_fut_40opt``: the same mix at a live frame's size: index + future + 40
  options (42 packets), as the ingestor receives them per connection and step
- ``mixed_interleaved``: 300 packets cycling ltp/quote/full/index (worst case
  for the run-based header walk)

For each frame: packets/s of ``decode_frame``, ``FrameDecoder.decode`` and of
``KiteTicker._parse_binary`` (best of several repeats), and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from pipeline.feed.kite_codec import FrameDecoder, decode_frame
from pipeline.feed.kite_encode import encode_frame
from pipeline.feed.kite_wire import KITE_TICK_DTYPE, MODE_FULL, MODE_LTP, MODE_QUOTE

NIFTY50 = 256265


def make_ticks(n: int, modes: list[tuple[bool, int]], seed: int = 7, with_index: bool = False) -> np.ndarray:
    """n rows cycling through ``modes`` [(tradable, mode)], realistic-looking values."""
    rng = np.random.default_rng(seed)
    t = np.zeros(n, dtype=KITE_TICK_DTYPE)
    exch = rng.integers(10_000, 2**24 - 1, n)
    tradable = np.array([modes[i % len(modes)][0] for i in range(n)])
    t["mode"] = [modes[i % len(modes)][1] for i in range(n)]
    t["instrument_token"] = np.where(tradable, (exch << 8) | 2, (exch << 8) | 9)
    if with_index:
        t["instrument_token"][0] = NIFTY50
    t["tradable"] = tradable
    last = rng.integers(5, 2_500_000, n)
    t["last_price"] = last / 100
    quote = t["mode"] >= MODE_QUOTE
    for name in ("open", "high", "low", "close"):
        t[name] = np.where(quote, (last + rng.integers(-500, 500, n)).clip(1) / 100, 0.0)
    t["change"] = np.where(quote, (t["last_price"] - t["close"]) * 100 / np.where(quote, t["close"], 1), 0.0)
    trad_q = quote & tradable
    full = t["mode"] == MODE_FULL
    for name in ("last_traded_quantity", "volume_traded", "total_buy_quantity", "total_sell_quantity"):
        t[name] = np.where(trad_q, rng.integers(0, 10_000_000, n), 0)
    t["average_traded_price"] = np.where(trad_q, last / 100, 0.0)
    t["exchange_timestamp"] = np.where(full, 1_795_000_000 + np.arange(n), 0)
    tf = full & tradable
    t["last_trade_time"] = np.where(tf, 1_795_000_000, 0)
    for name in ("oi", "oi_day_high", "oi_day_low"):
        t[name] = np.where(tf, rng.integers(0, 5_000_000, n), 0)
    for side, sign in (("bid", -1), ("ask", 1)):
        steps = np.arange(1, 6)[None, :]
        t[f"{side}_price"] = np.where(tf[:, None], (last[:, None] + sign * 5 * steps) / 100, 0.0)
        t[f"{side}_quantity"] = np.where(tf[:, None], rng.integers(1, 100_000, (n, 5)), 0)
        t[f"{side}_orders"] = np.where(tf[:, None], rng.integers(1, 200, (n, 5)), 0)
    return t


def frames() -> dict[str, bytes]:
    full = [(True, MODE_FULL)]
    mixed = make_ticks(202, full, with_index=True)
    mixed_index = make_ticks(1, [(False, MODE_FULL)], seed=1)
    mixed_index["instrument_token"] = NIFTY50
    mixed[0] = mixed_index[0]
    interleaved = [(True, MODE_LTP), (True, MODE_QUOTE), (True, MODE_FULL), (False, MODE_QUOTE), (False, MODE_FULL)]
    live = make_ticks(42, full, seed=5)
    live[0] = mixed_index[0]
    small = make_ticks(3, full, seed=3)
    small[0] = mixed_index[0]
    return {
        "full_1": encode_frame(make_ticks(1, full)),
        "index_plus_2_full": encode_frame(small),
        "full_100": encode_frame(make_ticks(100, full)),
        "full_500": encode_frame(make_ticks(500, full)),
        "quote_500": encode_frame(make_ticks(500, [(True, MODE_QUOTE)])),
        "mixed_index_fut_opt": encode_frame(mixed),
        "mixed_index_fut_40opt": encode_frame(live),
        "mixed_interleaved": encode_frame(make_ticks(300, interleaved)),
    }


def calibrate(fn, data: bytes, seconds: float) -> int:
    """Calls of ``fn(data)`` that take about ``seconds``."""
    fn(data)
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(data)
        dt = time.perf_counter() - t0
        if dt >= seconds / 4:
            return max(1, int(calls * seconds / max(dt, 1e-9)))
        calls *= 2


def best_times(fns: list, data: bytes, seconds: float, repeats: int) -> list[float]:
    """Best per-call time (s) of each function; batches alternate between the functions
    so that a noisy (shared) machine affects them alike."""
    calls = [calibrate(fn, data, seconds) for fn in fns]
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(calls[i]):
                fn(data)
            best[i] = min(best[i], (time.perf_counter() - t0) / calls[i])
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=0.1, help="time per batch (default 0.1)")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    from kiteconnect import KiteTicker

    kite = KiteTicker("k", "t")
    decoder = FrameDecoder()
    results = {}
    for name, data in frames().items():
        rows = decode_frame(data)
        ref = kite._parse_binary(data)
        assert len(rows) == len(ref) and all(
            abs(r["last_price"] - k["last_price"]) < 1e-9 for r, k in zip(rows, ref))
        n = len(rows)
        t_ours, t_dec, t_kite = best_times([decode_frame, decoder.decode, kite._parse_binary], data,
                                           args.seconds, args.repeats)
        results[name] = {
            "packets": n,
            "bytes": len(data),
            "decode_frame_us": round(t_ours * 1e6, 2),
            "frame_decoder_us": round(t_dec * 1e6, 2),
            "kiteticker_us": round(t_kite * 1e6, 2),
            "decode_frame_packets_per_s": round(n / t_ours),
            "frame_decoder_packets_per_s": round(n / t_dec),
            "kiteticker_packets_per_s": round(n / t_kite),
            "speedup": round(t_kite / t_ours, 1),
        }
    env = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine()}
    if args.json:
        print(json.dumps({"env": env, "frames": results}))
        return 0
    print(f"python {env['python']}, numpy {env['numpy']}, {env['machine']}")
    header = f"{'frame':<22}{'packets':>8}{'decode_frame pkt/s':>20}{'FrameDecoder pkt/s':>20}" \
             f"{'KiteTicker pkt/s':>18}{'speedup':>9}"
    print(header)
    for name, r in results.items():
        print(f"{name:<22}{r['packets']:>8}{r['decode_frame_packets_per_s']:>20,}"
              f"{r['frame_decoder_packets_per_s']:>20,}{r['kiteticker_packets_per_s']:>18,}"
              f"{r['speedup']:>8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
