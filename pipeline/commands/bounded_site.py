"""An aiohttp TCP site with bounded resources: a cap on open connections and a deadline on unfinished requests.

aiohttp closes a connection that never sends a byte (its keep-alive timeout) but waits forever for the rest
of a half-sent request, and accepts connections until the process runs out of file descriptors; then every
``accept()`` fails with a traceback. Here:

- at most ``max_connections`` are open at once: one more is closed as soon as it is accepted (counted in
  ``refused``, logged at most once a minute), long before the descriptors run out;
- a connection that makes no progress for ``request_timeout_s`` seconds (no complete request received, none
  being answered: a half-sent or idle request) is closed (counted in ``timed_out``). A request being answered,
  a WebSocket included, is never cut: the deadline is on receiving requests, not on serving them.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from loguru import logger

LOG_EVERY_S = 60.0


class BoundedTCPSite(web.TCPSite):
    """``web.TCPSite`` with the bounds of the module docstring."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, max_connections: int,
                 request_timeout_s: float) -> None:
        super().__init__(runner, host, port)
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._logged_at = float("-inf")

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guarded(server), self._host, self._port, backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port

    def _guarded(self, server: Any) -> Callable[[], asyncio.Protocol]:
        site = self

        class Handler(RequestHandler):
            """aiohttp's handler, counted and watched (``__slots__``: no per-instance state of ours)."""

            __slots__ = ("_sf_accepted",)

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self._sf_accepted = site._admit(transport)
                if self._sf_accepted:
                    super().connection_made(transport)
                    site._watch(self, transport)

            def connection_lost(self, exc: BaseException | None) -> None:
                site.open -= 1
                if getattr(self, "_sf_accepted", False):
                    super().connection_lost(exc)

        return lambda: Handler(server, loop=server._loop, **server._kwargs)

    def _admit(self, transport: asyncio.BaseTransport) -> bool:
        self.open += 1
        if self.open <= self.max_connections:
            return True
        self.refused += 1
        self._log_refusal()
        transport.close()
        return False

    def _watch(self, handler: RequestHandler, transport: asyncio.BaseTransport) -> None:
        """Close the connection once it has received no complete request and answered none for a period."""
        loop = asyncio.get_running_loop()
        seen = [handler._request_count]

        def check() -> None:
            if transport.is_closing():
                return
            if handler._current_request is None and handler._request_count == seen[0]:
                self.timed_out += 1
                transport.close()
                return
            seen[0] = handler._request_count
            loop.call_later(self.request_timeout_s, check)

        loop.call_later(self.request_timeout_s, check)

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            logger.warning("dashboard: over {} open connections: refusing new ones ({} refused so far)",
                           self.max_connections, self.refused)


def connection_cap(configured: int) -> int:
    """``configured``, but at most 64 below the process's soft limit on open files (the rest of the process
    needs descriptors too: the database pool, Redis, logs)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return configured if soft == resource.RLIM_INFINITY else max(1, min(configured, soft - 64))


__all__ = ["BoundedTCPSite", "connection_cap"]
