"""RedisPublisher / ConflatingPublisher against the real Redis, read back by a real subscriber."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import redis.asyncio as aioredis
import sink_helpers as h

from pipeline.commands.local_services import free_port
from pipeline.records.rollups import CHAIN_BAR_DTYPE
from pipeline.runtime.clock import ManualClock
from sinks.redis.conflation import ConflatingPublisher
from sinks.redis.publisher import RedisPublisher

pytestmark = pytest.mark.integration


def _strict_loads(data):
    def reject(token):
        raise ValueError(f"invalid JSON constant {token}")

    return json.loads(data, parse_constant=reject)


@pytest.fixture
async def redis(redis_url, redis_prefix):
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def subscriber(redis_url):
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        yield pubsub
    finally:
        await pubsub.aclose()
        await client.aclose()


async def _subscribe(pubsub, *channels):
    await pubsub.subscribe(*channels)
    for _ in channels:  # consume the subscribe confirmations
        msg = await pubsub.get_message(timeout=2.0)
        assert msg and msg["type"] == "subscribe"


async def _messages(pubsub, count: int, timeout: float = 5.0) -> list[tuple[str, dict]]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg and msg["type"] == "message":
            out.append((msg["channel"].decode(), _strict_loads(msg["data"])))
    return out


async def _no_more(pubsub, wait: float = 0.3) -> bool:
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
    return msg is None


async def test_publish_ticks_subscriber_gets_valid_json_and_snapshot(redis, subscriber, redis_prefix):
    pub = RedisPublisher(redis, prefix=redis_prefix)
    channel = f"{redis_prefix}ticks:NIFTY"
    await _subscribe(subscriber, channel)
    assert await pub.publish_ticks("NIFTY", h.ticks(), h.index()) == 4
    [(got_channel, payload)] = await _messages(subscriber, 1)
    assert got_channel == channel and payload["underlying"] == "NIFTY"
    by_token = {t["token"]: t for t in payload["ticks"]}
    assert set(by_token) == {h.SPOT, h.FUT, h.CALL, h.PUT}
    assert by_token[h.CALL]["iv"] == 0.14 and by_token[h.CALL]["ask"] is None and by_token[h.CALL]["type"] == "CE"
    snapshot = await redis.hgetall(f"{redis_prefix}snapshot:NIFTY:2030-01-31")
    assert {int(k) for k in snapshot} == {h.FUT, h.CALL, h.PUT}
    assert _strict_loads(snapshot[str(h.CALL).encode()])["last_price"] == 102.0
    spot = await redis.hgetall(f"{redis_prefix}snapshot:NIFTY:spot")
    assert {int(k) for k in spot} == {h.SPOT}
    assert 0 < await redis.ttl(f"{redis_prefix}snapshot:NIFTY:spot")


async def test_publish_ticks_snapshot_keeps_latest(redis, redis_prefix):
    pub = RedisPublisher(redis, prefix=redis_prefix)
    await pub.publish_ticks("NIFTY", h.ticks(tokens=(h.CALL,), price=100.0), h.index())
    await pub.publish_ticks("NIFTY", h.ticks(tokens=(h.CALL,), recv_start=1_900_000_000_000_500, price=150.0),
                            h.index())
    value = await redis.hget(f"{redis_prefix}snapshot:NIFTY:2030-01-31", str(h.CALL))
    assert _strict_loads(value)["last_price"] == 150.0


async def test_publish_bars_one_message_per_timeframe(redis, subscriber, redis_prefix):
    pub = RedisPublisher(redis, prefix=redis_prefix)
    await _subscribe(subscriber, f"{redis_prefix}bars:1m:NIFTY", f"{redis_prefix}bars:5m:NIFTY")
    bars = np.concatenate([h.bars(60, tokens=(h.CALL, h.PUT)), h.bars(300)])
    bars["vwap"][1] = np.nan
    assert await pub.publish_bars("NIFTY", bars, h.index()) == 3
    got = dict(await _messages(subscriber, 2))
    assert len(got[f"{redis_prefix}bars:1m:NIFTY"]["bars"]) == 2
    assert got[f"{redis_prefix}bars:1m:NIFTY"]["bars"][1]["vwap"] is None
    assert got[f"{redis_prefix}bars:5m:NIFTY"]["timeframe"] == "5m"


async def test_publish_chains_nan_values_are_null_in_valid_json(redis, subscriber, redis_prefix):
    pub = RedisPublisher(redis, prefix=redis_prefix)
    channel = f"{redis_prefix}chain:NIFTY:2030-01-31"
    await _subscribe(subscriber, channel)
    row = np.zeros(1, CHAIN_BAR_DTYPE)
    row["underlying"], row["expiry"], row["interval_s"], row["bucket"] = b"NIFTY", b"2030-01-31", 60, 1_900_000_020
    row["pcr"], row["max_pain"], row["gex"] = np.nan, 22000.0, np.inf
    assert await pub.publish_chains("NIFTY", row) == 1
    [(got, payload)] = await _messages(subscriber, 1)
    assert got == channel
    assert payload["pcr"] is None and payload["max_pain"] == 22000.0 and payload["gex"] is None


async def test_conflating_offers_before_start_conflated_to_latest(redis, subscriber, redis_prefix):
    conflating = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix), conflate_above=0)
    await _subscribe(subscriber, f"{redis_prefix}ticks:NIFTY")
    for i in range(5):  # Redis "slow": nothing published yet
        conflating.offer_ticks("NIFTY", h.ticks(recv_start=1_900_000_000_000_000 + 10 * i, price=100.0 + i), h.index())
    assert conflating.conflated == 16 and conflating.pending_ticks == 4
    await conflating.start()
    try:
        [(_, payload)] = await _messages(subscriber, 1)
    finally:
        await conflating.stop()
    assert len(payload["ticks"]) == 4
    assert {t["token"]: t["last_price"] for t in payload["ticks"]}[h.CALL] == 106.0  # 104 + position 2
    assert await _no_more(subscriber)


async def test_offers_while_a_publish_is_in_flight_keep_every_tick_below_the_bound(redis, subscriber,
                                                                                   redis_prefix):
    conflating = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix), conflate_above=12)
    await _subscribe(subscriber, f"{redis_prefix}ticks:NIFTY")
    for i in range(4):  # 3 batches of 4 fit under the bound; the 4th makes 16: conflated to the latest per instrument
        conflating.offer_ticks("NIFTY", h.ticks(recv_start=1_900_000_000_000_000 + 10 * i, price=100.0 + i), h.index())
        if i == 2:
            assert conflating.conflated == 0 and conflating.pending_ticks == 12
    assert conflating.conflated == 12 and conflating.pending_ticks == 4
    for i in range(4, 6):
        conflating.offer_ticks("NIFTY", h.ticks(recv_start=1_900_000_000_000_000 + 10 * i, price=100.0 + i), h.index())
    assert conflating.conflated == 12 and conflating.pending_ticks == 12
    await conflating.start()
    try:
        [(_, payload)] = await _messages(subscriber, 1)
    finally:
        await conflating.stop()
    recv = [t["recv_ts"] for t in payload["ticks"]]
    assert len(recv) == 12 and recv == sorted(recv)  # every tick, in receive order
    assert await _no_more(subscriber)


class BlockingPublisher(RedisPublisher):
    """Waits for ``release`` before each tick publish (the conflating front's one call per round trip): a Redis
    that is slower than the feed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def publish_tick_batches(self, batches):
        self.entered.set()
        await self.release.wait()
        return await super().publish_tick_batches(batches)


async def test_conflating_blocked_redis_conflates_and_counts(redis, subscriber, redis_prefix):
    blocking = BlockingPublisher(redis, prefix=redis_prefix)
    conflating = ConflatingPublisher(blocking, conflate_above=0)
    await _subscribe(subscriber, f"{redis_prefix}ticks:NIFTY")
    await conflating.start()
    try:
        conflating.offer_ticks("NIFTY", h.ticks(recv_start=100, price=1.0), h.index())
        await asyncio.wait_for(blocking.entered.wait(), 2.0)  # first batch is in flight, stuck
        started = time.perf_counter()
        for i in range(1, 50):
            conflating.offer_ticks("NIFTY", h.ticks(recv_start=100 + 10 * i, price=1.0 + i), h.index())
        assert time.perf_counter() - started < 0.5  # offer() never waited for Redis
        assert conflating.conflated == 48 * 4 and conflating.pending_ticks == 4
        blocking.release.set()
        messages = await _messages(subscriber, 2)
    finally:
        await conflating.stop()
    assert [len(p["ticks"]) for _, p in messages] == [4, 4]
    assert {t["token"]: t["last_price"] for t in messages[1][1]["ticks"]}[h.SPOT] == 50.0
    assert conflating.published_ticks == 8


async def test_conflating_stop_publishes_pending(redis, subscriber, redis_prefix):
    conflating = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix))
    await _subscribe(subscriber, f"{redis_prefix}ticks:BANKNIFTY", f"{redis_prefix}bars:1m:BANKNIFTY")
    await conflating.start()
    conflating.offer_ticks("BANKNIFTY", h.ticks(), h.index())
    conflating.offer_bars("BANKNIFTY", h.bars(60))
    await conflating.stop()
    got = dict(await _messages(subscriber, 2))
    assert len(got[f"{redis_prefix}ticks:BANKNIFTY"]["ticks"]) == 4
    assert len(got[f"{redis_prefix}bars:1m:BANKNIFTY"]["bars"]) == 1
    assert conflating.pending_ticks == 0 and conflating.pending_bars == 0


async def test_conflating_bars_never_conflated_published_in_order(redis, subscriber, redis_prefix):
    conflating = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix))
    await _subscribe(subscriber, f"{redis_prefix}bars:1m:NIFTY")
    for i in range(5):
        conflating.offer_bars("NIFTY", h.bars(60, bucket=1_900_000_020 + 60 * i))
    await conflating.start()
    try:
        messages = await _messages(subscriber, 5)
    finally:
        await conflating.stop()
    buckets = [p["bars"][0]["bucket"] for _, p in messages]
    assert buckets == sorted(buckets) and len(buckets) == 5
    assert conflating.conflated == 0 and conflating.bars_dropped == 0


async def test_conflating_bars_queue_bounded_drops_oldest(redis, redis_prefix):
    conflating = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix), max_pending=3)
    for i in range(5):
        conflating.offer_bars("NIFTY", h.bars(60, bucket=1_900_000_020 + 60 * i))
    assert conflating.pending_bars == 3 and conflating.bars_dropped == 2
    await conflating.stop()  # never started: publishes directly
    assert conflating.pending_bars == 0 and conflating.published_bars == 3


async def test_conflating_redis_down_offer_never_raises_errors_counted(redis_prefix):
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.2, socket_timeout=0.2)
    conflating = ConflatingPublisher(RedisPublisher(dead, prefix=redis_prefix), max_backoff_s=0.05,
                                     stop_timeout_s=2.0)
    await conflating.start()
    try:
        for i in range(20):
            conflating.offer_ticks("NIFTY", h.ticks(recv_start=100 + 10 * i), h.index())
            conflating.offer_bars("NIFTY", h.bars(60))
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 5.0
        while conflating.errors < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert conflating.errors >= 2
        assert conflating.pending_ticks == 4  # latest state kept while Redis is down, not a backlog
        assert conflating.pending_bars == 20
    finally:
        started = time.monotonic()
        await conflating.stop()
        assert time.monotonic() - started < 3.0
        await dead.aclose()


async def test_publish_ticks_per_instrument_channel_when_enabled(redis, subscriber, redis_prefix):
    pub = RedisPublisher(redis, prefix=redis_prefix, per_instrument=True)
    await _subscribe(subscriber, f"{redis_prefix}tick:{h.CALL}")
    batch = np.concatenate([h.ticks(price=100.0), h.ticks(recv_start=1_900_000_000_000_101, price=200.0)])
    await pub.publish_ticks("NIFTY", batch, h.index())
    [(_, payload)] = await _messages(subscriber, 1)
    assert payload["token"] == h.CALL and payload["last_price"] == 202.0
    assert await _no_more(subscriber)


async def test_conflating_stale_ticks_are_not_published_nor_snapshotted(redis, subscriber, redis_prefix):
    """A worker replaying Kafka after a restart must not send dashboards back in time."""
    now_s = 1_900_000_100.0  # the ticks below were received at 1_900_000_000 (100 s earlier) and at now - 1 s
    conflating = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix), max_tick_age_s=60.0,
                                     clock=ManualClock(now_s))
    await _subscribe(subscriber, f"{redis_prefix}ticks:NIFTY")
    await conflating.start()
    conflating.offer_ticks("NIFTY", h.ticks(), h.index())  # 100 s old: replayed
    conflating.offer_ticks("NIFTY", h.ticks(tokens=(h.CALL,), recv_start=int((now_s - 1) * 1e6)), h.index())
    await conflating.stop()
    got = await _messages(subscriber, 1)
    assert [t["token"] for t in got[0][1]["ticks"]] == [h.CALL]
    assert await _no_more(subscriber)
    assert conflating.stale == 4
    snapshot = await redis.hgetall(f"{redis_prefix}snapshot:NIFTY:spot")
    assert snapshot == {}  # the stale index tick did not overwrite the live snapshot


async def test_a_new_worker_replaying_never_sends_a_channel_back_in_time(redis, subscriber, redis_prefix):
    """The worker that takes a partition over replays the seconds after the checkpoint, which the previous
    owner had published: only ticks newer than the snapshot's reach the channel and the hash."""
    old_owner = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix))
    await old_owner.start()
    old_owner.offer_ticks("NIFTY", h.ticks(tokens=(h.CALL, h.PUT), recv_start=1_900_000_000_000_200, price=150.0), h.index())
    await old_owner.stop()

    await _subscribe(subscriber, f"{redis_prefix}ticks:NIFTY")
    successor = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix))
    await successor.start()
    replay = np.concatenate([
        h.ticks(tokens=(h.CALL, h.PUT), recv_start=1_900_000_000_000_100, price=100.0),  # older than Redis has
        h.ticks(tokens=(h.PUT,), recv_start=1_900_000_000_000_300, price=160.0),  # newer: goes out
    ])
    successor.offer_ticks("NIFTY", replay, h.index())
    await successor.stop()
    got = await _messages(subscriber, 1)
    assert [(t["token"], t["last_price"]) for t in got[0][1]["ticks"]] == [(h.PUT, 160.0)]
    assert await _no_more(subscriber)
    assert successor.not_newer == 2
    snapshot = await redis.hgetall(f"{redis_prefix}snapshot:NIFTY:2030-01-31")
    assert _strict_loads(snapshot[str(h.CALL).encode()])["last_price"] == 150.0  # not rewound to 100
    assert _strict_loads(snapshot[str(h.PUT).encode()])["last_price"] == 160.0


async def test_two_workers_publishing_one_instrument_never_send_it_back_in_time(redis, subscriber, redis_prefix):
    """A worker that owned NIFTY, lost it to another worker (which published newer ticks) and gets it back
    replays what the other published: Redis itself refuses every tick not newer than the one it has."""
    first = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix))
    await first.start()
    first.offer_ticks("NIFTY", h.ticks(tokens=(h.CALL,), recv_start=1_900_000_000_000_100, price=100.0), h.index())
    await asyncio.sleep(0.2)
    other = ConflatingPublisher(RedisPublisher(redis, prefix=redis_prefix))  # the owner meanwhile
    await other.start()
    other.offer_ticks("NIFTY", h.ticks(tokens=(h.CALL,), recv_start=1_900_000_000_000_300, price=300.0), h.index())
    await other.stop()

    await _subscribe(subscriber, f"{redis_prefix}ticks:NIFTY")
    first.offer_ticks("NIFTY", h.ticks(tokens=(h.CALL,), recv_start=1_900_000_000_000_200, price=200.0), h.index())
    first.offer_ticks("NIFTY", h.ticks(tokens=(h.CALL,), recv_start=1_900_000_000_000_400, price=400.0), h.index())
    await first.stop()
    got = await _messages(subscriber, 2)
    prices = [t["last_price"] for _, payload in got for t in payload["ticks"]]
    assert prices == [400.0]  # 200 is older than what Redis has (300): never sent back in time
    assert first.not_newer == 1


async def test_concurrent_publishers_of_interleaved_ticks_keep_every_instrument_moving_forward(
        redis, subscriber, redis_prefix):
    """Two publishers send the same instrument's ticks in opposite orders at once: whatever interleaving
    Redis sees, the channel never carries a tick older than one it carried before."""
    await _subscribe(subscriber, f"{redis_prefix}ticks:NIFTY")
    ticks = [h.ticks(tokens=(h.CALL, h.PUT), recv_start=1_900_000_000_000_000 + 10 * i, price=float(i + 1))
             for i in range(40)]
    a, b = RedisPublisher(redis, prefix=redis_prefix), RedisPublisher(redis, prefix=redis_prefix)
    counts = await asyncio.gather(
        *(a.publish_ticks("NIFTY", t, h.index()) for t in ticks),
        *(b.publish_ticks("NIFTY", t, h.index()) for t in reversed(ticks)))
    published = sum(counts)
    got = await _messages(subscriber, sum(1 for c in counts if c))
    seen: dict[int, int] = {}
    n = 0
    for _, payload in got:
        for tick in payload["ticks"]:
            assert tick["recv_ts"] > seen.get(tick["token"], -1)
            seen[tick["token"]] = tick["recv_ts"]
            n += 1
    assert n == published and 2 <= published <= 80
    assert seen == {h.CALL: int(ticks[-1]["recv_ts"][0]), h.PUT: int(ticks[-1]["recv_ts"][1])}
    snapshot = await redis.hgetall(f"{redis_prefix}snapshot:NIFTY:2030-01-31")
    assert _strict_loads(snapshot[str(h.CALL).encode()])["last_price"] == 40.0
