"""One Kite WebSocket connection per shard: connect, subscribe in full mode, receive, reconnect.

- connect to ``<ws_url>?api_key=..&access_token=..`` (the token is never logged),
  subscribe the shard's tokens and set them to full mode;
- every message goes to the host (:class:`ConnectionHost`, the ingestor):
  binary to ``on_binary``, text to ``on_text``;
- no message at all for ``kite_silence_timeout_s`` = dead socket: reconnect;
- heartbeats but no data frame for ``kite_mute_timeout_s`` while another connection of the
  ingestor had data meanwhile = open but mute (a known failure of Kite's feed at high
  subscription counts): reconnect, counted in ``strikeflow_ws_mute_reconnects_total``;
- reconnects use exponential backoff (1 s, x2, cap 30 s) with +-20 % jitter,
  reset after a successful handshake; the gap is logged and counted;
- HTTP 403/429 on the upgrade = rejected account: the host moves the shard to
  another configured account when one has a free slot;
- hostile or broken input never ends the connection: a message the host cannot handle is dropped and
  counted (``strikeflow_ws_frame_errors_total{reason="handler"}``), a message over ``MAX_MESSAGE_BYTES`` is a
  WebSocket error (reconnect), any other failure of a session reconnects with the backoff
  (``strikeflow_ws_connection_errors_total``); closing waits at most ``CLOSE_TIMEOUT_S`` for the feed's
  answer, so a stop is never held up by a feed that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import aiohttp
from loguru import logger

from pipeline.feed.sharding import Shard
from pipeline.runtime import metrics
from pipeline.runtime.backoff import Backoff
from pipeline.runtime.redaction import redact
from pipeline.runtime.settings import KiteAccount, Settings

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2
# Kite's largest valid message: a full-mode frame of a connection's 3,000 tokens, 2 + 3,000 x (2 + 184) bytes
# = 558,002 bytes; anything larger is not Kite's and is refused before it is buffered.
MAX_MESSAGE_BYTES = 1024 * 1024
CLOSE_TIMEOUT_S = 2.0


class IngestCounters(Protocol):
    reconnects: int
    gap_seconds: float


class ConnectionHost(Protocol):
    """What a connection needs from the ingestor that owns it."""

    settings: Settings
    accounts: Sequence[KiteAccount]
    ws_url: str
    http: aiohttp.ClientSession | None
    stopping: asyncio.Event
    stats: IngestCounters

    def on_binary(self, connection: str, data: bytes) -> None: ...

    def on_text(self, connection: str, data: str) -> None: ...

    def data_elsewhere_since(self, connection: str, since: float) -> bool:
        """Another connection than ``connection`` received a data frame after ``since`` (monotonic)."""
        ...

    def fail_over(self, connection: Connection, reason: str = "rejected") -> bool: ...


class AccountRejected(Exception):
    """Kite refused the account: HTTP 403 (bad/expired access token) or 429 (its connection limit)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    @property
    def reason(self) -> str:
        return ("bad or expired access token (HTTP 403); fix KITE_ACCESS_TOKEN" if self.status == 403
                else f"connection limit reached (HTTP {self.status}); add an account or lower the universe")


class Connection:
    """One WebSocket for one shard, reconnecting forever until ``stop``."""

    def __init__(self, ingestor: ConnectionHost, shard: Shard) -> None:
        self.ingestor = ingestor
        self.shard = shard
        self.name = shard.name
        self.connected = False  # a session is up now (handshake done, subscribed)
        self._up = False  # the current session got through the handshake

    def url(self, account: KiteAccount) -> str:
        base = self.ingestor.ws_url
        return f"{base}?api_key={account.api_key}&access_token={account.access_token.get_secret_value()}"

    async def run(self) -> None:
        """Connect and reconnect until the ingestor stops. However it ends (a stop, a cancellation), the
        connection is marked down, so ``/ready`` and ``strikeflow_ws_connected`` never report a dead one as up."""
        try:
            await self._reconnect_forever()
        finally:
            metrics.WS_CONNECTED.labels(self.name).set(0)
            self.connected = False

    async def _reconnect_forever(self) -> None:
        ing = self.ingestor
        backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S, jitter=BACKOFF_JITTER)
        down_since: float | None = None
        me = asyncio.current_task()
        while not ing.stopping.is_set():
            if me is not None and me.cancelling():  # Python 3.11's wait_for can swallow a cancellation: obey it
                raise asyncio.CancelledError
            account = ing.accounts[self.shard.account]
            self._up = False
            try:
                await self._session(account, down_since)
            except AccountRejected as exc:
                if ing.fail_over(self, exc.reason):
                    continue
                logger.error("Kite refused api_key {} ({}) and no other account has a free connection: retrying",
                             account.api_key, exc.reason)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                # the URL (with the access token) can be in the exception's text: redacted
                logger.warning("connection {}: {} ({})", self.name, type(exc).__name__, redact(str(exc)))
            except Exception as exc:  # noqa: BLE001 - anything else: reconnect with the backoff, never die silently
                metrics.WS_CONNECTION_ERRORS.labels(self.name, type(exc).__name__).inc()
                logger.error("connection {}: unexpected {} ({}); reconnecting", self.name, type(exc).__name__,
                             redact(str(exc)))
            metrics.WS_CONNECTED.labels(self.name).set(0)
            self.connected = False
            if self._up:  # the session got through the handshake: this is a new outage, from now
                backoff.reset()
                down_since = None
            if ing.stopping.is_set():
                break
            down_since = down_since or time.monotonic()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ing.stopping.wait(), backoff.next())

    async def _session(self, account: KiteAccount, down_since: float | None) -> None:
        ing = self.ingestor
        try:
            ws = await ing.http.ws_connect(self.url(account), heartbeat=None, autoping=True,
                                           max_msg_size=MAX_MESSAGE_BYTES, headers={"X-Kite-Version": "3"},
                                           timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (403, 429):
                raise AccountRejected(exc.status) from None
            # the URL carries the access token: never log the exception text itself
            raise aiohttp.ClientError(f"WebSocket upgrade refused with HTTP {exc.status}") from None
        async with ws:
            self._up = True
            if down_since is not None:
                gap = time.monotonic() - down_since
                ing.stats.reconnects += 1
                ing.stats.gap_seconds += gap
                metrics.RECONNECTS.labels(self.name).inc()
                logger.warning("connection {} restored after a {:.1f}s gap; resubscribing {} tokens",
                               self.name, gap, len(self.shard.tokens))
            await ws.send_str(json.dumps({"a": "subscribe", "v": self.shard.tokens}))
            await ws.send_str(json.dumps({"a": "mode", "v": ["full", self.shard.tokens]}))
            metrics.WS_CONNECTED.labels(self.name).set(1)
            self.connected = True
            await self._receive(ws)

    def _handle(self, handler: Callable[[str, Any], None], data: Any) -> None:
        """One message to the ingestor: a handler that raises on it costs that message only (counted, logged
        by type), never the connection."""
        try:
            handler(self.name, data)
        except Exception as exc:  # noqa: BLE001 - one bad message must not end the connection
            metrics.FRAME_ERRORS.labels("handler").inc()
            logger.warning("connection {}: a message of {} bytes could not be handled ({}: {}); dropped",
                           self.name, len(data), type(exc).__name__, redact(str(exc)))

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        ing = self.ingestor
        silence, mute = ing.settings.kite_silence_timeout_s, ing.settings.kite_mute_timeout_s
        last_data = time.monotonic()
        me = asyncio.current_task()
        while not ing.stopping.is_set():
            if me is not None and me.cancelling():  # Python 3.11's wait_for can swallow a cancellation: obey it
                raise asyncio.CancelledError
            try:
                msg = await asyncio.wait_for(ws.receive(), silence)
            except asyncio.TimeoutError:
                logger.warning("connection {}: silent for {:.0f}s, reconnecting", self.name, silence)
                return
            if msg.type == aiohttp.WSMsgType.BINARY:
                self._handle(ing.on_binary, msg.data)
                now = time.monotonic()
                if len(msg.data) > 1:
                    last_data = now
                elif now - last_data > mute and ing.data_elsewhere_since(self.name, last_data + mute / 2):
                    logger.warning("connection {}: heartbeats but no data for {:.0f}s while other connections "
                                   "have data: open but mute, reconnecting", self.name, now - last_data)
                    metrics.MUTE_RECONNECTS.labels(self.name).inc()
                    return
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self._handle(ing.on_text, msg.data)
            elif msg.type == aiohttp.WSMsgType.ERROR:  # e.g. a message over MAX_MESSAGE_BYTES
                metrics.FRAME_ERRORS.labels("ws_error").inc()
                logger.warning("connection {}: WebSocket error ({}), reconnecting", self.name,
                               redact(str(ws.exception())))
                return
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                logger.warning("connection {} closed by server (code {})", self.name, ws.close_code)
                return
