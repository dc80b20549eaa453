"""The dashboard's fan-out: routing of Redis messages to viewers, and conflation for a slow viewer (pure)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from sinks.redis.channels import Channels
from sinks.redis.live_fanout import ChainViewer, LiveFanout

pytestmark = pytest.mark.unit


def _tick(token: int, price: float, expiry: str = "2026-12-08", kind: str = "CE") -> dict:
    return {"token": token, "last_price": price, "expiry": expiry, "type": kind, "strike": 24000.0}


async def test_a_slow_viewer_gets_only_the_newest_value_per_instrument_and_counts_the_rest() -> None:
    viewer = ChainViewer("NIFTY", "2026-12-08")
    for price in (1.0, 2.0, 3.0):
        viewer.offer_ticks([_tick(11, price), _tick(12, 10 * price)])
    viewer.offer("chain", {"pcr": 0.9})
    viewer.offer("chain", {"pcr": 1.1})
    update = await asyncio.wait_for(viewer.take(), 1)
    assert sorted((t["token"], t["last_price"]) for t in update["ticks"]) == [(11, 3.0), (12, 30.0)]
    assert update["chain"] == {"pcr": 1.1} and update["vix"] is None
    assert viewer.conflated == 5  # 2 + 2 ticks and 1 chain row replaced before they were sent
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(viewer.take(), 0.05)  # nothing pending: take waits


async def test_messages_reach_only_the_viewers_of_their_chain() -> None:
    fanout = LiveFanout(redis=None, channels=Channels())
    near, far, other = ChainViewer("NIFTY", "2026-12-08"), ChainViewer("NIFTY", "2026-12-29"), ChainViewer("BANKNIFTY", "2026-12-08")
    for viewer in (near, far, other):
        fanout.add(viewer)
    ticks = [_tick(1, 5.0), _tick(2, 6.0, expiry="2026-12-29"), _tick(3, 24000.0, expiry=None, kind="INDEX")]
    fanout.route("ticks:NIFTY", orjson.dumps({"ticks": ticks}))
    fanout.route("chain:NIFTY:2026-12-08", orjson.dumps({"interval_s": 60, "pcr": 1.0}))
    fanout.route("chain:NIFTY:2026-12-08", orjson.dumps({"interval_s": 300, "pcr": 2.0}))  # only 1m rows are live
    fanout.route("vix:NIFTY", orjson.dumps({"interval_s": 60, "vix": 13.5}))
    fanout.route("ticks:NIFTY", b"not json")
    got_near, got_far = await near.take(), await far.take()
    assert sorted(t["token"] for t in got_near["ticks"]) == [1, 3] and got_near["chain"] == {"interval_s": 60, "pcr": 1.0}
    assert sorted(t["token"] for t in got_far["ticks"]) == [2, 3] and got_far["chain"] is None
    assert got_near["vix"]["vix"] == got_far["vix"]["vix"] == 13.5
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(other.take(), 0.05)
    assert fanout.bad_messages == 1 and fanout.messages == 5
    fanout.remove(near)
    assert near.closed and near not in fanout.viewers
