"""``strikeflow web``: the live option-chain dashboard and its JSON API (read-only).

Pages: ``/`` lists the chains with data; ``/chain?underlying=NIFTY&expiry=2026-12-08`` is one chain, drawn
at once from ``/api/chain`` and then updated over the WebSocket ``/ws`` (same query), with an OI-by-strike
chart and an intraday PCR / ATM IV chart from ``/api/series``. The charting library (uPlot, MIT) is served
from ``web_static/``: nothing is fetched from the internet.

The server subscribes to Redis once and fans out (``sinks.redis.live_fanout``): slow browsers get fewer,
fresher updates, never a growing queue. Every route is a GET: there is nothing to write.

Access: bound to ``STRIKEFLOW_DASHBOARD_HOST`` (127.0.0.1 by default). Beyond loopback a bearer token
(``STRIKEFLOW_DASHBOARD_TOKEN``) is required to start; when one is configured every request must carry it,
as ``Authorization: Bearer <token>`` or the ``strikeflow_token`` cookie that ``/?token=<token>`` sets
(a browser cannot put a header on a page or WebSocket request); otherwise 401. The token is never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hmac
import ipaddress
import re
import signal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from loguru import logger

from pipeline.commands.bounded_site import BoundedTCPSite, connection_cap
from pipeline.runtime import metrics
from pipeline.runtime.redaction import redact_url
from pipeline.runtime.settings import ConfigError, Settings
from sinks.dashboard_reads import chain_list, chain_view, series_view
from sinks.migrate import schema_problem
from sinks.redis.channels import Channels
from sinks.redis.live_fanout import ChainViewer, LiveFanout

STATIC_DIR = Path(__file__).with_name("web_static")
TOKEN_COOKIE = "strikeflow_token"
IN_FLIGHT = 2  # live messages a client may hold unacknowledged (see _ws)
_STATE = web.AppKey("dashboard", dict)
FANOUT = web.AppKey("fanout", LiveFanout)  # the app's one Redis subscription (tests wait for it)
_SERVICE_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, aioredis.RedisError)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                        content_type="application/json")


_UNDERLYING = re.compile(r"[A-Z0-9&-]{1,32}")  # Kite's underlying names (NIFTY, M&M, BAJAJ-AUTO)


def _chain_args(request: web.Request) -> tuple[str, dt.date]:
    """(underlying, expiry) of the query, or a 400 naming what is wrong."""
    underlying = request.query.get("underlying", "").strip().upper()
    expiry = request.query.get("expiry", "").strip()
    if not underlying or not expiry:
        raise web.HTTPBadRequest(text=orjson.dumps({"error": "give underlying and expiry, e.g. "
                                                    "?underlying=NIFTY&expiry=2026-12-08"}).decode(),
                                 content_type="application/json")
    if not _UNDERLYING.fullmatch(underlying):
        raise web.HTTPBadRequest(text=orjson.dumps({"error": f"underlying {underlying[:40]!r} is not a name like "
                                                    "NIFTY (letters, digits, & and -, at most 32)"}).decode(),
                                 content_type="application/json")
    try:
        return underlying, dt.date.fromisoformat(expiry)
    except ValueError:
        raise web.HTTPBadRequest(text=orjson.dumps({"error": f"expiry {expiry!r} is not a date (YYYY-MM-DD)"}).decode(),
                                 content_type="application/json") from None


def _same_secret(offered: str, token: str) -> bool:
    """Constant-time comparison as bytes: a header or cookie that is not valid UTF-8 (aiohttp keeps its bytes
    as surrogates) is simply not the token, never an error."""
    return hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape"))


def _auth_middleware(token: str | None) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if token is None:
            return await handler(request)
        given = request.query.get("token") if request.path == "/" else None
        if given is not None and _same_secret(given, token):
            response = web.HTTPFound("/")
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            raise response
        header = request.headers.get("Authorization", "")
        offered = header[7:] if header.startswith("Bearer ") else request.cookies.get(TOKEN_COOKIE, "")
        if not _same_secret(offered, token):
            return _json({"error": "unauthorized: send Authorization: Bearer <token>"}, status=401)
        return await handler(request)

    return auth


async def _api_chains(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        return _json({"chains": await chain_list(state["pool"], state["schema"])})
    except _SERVICE_ERRORS as exc:
        return _unavailable("database", exc)


async def _api_chain(request: web.Request) -> web.Response:
    underlying, expiry = _chain_args(request)
    state = request.app[_STATE]
    try:
        view = await chain_view(state["pool"], state["redis"], state["channels"], state["schema"], underlying, expiry)
    except _SERVICE_ERRORS as exc:
        return _unavailable("database or Redis", exc)
    if not view["rows"] and view["chain"] is None:
        return _json({"error": f"no data for {underlying} {expiry.isoformat()}"}, status=404)
    return _json(view)


async def _api_series(request: web.Request) -> web.Response:
    underlying, expiry = _chain_args(request)
    state = request.app[_STATE]
    try:
        return _json(await series_view(state["pool"], state["schema"], underlying, expiry))
    except _SERVICE_ERRORS as exc:
        return _unavailable("database", exc)


def _unavailable(what: str, exc: BaseException) -> web.Response:
    logger.warning("dashboard: {} unavailable ({})", what, type(exc).__name__)
    return _json({"error": f"{what} unavailable ({type(exc).__name__}); retry shortly"}, status=503)


async def _ws(request: web.Request) -> web.WebSocketResponse:
    """Live updates of one chain. Flow control: the client acknowledges each message it has handled (any
    text message, e.g. "ack"); at most ``IN_FLIGHT`` messages are unacknowledged, the rest is conflated in
    the viewer. Without it a slow browser's socket buffers would queue seconds of stale updates."""
    underlying, expiry = _chain_args(request)
    fanout = request.app[FANOUT]
    refusal = fanout.refusal(underlying, expiry.isoformat())
    if refusal:
        metrics.DASHBOARD_REFUSED.inc()
        return _json({"error": f"too many viewers: {refusal}; retry later"}, status=503)  # type: ignore[return-value]
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)
    viewer = ChainViewer(underlying, expiry.isoformat())
    fanout.add(viewer)
    metrics.DASHBOARD_VIEWERS.inc()
    credit = asyncio.BoundedSemaphore(IN_FLIGHT)
    reader = asyncio.create_task(_read_acks(ws, credit))
    try:
        while not ws.closed:
            if not await _unless_closed(credit.acquire(), reader):
                break
            update = await _unless_closed(viewer.take(), reader)  # the newest of everything since the last one
            if update is None:
                break
            await ws.send_bytes(orjson.dumps(update))
            await asyncio.sleep(request.app[_STATE]["update_interval_s"])  # what arrives meanwhile is conflated
    except (ConnectionResetError, RuntimeError):
        pass  # the browser went away mid-send
    finally:
        fanout.remove(viewer)
        metrics.DASHBOARD_VIEWERS.dec()
        reader.cancel()
    return ws


async def _unless_closed(awaitable: Any, reader: asyncio.Task) -> Any:
    """The awaitable's result, or None when the client's reader ends first (the socket closed)."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task, reader}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    return None


async def _read_acks(ws: web.WebSocketResponse, credit: asyncio.BoundedSemaphore) -> None:
    """Each text message from the client is an acknowledgement (one more message may be sent); returns when
    the socket closes."""
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            with contextlib.suppress(ValueError):  # more acks than messages: ignored
                credit.release()
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return


def _page(name: str) -> Any:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})
    return handler


async def _health(request: web.Request) -> web.Response:
    fanout = request.app[FANOUT]
    ok = fanout.subscribed.is_set()
    return _json({"status": "ok" if ok else "failing", "viewers": len(fanout.viewers),
                  **({} if ok else {"problems": ["not subscribed to Redis"]})}, status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=metrics.metrics_text(), content_type="text/plain")


def build_app(pool: asyncpg.Pool, redis: Any, schema: str, token: str | None, channels: Channels = Channels(),
              update_interval_s: float = 0.25, max_viewers: int = 1000, max_per_chain: int = 200) -> web.Application:
    """The dashboard application over an open pool and Redis client; the fan-out runs while it serves. A page
    gets at most one update per ``update_interval_s``: a chain ticks hundreds of times a second, a person
    reads a few, and a browser's main thread that redraws on every tick falls behind."""
    app = web.Application(middlewares=[_auth_middleware(token)])
    fanout = LiveFanout(redis, channels, on_conflated=metrics.DASHBOARD_CONFLATED.inc, max_viewers=max_viewers,
                        max_per_chain=max_per_chain)
    app[_STATE] = {"pool": pool, "redis": redis, "schema": schema, "channels": channels,
                   "update_interval_s": update_interval_s}
    app[FANOUT] = fanout
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/chain", _page("chain.html"))
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_get("/api/chains", _api_chains)
    app.router.add_get("/api/chain", _api_chain)
    app.router.add_get("/api/series", _api_series)
    app.router.add_get("/ws", _ws)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)

    async def fanout_task(app: web.Application) -> Any:
        task = asyncio.create_task(_keep_subscribed(fanout), name="dashboard-fanout")
        yield
        task.cancel()

    app.cleanup_ctx.append(fanout_task)
    return app


async def _keep_subscribed(fanout: LiveFanout) -> None:
    """Run the subscription; when Redis drops it, log, wait, subscribe again (the pages keep their last values)."""
    delay = 1.0
    while True:
        try:
            await fanout.run()
        except aioredis.RedisError as exc:
            logger.warning("dashboard: Redis subscription lost ({}); resubscribing in {:.0f}s", type(exc).__name__, delay)
        except Exception:  # noqa: BLE001 - the dashboard must outlive one bad message
            logger.exception("dashboard: the Redis fan-out failed; resubscribing")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 15.0)


async def serve(settings: Settings, host: str, port: int) -> None:
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
    pg_dsn = settings.pg_dsn.get_secret_value()
    pool = await asyncpg.create_pool(pg_dsn, min_size=0, max_size=4, timeout=10)
    redis = aioredis.from_url(settings.redis_url.get_secret_value())
    app = build_app(pool, redis, settings.pg_schema, token, update_interval_s=settings.dashboard_update_interval_s,
                    max_viewers=settings.dashboard_max_viewers, max_per_chain=settings.dashboard_max_viewers_per_chain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await BoundedTCPSite(runner, host, port, max_connections=connection_cap(settings.dashboard_max_connections),
                             request_timeout_s=settings.dashboard_request_timeout_s).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"configuration error: STRIKEFLOW_DASHBOARD_PORT: cannot listen on {host}:{port} "
                          f"({exc.strerror or exc}); choose another port") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    print(f"dashboard http://{host}:{bound}/", flush=True)
    logger.info("dashboard on http://{}:{}/ (PostgreSQL {}, Redis {}){}", host, bound, redact_url(pg_dsn),
                redact_url(settings.redis_url.get_secret_value()), ", bearer token required" if token else "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await redis.aclose()
        await pool.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: STRIKEFLOW_DASHBOARD_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: STRIKEFLOW_DASHBOARD_PORT; 0 = any free)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.dashboard_host
    port = settings.dashboard_port if args.port is None else args.port
    if not settings.pg_dsn or not settings.redis_url:
        raise ConfigError("configuration error: STRIKEFLOW_PG_DSN and STRIKEFLOW_REDIS_URL: the dashboard reads both")
    if not is_loopback(host) and settings.dashboard_token is None:
        raise ConfigError(f"configuration error: STRIKEFLOW_DASHBOARD_TOKEN: required to serve the dashboard beyond "
                          f"loopback ({host}); set a long random token, or bind 127.0.0.1")
    problem = asyncio.run(schema_problem(settings.pg_dsn.get_secret_value(), settings.pg_schema))
    if problem:
        raise ConfigError(problem)
    asyncio.run(serve(settings, host, port))
    return 0
