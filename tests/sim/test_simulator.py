"""The simulator over real sockets: official Kite clients, protocol, limits and faults."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from pipeline.feed.kite_codec import decode_frame
from pipeline.feed.kite_wire import MODE_FULL, MODE_QUOTE
from sim.server import Simulator

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).with_name("kiteticker_client.py")


@pytest.fixture
async def sim(request: pytest.FixtureRequest, kite_simulator) -> tuple[Simulator, str]:  # noqa: ANN001
    return await kite_simulator(**getattr(request, "param", {}))


def _option_tokens(simulator: Simulator, n: int) -> list[int]:
    return [r["instrument_token"] for r in simulator.rows if r["instrument_type"] in ("CE", "PE")][:n]


async def _binary(ws: aiohttp.ClientWebSocketResponse, min_len: int = 2, timeout: float = 5.0) -> bytes:
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) >= min_len:
            return msg.data
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
            raise ConnectionError("closed")


async def test_kiteticker_official_client_receives_full_ticks_matching_our_codec(sim) -> None:  # noqa: ANN001
    simulator, addr = sim
    tokens = _option_tokens(simulator, 6) + [256265]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CLIENT), f"ws://{addr}", ",".join(map(str, tokens)), "full", "20",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    seen = json.loads(out.decode().strip().splitlines()[-1])
    full = [t for t in seen["ticks"] if t["mode"] == "full"]
    assert len(full) >= 20, err.decode()[-2000:]
    assert {t["instrument_token"] for t in full} <= set(tokens)
    start, now = simulator.start_ts, simulator.exchange_now()
    for tick in full:
        assert tick["last_price"] > 0
        assert start - 1 <= tick["exchange_timestamp"] <= now + 1
        if tick["tradable"]:
            assert len(tick["depth"]["buy"]) == 5 and tick["depth"]["sell"][0]["price"] > tick["depth"]["buy"][0]["price"]
            assert tick["oi"] % 75 == 0  # NIFTY lot size
    # every raw frame KiteTicker parsed decodes to the same numbers with our codec
    ours = np.concatenate([decode_frame(bytes.fromhex(h)) for h in seen["raw"]])
    theirs = seen["ticks"]
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(ours["last_price"], [t["last_price"] for t in theirs], rtol=0, atol=1e-9)
    assert ours["instrument_token"].tolist() == [t["instrument_token"] for t in theirs]


async def test_kiteconnect_loads_instruments_from_simulator_csv(sim) -> None:  # noqa: ANN001
    simulator, addr = sim
    from kiteconnect import KiteConnect

    kite = KiteConnect("anykey", access_token="anytoken", root=f"http://{addr}")
    rows = await asyncio.to_thread(kite.instruments)
    nfo = await asyncio.to_thread(kite.instruments, "NFO")
    assert len(rows) == len(simulator.rows)
    assert {r["exchange"] for r in nfo} == {"NFO"}
    assert {r["instrument_token"] for r in rows} == {r["instrument_token"] for r in simulator.rows}


@pytest.mark.parametrize("sim", [{"api_key": "good", "access_token": "secret"}], indirect=True)
async def test_wrong_credentials_upgrade_refused_with_403(sim) -> None:  # noqa: ANN001
    _, addr = sim
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"ws://{addr}/?api_key=good&access_token=wrong")
        assert info.value.status == 403
        ws = await http.ws_connect(f"ws://{addr}/?api_key=good&access_token=secret")
        await ws.close()
        async with http.get(f"http://{addr}/instruments", headers={"Authorization": "token good:wrong"}) as resp:
            assert resp.status == 403


@pytest.mark.parametrize("sim", [{"max_connections": 2}], indirect=True)
async def test_connection_limit_per_api_key_refuses_with_429(sim) -> None:  # noqa: ANN001
    _, addr = sim
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t")
        second = await http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t")
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t")
        assert info.value.status == 429
        other_key = await http.ws_connect(f"ws://{addr}/?api_key=other&access_token=t")
        for ws in (first, second, other_key):
            await ws.close()


@pytest.mark.parametrize("sim", [{"max_tokens": 4}], indirect=True)
async def test_token_limit_per_connection_subscribes_what_fits_and_sends_error(sim) -> None:  # noqa: ANN001
    simulator, addr = sim
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t") as ws:
        await ws.send_str(json.dumps({"a": "subscribe", "v": _option_tokens(simulator, 6)}))
        while True:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type == aiohttp.WSMsgType.TEXT:
                break
        error = json.loads(msg.data)
        assert error["type"] == "error" and "4" in error["data"]
        assert simulator.state()["connections"][0]["subscribed"] == 4


async def test_subscribe_sends_quote_snapshot_then_full_after_mode(sim) -> None:  # noqa: ANN001
    simulator, addr = sim
    tokens = _option_tokens(simulator, 3)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t") as ws:
        await ws.send_str(json.dumps({"a": "subscribe", "v": tokens + ["123", 999999999]}))
        snapshot = decode_frame(await _binary(ws))
        assert sorted(snapshot["instrument_token"].tolist()) == sorted(tokens)
        assert set(snapshot["mode"].tolist()) == {MODE_QUOTE}
        await ws.send_str(json.dumps({"a": "mode", "v": ["full", tokens]}))
        full = decode_frame(await _binary(ws))
        assert set(full["mode"].tolist()) == {MODE_FULL}
        await ws.send_str(json.dumps({"a": "unsubscribe", "v": tokens[:2]}))
        await asyncio.sleep(0.3)
        assert simulator.state()["subscribed_tokens"] == [tokens[2]]


async def test_heartbeats_arrive_every_second_without_subscriptions(sim) -> None:  # noqa: ANN001
    _, addr = sim
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t") as ws:
        beats = 0
        deadline = asyncio.get_running_loop().time() + 2.6
        while asyncio.get_running_loop().time() < deadline:
            try:
                msg = await asyncio.wait_for(ws.receive(), 3)
            except asyncio.TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) == 1:
                beats += 1
        assert beats >= 2


async def test_injected_faults_drop_malform_and_refuse(sim) -> None:  # noqa: ANN001
    simulator, addr = sim
    tokens = _option_tokens(simulator, 4)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t")
        await ws.send_str(json.dumps({"a": "subscribe", "v": tokens}))
        await _binary(ws)
        async with http.post(f"http://{addr}/_sim/fault/malformed?count=1") as resp:
            assert resp.status == 200
        from pipeline.feed.kite_wire import FrameError

        with pytest.raises(FrameError):
            decode_frame(await _binary(ws, min_len=3))
        async with http.post(f"http://{addr}/_sim/fault/drop?seconds=1.5") as resp:
            assert (await resp.json())["dropped"] == 1
        msg = await asyncio.wait_for(ws.receive(), 5)
        while msg.type == aiohttp.WSMsgType.BINARY:
            msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t")
        assert info.value.status == 503
        await asyncio.sleep(1.6)
        again = await http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t")
        await again.close()


async def test_recorded_capture_replays_the_same_ticks(kite_simulator, tmp_path) -> None:  # noqa: ANN001
    capture = tmp_path / "capture.bin"
    recorder, addr = await kite_simulator(record=capture, rate=300)
    tokens = _option_tokens(recorder, 4)
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t") as ws:
        await ws.send_str(json.dumps({"a": "subscribe", "v": tokens}))
        await ws.send_str(json.dumps({"a": "mode", "v": ["full", tokens]}))
        while recorder.frames_sent < 8:
            await _binary(ws)
    recorded = capture.read_bytes()
    assert len(recorded) > 0
    replayer, addr = await kite_simulator(replay=capture, speed=1000)
    got = []
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t") as ws:
        await ws.send_str(json.dumps({"a": "subscribe", "v": tokens[:2]}))
        deadline = asyncio.get_running_loop().time() + 3.0
        while asyncio.get_running_loop().time() < deadline:
            try:
                msg = await asyncio.wait_for(ws.receive(), 0.5)
            except asyncio.TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) > 1:
                got.append(decode_frame(msg.data))
    replayed = np.concatenate(got)
    assert len(replayed) > 0
    assert set(replayed["instrument_token"].tolist()) <= set(tokens[:2])  # only what this client subscribed
    assert (replayed["mode"] == MODE_FULL).all()  # the capture's mode


@pytest.mark.parametrize("sim", [{"rate": 200, "strikes": 15, "expiries": 1, "underlyings": ("NIFTY",)}],
                         indirect=True)
async def test_rate_follows_liquidity_and_changes_at_run_time(sim) -> None:  # noqa: ANN001
    simulator, addr = sim
    tokens = [r["instrument_token"] for r in simulator.rows]
    counts: dict[int, int] = {}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t")
        await ws.send_str(json.dumps({"a": "subscribe", "v": tokens}))
        await ws.send_str(json.dumps({"a": "mode", "v": ["full", tokens]}))

        async def ticks_in(seconds: float) -> int:
            n, end = 0, asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < end:
                frame = await _binary(ws)
                for t in decode_frame(frame):
                    if t["mode"] == MODE_FULL:
                        counts[int(t["instrument_token"])] = counts.get(int(t["instrument_token"]), 0) + 1
                        n += 1
            return n

        await ticks_in(0.5)  # the subscribe/mode snapshots
        slow = await ticks_in(2.0)
        async with http.post(f"http://{addr}/_sim/rate?tps=1000") as resp:
            assert resp.status == 200 and (await resp.json())["rate"] == 1000
        fast = await ticks_in(2.0)
        async with http.post(f"http://{addr}/_sim/rate?tps=-5") as resp:
            assert resp.status == 400
        async with http.post(f"http://{addr}/_sim/rate?tps=abc") as resp:
            assert resp.status == 400
        await ws.close()
    assert 200 <= slow <= 700 and fast > 2.5 * slow
    market = simulator.market
    by_strike = {int(market.tokens[i]): abs(market.strike[i] - market.spot["NIFTY"])
                 for i in np.flatnonzero(market.is_option)}
    near = sum(counts.get(t, 0) for t, d in by_strike.items() if d <= 100)
    far = sum(counts.get(t, 0) for t, d in by_strike.items() if d >= 500)
    n_near = sum(1 for d in by_strike.values() if d <= 100)
    n_far = sum(1 for d in by_strike.values() if d >= 500)
    assert near / n_near > 5 * far / max(n_far, 1)


async def test_fault_and_rate_endpoints_refuse_numbers_out_of_range_with_a_400_and_keep_working(sim) -> None:  # noqa: ANN001
    simulator, addr = sim
    async with aiohttp.ClientSession() as http:
        for path in ("/_sim/fault/stall?seconds=inf", "/_sim/fault/stall?seconds=abc", "/_sim/fault/refuse?seconds=-1",
                     "/_sim/fault/malformed?count=-100", "/_sim/fault/mute?client=x", "/_sim/rate?tps=Infinity",
                     "/_sim/rate?tps=nan", "/_sim/rate"):
            async with http.post(f"http://{addr}{path}") as response:
                assert response.status == 400, path
                assert "takes a" in await response.text(), path
        async with http.post(f"http://{addr}/_sim/rate?tps=250") as response:
            assert response.status == 200 and json.loads(await response.text()) == {"rate": 250.0}
        async with http.post(f"http://{addr}/_sim/fault/malformed?count=2") as response:
            assert response.status == 200
    assert simulator.config.rate == 250.0
