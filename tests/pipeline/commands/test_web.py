"""``strikeflow web``'s JSON API, WebSocket and access rules, in-process against the real PostgreSQL and Redis.

Ticks reach Redis through the worker's own publisher (snapshot hashes and ``ticks:`` messages); bars and
chain rows through the writer. Expected values are recomputed plainly here from what was written."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from pipeline.commands.web import FANOUT, TOKEN_COOKIE, build_app
from pipeline.records.bars import BAR_DTYPE
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.rollups import CHAIN_BAR_DTYPE, STRIKE_BAR_DTYPE, rows_of
from pipeline.records.ticks import PRICED_TICK_DTYPE
from sim.market import DEFAULT_UNDERLYINGS, build_instruments, session_start_ts
from sinks.redis.channels import Channels
from sinks.redis.publisher import RedisPublisher
from sinks.timescale_writer import TimescaleWriter

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 11, 25)
OPEN = int(session_start_ts(DAY))


def _index() -> InstrumentIndex:
    rows = build_instruments([DEFAULT_UNDERLYINGS["NIFTY"]], DAY, n_expiries=1, strikes_each_side=2, n_futures=1)
    return InstrumentIndex.from_rows(rows)


def _ticks(index: InstrumentIndex, at: int, price_step: float) -> np.ndarray:
    ticks = np.zeros(len(index), PRICED_TICK_DTYPE)
    ticks["instrument_token"] = index.tokens
    ticks["exchange_ts"] = at
    ticks["recv_ts"] = at * 1_000_000 + np.arange(len(index))
    ticks["last_price"] = 100 + price_step * np.arange(len(index))
    ticks["oi"] = 10_000 + 75 * np.arange(len(index))
    ticks["volume"] = 500
    for name in ("iv", "delta", "mid_iv", "forward"):
        ticks[name] = 0.1 + 0.001 * np.arange(len(index))
    return ticks


@pytest.fixture
async def served(pool, pg_schema, redis_url, redis_prefix):  # noqa: ANN001, ANN201
    """The app on a test server, with one NIFTY expiry's ticks in Redis and its bars and chain rows stored."""
    index = _index()
    expiry = next(e for e, k in zip(index.expiry.tolist(), index.kind.tolist(), strict=True) if k == InstrumentKind.CALL)
    redis = aioredis.from_url(redis_url)
    channels = Channels(redis_prefix)
    publisher = RedisPublisher(redis, prefix=redis_prefix)
    ticks = _ticks(index, OPEN + 300, 1.0)
    await publisher.publish_ticks("NIFTY", ticks, index)
    writer = TimescaleWriter(pool, pg_schema)
    options = np.flatnonzero(np.isin(index.kind, (InstrumentKind.CALL, InstrumentKind.PUT)))
    bars = np.zeros(2 * len(options), BAR_DTYPE)
    bars["instrument_token"] = np.tile(index.tokens[options], 2)
    bars["interval_s"] = 60
    bars["bucket"] = np.repeat([OPEN, OPEN + 60], len(options))
    bars["oi_open"] = np.concatenate([9_000 + index.tokens[options] % 100, 9_500 + index.tokens[options] % 100])
    bars["last_recv_ts"] = bars["bucket"] * 1_000_000
    await writer.write_bars(60, bars)
    chain = [{"underlying": "NIFTY", "expiry": dt.date.fromisoformat(expiry), "bucket": dt.datetime.fromtimestamp(b, dt.UTC),
              "pcr": 0.8 + 0.1 * i, "atm_iv": 0.12 + 0.01 * i, "forward": 24000.0 + i, "atm_strike": 24000.0,
              "last_recv_ts": (b + 60) * 1_000_000} for i, b in enumerate((OPEN, OPEN + 60, OPEN + 120))]
    await writer.write_chain_bars(60, rows_of(CHAIN_BAR_DTYPE, 60, chain))
    strikes = sorted(set(index.strike[options].tolist()))
    await writer.write_strike_bars(60, rows_of(STRIKE_BAR_DTYPE, 60, [
        {"underlying": "NIFTY", "expiry": dt.date.fromisoformat(expiry), "strike": k,
         "bucket": dt.datetime.fromtimestamp(b, dt.UTC), "call_oi": int(k) + b % 7, "put_oi": 2 * int(k),
         "last_recv_ts": (b + 60) * 1_000_000} for k in strikes for b in (OPEN, OPEN + 60)]))

    async def start(token: str | None = None, **caps: int) -> TestClient:
        client = TestClient(TestServer(build_app(pool, redis, pg_schema, token, channels, **caps)))
        await client.start_server()
        clients.append(client)
        return client

    clients: list[TestClient] = []
    yield start, index, expiry, ticks, bars, chain, publisher
    for client in clients:
        await client.close()
    await redis.aclose()


async def test_api_chain_is_the_snapshot_with_oi_change_since_the_session_open(served) -> None:
    start, index, expiry, ticks, bars, chain, _ = served
    client = await start()
    response = await client.get(f"/api/chain?underlying=nifty&expiry={expiry}")
    assert response.status == 200
    view = await response.json()
    assert view["chain"]["pcr"] == pytest.approx(chain[-1]["pcr"]) and view["chain"]["bucket"] == OPEN + 120
    expected = {}
    for i in np.flatnonzero(np.isin(index.kind, (InstrumentKind.CALL, InstrumentKind.PUT))):
        token = int(index.tokens[i])
        first_bar = bars[(bars["instrument_token"] == token)]
        first_bar = first_bar[np.argsort(first_bar["bucket"])][0]
        tick = ticks[ticks["instrument_token"] == token][0]
        side = "call" if index.kind[i] == InstrumentKind.CALL else "put"
        expected[(float(index.strike[i]), side)] = (tick["last_price"], int(tick["oi"]) - int(first_bar["oi_open"]))
    got = {(row["strike"], side): (row[side]["last_price"], row[side]["oi_change"])
           for row in view["rows"] for side in ("call", "put") if row[side]}
    assert got == expected
    assert [row["strike"] for row in view["rows"]] == sorted({k for k, _ in expected})
    spot = ticks[index.kind == InstrumentKind.INDEX]["last_price"]
    assert view["spot"] == pytest.approx(float(spot[0]))


async def test_api_series_is_the_days_chain_rows_and_the_newest_oi_by_strike(served) -> None:
    start, _, expiry, _, _, chain, _ = served
    client = await start()
    series = await (await client.get(f"/api/series?underlying=NIFTY&expiry={expiry}")).json()
    assert series["bucket"] == [OPEN, OPEN + 60, OPEN + 120]
    assert series["pcr"] == pytest.approx([c["pcr"] for c in chain])
    assert series["oi_bucket"] == OPEN + 60
    assert series["call_oi"] == [int(k) + (OPEN + 60) % 7 for k in series["strike"]]


@pytest.mark.parametrize(("query", "status", "message"), [
    ("underlying=NIFTY", 400, "give underlying and expiry"),
    ("underlying=NIFTY&expiry=31-12-2026", 400, "is not a date"),
    ("underlying=NOSUCH&expiry=2026-12-31", 404, "no data for NOSUCH 2026-12-31"),
])
async def test_bad_api_arguments_get_a_clear_error(served, query: str, status: int, message: str) -> None:
    client = await (served[0])()
    response = await client.get(f"/api/chain?{query}")
    assert response.status == status
    assert message in (await response.json())["error"]


async def test_nothing_can_be_written(served) -> None:
    client = await (served[0])()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/api/chain", "/api/series", "/", "/ws"):
            assert (await client.request(method, path)).status == 405, (method, path)


async def test_with_a_token_every_request_needs_it_as_bearer_or_cookie(served) -> None:
    client = await (served[0])("s3cret-token")
    assert (await client.get("/api/chains")).status == 401
    assert (await client.get("/api/chains", headers={"Authorization": "Bearer wrong"})).status == 401
    ok = await client.get("/api/chains", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status == 200 and (await ok.json())["chains"][0]["underlying"] == "NIFTY"
    assert (await client.get("/?token=wrong", allow_redirects=False)).status == 401
    login = await client.get("/?token=s3cret-token", allow_redirects=False)
    assert login.status == 302 and TOKEN_COOKIE in login.cookies
    assert (await client.get("/api/chains")).status == 200  # the cookie jar now carries it


async def test_websocket_delivers_newer_ticks_of_the_viewed_chain(served) -> None:
    start, index, expiry, ticks, _, _, publisher = served
    client = await start()
    ws = await client.ws_connect(f"/ws?underlying=NIFTY&expiry={expiry}")
    await asyncio.wait_for(client.app[FANOUT].subscribed.wait(), 10)  # the app subscribes to Redis when it starts
    newer = _ticks(index, OPEN + 301, 2.0)
    await publisher.publish_ticks("NIFTY", newer, index)
    update = orjson.loads((await asyncio.wait_for(ws.receive(), 10)).data)
    got = {t["token"]: t["last_price"] for t in update["ticks"]}
    own = [i for i in range(len(index)) if index.expiry[i] == expiry or index.kind[i] == InstrumentKind.INDEX]
    assert got == {int(index.tokens[i]): float(newer["last_price"][i]) for i in own}
    await ws.close()


def test_web_beyond_loopback_without_a_token_refuses_to_start(pg_dsn: str, redis_url: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.commands.cli", "web", "--host", "0.0.0.0", "--port", "0"],
                          env={"PATH": "/usr/bin:/bin", "STRIKEFLOW_PG_DSN": pg_dsn, "STRIKEFLOW_REDIS_URL": redis_url},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "STRIKEFLOW_DASHBOARD_TOKEN: required to serve the dashboard beyond loopback (0.0.0.0)" in proc.stderr


async def test_a_client_that_does_not_acknowledge_gets_two_messages_then_only_the_newest(served) -> None:
    start, index, expiry, _, _, _, publisher = served
    client = await start()
    ws = await client.ws_connect(f"/ws?underlying=NIFTY&expiry={expiry}")
    await asyncio.wait_for(client.app[FANOUT].subscribed.wait(), 10)
    got = []
    for step in range(1, 7):  # six batches, one every 0.4 s (the server paces at 0.25 s)
        await publisher.publish_ticks("NIFTY", _ticks(index, OPEN + 300 + step, float(step)), index)
        await asyncio.sleep(0.4)
        while True:
            try:
                got.append(orjson.loads((await asyncio.wait_for(ws.receive(), 0.05)).data))
            except asyncio.TimeoutError:
                break
    assert len(got) == 2  # IN_FLIGHT unacknowledged messages, then the server holds back
    await ws.send_str("ack")
    newest = orjson.loads((await asyncio.wait_for(ws.receive(), 5)).data)
    call = int(np.flatnonzero(index.kind == InstrumentKind.CALL)[0])
    prices = {t["token"]: t["last_price"] for t in newest["ticks"]}
    assert prices[int(index.tokens[call])] == 100 + 6.0 * call  # the last batch's price, not a backlog
    await ws.close()


def _raw_get(port: int, path: str, header: bytes) -> bytes:
    """A request with raw header bytes (a client library would refuse to send them), over a real socket."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


async def test_a_credential_that_is_not_utf8_is_a_401_and_the_token_is_never_logged(served) -> None:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message} {exception}")
    try:
        client = await (served[0])("s3cret-token")
        port = client.server.port
        for header in (b"Authorization: Bearer \xff\xfe", b"Cookie: strikeflow_token=\xff"):
            response = await asyncio.to_thread(_raw_get, port, "/api/chains", header)
            assert response.startswith(b"HTTP/1.1 401"), response[:200]
    finally:
        logger.remove(sink)
    assert "s3cret-token" not in "\n".join(lines)


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_dashboard_token_is_a_configuration_error(pg_dsn: str, redis_url: str, blank: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.commands.cli", "web", "--host", "0.0.0.0", "--port", "0"],
                          env={"PATH": "/usr/bin:/bin", "STRIKEFLOW_PG_DSN": pg_dsn, "STRIKEFLOW_REDIS_URL": redis_url,
                               "STRIKEFLOW_DASHBOARD_TOKEN": blank}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("strikeflow web: configuration error: STRIKEFLOW_DASHBOARD_TOKEN: is empty or blank: "
                                   "set a real value, or unset the variable")


@pytest.mark.parametrize("underlying", ["NIFTY%00", "NIFTY%0AERROR", "A" * 40, "NIF'TY"])
async def test_an_underlying_that_is_no_name_is_a_400_not_a_database_error(served, underlying: str) -> None:
    client = await (served[0])()
    response = await client.get(f"/api/chain?underlying={underlying}&expiry=2026-12-31")
    assert response.status == 400 and "is not a name like NIFTY" in (await response.json())["error"]


async def test_viewers_over_the_caps_are_refused_with_a_clear_503(served) -> None:
    start, _, expiry, *_ = served
    client = await start(max_viewers=3, max_per_chain=2)
    url = f"/ws?underlying=NIFTY&expiry={expiry}"
    first, second = await client.ws_connect(url), await client.ws_connect(url)
    refused = await client.get(url, headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                             "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert refused.status == 503 and "the most one chain is served to" in (await refused.json())["error"]
    other = await client.ws_connect("/ws?underlying=NIFTY&expiry=2031-01-30")  # another chain: room in total
    refused = await client.get("/ws?underlying=BANKNIFTY&expiry=2031-01-30",
                               headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert refused.status == 503 and "3 live viewers at most" in (await refused.json())["error"]
    await first.close()
    for _ in range(50):  # the server notices the close
        if len(client.app[FANOUT].viewers) < 3:
            break
        await asyncio.sleep(0.05)
    third = await client.ws_connect(url)  # room again
    for ws in (second, other, third):
        await ws.close()
