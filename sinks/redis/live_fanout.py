"""One Redis subscription, many browsers: the dashboard's live updates, conflated per viewer.

The dashboard server (``strikeflow web``) subscribes once to ``ticks:*``, ``chain:*`` and ``vix:*`` and
routes each message to the viewers of its chain (:class:`LiveFanout`). A viewer (:class:`ChainViewer`,
one per open page) never holds a queue: it holds the *newest* value per key (an option's tick per token,
the 1-minute chain row, the 1-minute index row), so a browser that reads slowly gets fewer, fresher
updates and the server's memory per viewer is bounded by the chain's size, never by how far the
browser fell behind. Values replaced before they were sent are counted (``conflated``).

The browser never talks to Redis; it reads :meth:`ChainViewer.take` through the server's WebSocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from loguru import logger

from sinks.redis.channels import Channels


class ChainViewer:
    """The pending updates of one page showing ``underlying``'s ``expiry`` chain (module docstring)."""

    def __init__(self, underlying: str, expiry: str) -> None:
        self.underlying, self.expiry = underlying, expiry
        self._pending: dict[str, Any] = {}
        self._ready = asyncio.Event()
        self.conflated = 0
        self.closed = False

    def offer(self, key: str, value: Any) -> None:
        if key in self._pending:
            self.conflated += 1
        self._pending[key] = value
        self._ready.set()

    def offer_ticks(self, ticks: list[dict[str, Any]]) -> None:
        """Keep the ticks of this expiry's options and future and of the index (newest per token)."""
        for tick in ticks:
            if tick.get("expiry") == self.expiry or tick.get("type") == "INDEX":
                self.offer(f"tick:{tick.get('token')}", tick)

    async def take(self) -> dict[str, Any]:
        """Wait for updates; ``{"ticks": [...], "chain": row | None, "vix": row | None}`` of everything pending."""
        await self._ready.wait()
        self._ready.clear()
        pending, self._pending = self._pending, {}
        return {"ticks": [v for k, v in pending.items() if k.startswith("tick:")],
                "chain": pending.get("chain"), "vix": pending.get("vix")}


class LiveFanout:
    """Routes the one subscription's messages to the viewers; ``run`` until cancelled."""

    def __init__(self, redis: Any, channels: Channels, on_conflated: Callable[[int], None] | None = None,
                 max_viewers: int = 1000, max_per_chain: int = 200) -> None:
        self.redis, self.channels = redis, channels
        self.viewers: set[ChainViewer] = set()
        self.max_viewers, self.max_per_chain = max_viewers, max_per_chain
        self.messages = 0
        self.bad_messages = 0
        self.on_conflated = on_conflated
        self.subscribed = asyncio.Event()

    def refusal(self, underlying: str, expiry: str) -> str | None:
        """Why one more viewer of this chain is refused (the caps on viewers in total and per chain keep the
        server's memory and pacing bounded), or None when there is room."""
        if len(self.viewers) >= self.max_viewers:
            return f"the dashboard serves {self.max_viewers} live viewers at most"
        same = sum(1 for v in self.viewers if (v.underlying, v.expiry) == (underlying, expiry))
        if same >= self.max_per_chain:
            return f"{underlying} {expiry} has {self.max_per_chain} live viewers, the most one chain is served to"
        return None

    def add(self, viewer: ChainViewer) -> None:
        self.viewers.add(viewer)

    def remove(self, viewer: ChainViewer) -> None:
        viewer.closed = True
        self.viewers.discard(viewer)

    async def run(self) -> None:
        pubsub = self.redis.pubsub()
        prefix = self.channels.prefix
        try:
            await pubsub.psubscribe(f"{prefix}ticks:*", f"{prefix}chain:*", f"{prefix}vix:*")
            self.subscribed.set()
            async for message in pubsub.listen():
                if message.get("type") == "pmessage":
                    self.route(_text(message["channel"])[len(prefix):], message["data"])
        finally:
            self.subscribed.clear()
            await pubsub.aclose()

    def route(self, channel: str, data: bytes | str) -> None:
        """Hand one message (channel without the prefix) to the viewers it concerns."""
        self.messages += 1
        kind, _, rest = channel.partition(":")
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.bad_messages += 1
            if self.bad_messages == 1 or self.bad_messages % 1000 == 0:
                logger.warning("dashboard: {} messages that are not JSON (latest on {})", self.bad_messages, channel)
            return
        for viewer in list(self.viewers):
            before = viewer.conflated
            if kind == "ticks" and rest == viewer.underlying:
                viewer.offer_ticks(payload.get("ticks") or [])
            elif kind == "chain" and rest == f"{viewer.underlying}:{viewer.expiry}" and payload.get("interval_s") == 60:
                viewer.offer("chain", payload)
            elif kind == "vix" and rest == viewer.underlying and payload.get("interval_s") == 60:
                viewer.offer("vix", payload)
            if self.on_conflated is not None and viewer.conflated > before:
                self.on_conflated(viewer.conflated - before)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["ChainViewer", "LiveFanout"]
