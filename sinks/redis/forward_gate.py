"""The Redis-side forward-only gate for live ticks: one Lua script per underlying and batch.

Why on Redis: whichever worker publishes (the owner, the one that took a dead
worker's partitions over and replays the seconds after its checkpoint, two
owners for a moment during a rebalance), the ``ticks:`` channels and
``snapshot:`` hashes must only move forward. Each worker's own memory cannot know
what another worker published; Redis can, and a script runs atomically, so the
compare and the publish cannot interleave with another worker's.

Per instrument the newest published ``recv_ts`` (epoch µs) is kept in the hash
``snapshot_recv:<underlying>`` (field = instrument token). A tick is published
(in the batch message, its snapshot field, and ``tick:<token>`` when enabled)
only when its ``recv_ts`` is greater than that; otherwise it is dropped and
counted by the caller (the script returns how many it published). µs since the
epoch stay below 2^53, so Lua's doubles compare them exactly.
"""

from __future__ import annotations

import numpy as np

from pipeline.records.instruments import InstrumentIndex
from sinks.redis.channels import Channels
from sinks.redis.payloads import SCHEMA_VERSION, dumps, tick_objects

# KEYS: [1] channel, [2] recv hash, [3..] snapshot hashes.
# ARGV: [1] message head, [2] TTL seconds (0 = none), [3] per-instrument channel prefix ('' = off),
#       then per tick, in recv_ts order: token, recv_ts, index into KEYS of its snapshot hash, tick JSON.
FORWARD_TICKS_LUA = """
local recv_key = KEYS[2]
local ttl = tonumber(ARGV[2])
local tick_prefix = ARGV[3]
local kept, latest, touched = {}, {}, {}
for i = 4, #ARGV, 4 do
  local token, recv, slot, json = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local seen = redis.call('HGET', recv_key, token)
  if (not seen) or tonumber(recv) > tonumber(seen) then
    redis.call('HSET', recv_key, token, recv)
    redis.call('HSET', KEYS[slot], token, json)
    kept[#kept + 1] = json
    latest[token] = json
    touched[slot] = true
  end
end
if #kept > 0 then
  redis.call('PUBLISH', KEYS[1], ARGV[1] .. table.concat(kept, ',') .. ']}')
  if ttl > 0 then
    redis.call('EXPIRE', recv_key, ttl)
    for slot in pairs(touched) do redis.call('EXPIRE', KEYS[slot], ttl) end
  end
  if tick_prefix ~= '' then
    for token, json in pairs(latest) do redis.call('PUBLISH', tick_prefix .. token, json) end
  end
end
return #kept
"""


def forward_ticks_call(channels: Channels, underlying: str, ticks: np.ndarray, index: InstrumentIndex | None,
                       *, ttl_s: int | None, per_instrument: bool) -> tuple[list[str], list[str | int]]:
    """(KEYS, ARGV) of :data:`FORWARD_TICKS_LUA` for one batch — pure, no I/O.

    Ticks go in ``recv_ts`` order (stable), so a batch that holds two ticks of an
    instrument publishes both, oldest first, and its snapshot ends at the newest.
    """
    order = np.argsort(ticks["recv_ts"], kind="stable")
    ticks = ticks[order]
    objects = tick_objects(ticks, index)
    keys = [channels.ticks(underlying), channels.snapshot_recv(underlying)]
    slot_of: dict[str, int] = {}
    head = f'{{"schema_version":{SCHEMA_VERSION},"underlying":{dumps(underlying)},"ticks":['
    args: list[str | int] = [head, int(ttl_s or 0), channels.tick("") if per_instrument else ""]
    for obj in objects:
        key = channels.snapshot(underlying, obj.get("expiry", ""))
        slot = slot_of.get(key)
        if slot is None:
            keys.append(key)
            slot = slot_of[key] = len(keys)  # Lua's KEYS is 1-based
        args += [obj["token"], obj["recv_ts"], slot, dumps(obj)]
    return keys, args
