"""Redis: live ticks, closed bars and chain updates on pub/sub (JSON), and the snapshot hashes.

Channels and keys (``prefix`` is prepended to every name, "" in production):

- ``ticks:<underlying>`` — one message per batch:
  ``{"underlying": "NIFTY", "ticks": [{"token", "symbol", "exchange_ts" (epoch s),
  "recv_ts" (epoch µs), "last_price", "volume", "oi", "bid", "ask"}, ...]}``;
  option ticks also carry ``"expiry"`` ("YYYY-MM-DD"), ``"strike"``, ``"type"``
  ("CE"/"PE") and ``"forward", "iv", "delta", "gamma", "theta", "vega", "rho", "spot_delta"``,
  ``"mid_iv"``, ``"forward_source"`` ("future"/"parity"/"carry"), ``"stale"`` and
  ``"near_expiry"`` (booleans; see ``pipeline.core.pricing``).
  Futures carry ``"expiry"`` and ``"type": "FUT"``, the index ``"type": "INDEX"``.
- ``tick:<instrument_token>`` — only with ``per_instrument=True``: the latest published
  tick of each instrument in the batch (same object as in the batch message).
- ``snapshot:<underlying>:<expiry>`` — hash, field = instrument token, value =
  JSON of that instrument's latest tick (same object as in the message), so a
  dashboard that joins late draws the whole chain with one HGETALL.
  Instruments without an expiry (index/spot) go to ``snapshot:<underlying>:spot``.
  Every hash written is given a TTL (``snapshot_ttl_s``, 7 days) so expired
  series disappear.
- ``snapshot_recv:<underlying>`` — hash, field = instrument token, value = the
  newest published ``recv_ts``: channels and snapshots only move forward, checked
  in Redis by one Lua script per batch (``forward_gate``).
- ``bars:<tf>:<underlying>`` (tf ``1m``/``5m``/``15m``) — one message per
  timeframe per call: ``{"underlying", "timeframe", "interval_s", "bars": [...]}``.
- ``chain:<underlying>:<expiry>`` — the OI rollup payload, as given; from
  ``publish_chains``/``offer_chains`` one message per chain row (see
  ``pipeline.core.rollups``): ``{"underlying", "expiry", "interval_s", "timeframe",
  "bucket" (epoch s), "total_call_oi", "total_put_oi", "pcr", "max_pain",
  "atm_strike", "atm_iv", "forward", "call_volume", "put_volume",
  "strikes_listed", "strikes_covered", "rr25", "bf25", "gex", "gex_flip", "parity_violations",
  "crossed_quotes", "butterfly_violations", "strikes_quoted", "last_recv_ts" (epoch µs)}``
  (definitions: sinks/README.md, "Tables").
- ``vix:<underlying>`` — one message per volatility index row (``vol_index_*`` columns, with
  ``"timeframe"`` and ``"interval_s"``).

Every message carries ``"schema_version"``; bar objects carry ``"correction"``
(true when the bar replaces one published before). Missing numbers (NaN) are
JSON ``null``; messages never contain NaN/Infinity.

Modules: ``channels`` (names), ``payloads`` (JSON, pure), ``forward_gate`` (the
forward-only Lua script and its arguments), ``publisher``
(``RedisPublisher``: one round trip per call, a non-transactional pipeline),
``conflation`` (``ConflatingPublisher``: decouples the process agent from
Redis; ``offer()`` never blocks or raises on Redis trouble, and when Redis falls
behind only the newest tick per instrument is kept, counted).
"""
