"""The dashboard's bounded site over real sockets: a connection cap, and a deadline on half-sent requests that
never cuts a request being answered (a live WebSocket)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from pipeline.commands.bounded_site import BoundedTCPSite, connection_cap

TIMEOUT_S = 0.5


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    for i in range(8):  # 8 x 0.25 s: four request deadlines
        await ws.send_str(str(i))
        await asyncio.sleep(0.25)
    await ws.close()
    return ws


@pytest.fixture
async def site():  # noqa: ANN201
    app = web.Application()
    app.router.add_get("/health", _health)
    app.router.add_get("/ws", _ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    bounded = BoundedTCPSite(runner, "127.0.0.1", 0, max_connections=4, request_timeout_s=TIMEOUT_S)
    await bounded.start()
    yield bounded
    await runner.cleanup()


async def _closed_by_peer(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1024), within_s) == b""
    except (asyncio.TimeoutError, ConnectionResetError):
        return False


async def test_a_half_sent_request_is_closed_after_the_deadline_and_others_are_served(site) -> None:  # noqa: ANN001
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
    await writer.drain()
    started = time.monotonic()
    assert await _closed_by_peer(reader, 5 * TIMEOUT_S)
    assert TIMEOUT_S * 0.9 <= time.monotonic() - started and site.timed_out == 1
    writer.close()
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{site.port}/health") as response:
        assert response.status == 200 and await response.json() == {"ok": True}


async def test_connections_over_the_cap_are_closed_at_once_until_the_idle_ones_time_out(site) -> None:  # noqa: ANN001
    idle = [await asyncio.open_connection("127.0.0.1", site.port) for _ in range(4)]  # connect, send nothing
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    assert await _closed_by_peer(reader, TIMEOUT_S / 2)  # the fifth: closed before any deadline
    assert site.refused == 1
    writer.close()
    for idle_reader, _ in idle:
        assert await _closed_by_peer(idle_reader, 5 * TIMEOUT_S)
    for _, idle_writer in idle:
        idle_writer.close()
    await asyncio.sleep(0.05)
    assert site.open == 0
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{site.port}/health") as response:
        assert response.status == 200


async def test_a_websocket_being_answered_outlives_many_deadlines(site) -> None:  # noqa: ANN001
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{site.port}/ws") as ws:
        got = [message.data async for message in ws]
    assert got == [str(i) for i in range(8)] and site.timed_out == 0


def test_the_cap_stays_below_the_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_cap(10) == min(10, soft - 64)
    assert connection_cap(10**9) <= soft - 64 or soft == resource.RLIM_INFINITY
