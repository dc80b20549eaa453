"""`strikeflow bench`: a short smoke run against the session's real services (its shape and that nothing was
lost, never its speed), and the pure figures it reports."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from pipeline.commands.bench import validate
from pipeline.commands.bench_report import (
    Phase,
    Totals,
    bottleneck,
    kept_up,
    phase_figures,
    report_of,
)
from pipeline.commands.bench_run import Universe, accounts_for, universe_for
from pipeline.runtime.process_stats import ProcessSampler
from pipeline.runtime.settings import ConfigError
from sim.market import DEFAULT_UNDERLYINGS, build_instruments
from tests.test_demo import _processes_with_env

LATENCY_KEYS = {"p50", "p95", "p99", "max"}


@pytest.mark.integration
async def test_short_bench_reports_every_figure_loses_nothing_and_leaves_no_process(
    kafka_url: str, pg_dsn: str, redis_url: str, tmp_path: Path, unique_name: str
) -> None:
    env = {**os.environ, "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_PG_DSN": pg_dsn,
           "STRIKEFLOW_REDIS_URL": redis_url, "STRIKEFLOW_PG_SCHEMA": f"bench_{unique_name}",
           "STRIKEFLOW_DATA_DIR": str(tmp_path / "data")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "bench", "--seconds", "4", "--rate", "400",
        "--instruments", "60", "--warmup", "2", "--store-ticks", "--json",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    try:
        assert proc.returncode == 0, err.decode(errors="replace")[-4000:]
        lines = out.decode().strip().splitlines()
        assert len(lines) == 1, out.decode()[-2000:]  # exactly one JSON object on stdout
        report = json.loads(lines[0])
        assert "offered" in err.decode() and "verdict" not in err.decode()  # progress lines on stderr
    finally:
        conn = await asyncpg.connect(pg_dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "bench_{unique_name}" CASCADE')
        await conn.close()
    assert report["broker"] == "configured (STRIKEFLOW_KAFKA_URL)"
    for key in ("offered_tps", "sustained_tps", "published_tps", "bars_written_per_s", "lag_end_records"):
        assert isinstance(report[key], (int, float)), key
    assert set(report["latency_ms"]) == LATENCY_KEYS and set(report["bar_latency_ms"]) == LATENCY_KEYS
    assert report["latency_ms"]["p50"] is not None and report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    assert report["lost"] == {"ticks": 0, "bars": 0}
    assert report["offered_tps"] > 0 and report["sustained_tps"] > 0 and report["published_tps"] > 0
    assert report["ticks"]["processed"] == report["ticks"]["ingested"] > 0
    assert report["ticks"]["went_back_in_time"] == 0
    assert {"simulator", "ingest", "worker1", "bench"} <= set(report["rss_mb"]) <= set(report["cpu_percent"]) | {"bench"}
    assert all(v > 0 for v in report["rss_mb"].values())
    assert 40 <= report["instruments"] <= 80
    assert report["bars_1m_vs_raw_ticks"]["differ"] == 0
    assert report["verdict"].startswith(("kept up", "did not keep up"))
    assert _processes_with_env(str(tmp_path / "data")) == []


def _args(**overrides: object) -> argparse.Namespace:
    base = dict(seconds=30.0, rate=1000.0, instruments=1000, workers=1, partitions=10, warmup=5.0, step_factor=1.25,
                soak=False, find_max=False, store_ticks=False, p99_bound_ms=100.0)
    return argparse.Namespace(**{**base, **overrides})


@pytest.mark.unit
@pytest.mark.parametrize(("overrides", "message"), [
    ({"seconds": 0}, "--seconds"), ({"rate": -1}, "--rate"), ({"instruments": 5}, "--instruments"),
    ({"workers": 3, "partitions": 2}, "--partitions"), ({"soak": True, "seconds": 60}, "--soak"),
    ({"step_factor": 1.0}, "--step-factor"),
])
def test_bad_bench_arguments_are_one_clear_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(_args(**overrides))


@pytest.mark.unit
def test_universe_sizing_gives_about_the_instruments_asked_within_kite_limits() -> None:
    for wanted in (200, 1000, 10000):
        u = universe_for(wanted)
        rows = build_instruments([DEFAULT_UNDERLYINGS[n] for n in u.underlyings], dt.date(2026, 11, 23),
                                 u.expiries, u.strikes)
        assert 0.85 * wanted <= len(rows) <= 1.15 * wanted, (wanted, len(rows))
    assert universe_for(10000).underlyings == ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "SENSEX")
    assert accounts_for(2900) == 1 and accounts_for(9000) == 2 and accounts_for(10000) == 2
    assert accounts_for(18000) == 3


def _phase(rate: float, ingested: float, processed: float, p99: float | None, behind: float = 0.0) -> Phase:
    first = Totals(at=100.0, ingested=behind)  # ``behind`` ticks ingested before the phase, never processed
    last = Totals(at=110.0, offered=rate * 10, ingested=ingested * 10 + behind, processed=processed * 10,
                  received=processed * 10)
    return Phase(rate=rate, first=first, last=last, latency_ms={"p50": 1.0, "p95": 2.0, "p99": p99, "max": 9.0},
                 bar_latencies_ms=np.array([2100.0, 2300.0], dtype=np.float32), lag_records=3,
                 cpu={"worker1": 95.0, "ingest": 40.0})


@pytest.mark.unit
def test_phase_figures_are_rates_over_the_phase_and_judge_keeping_up() -> None:
    figures = phase_figures(_phase(1000, 1000, 1000, 20.0))
    assert figures["offered_tps"] == 1000 and figures["sustained_tps"] == 1000 and figures["seconds"] == 10
    assert figures["bar_latency_ms"]["max"] == 2300.0
    assert kept_up(figures, 100.0) == (True, "")
    ok, why = kept_up(phase_figures(_phase(1000, 1000, 800, 20.0)), None)
    assert not ok and "processed 800" in why
    ok, why = kept_up(phase_figures(_phase(1000, 1000, 1000, 150.0)), 100.0)
    assert not ok and "p99 150.0 ms" in why
    ok, why = kept_up(phase_figures(_phase(1000, 1000, 1000, 20.0, behind=5000)), None)
    assert not ok and "behind" in why
    ok, why = kept_up(phase_figures(_phase(1000, 500, 500, 20.0)), None)
    assert not ok and "ingestor took 500" in why


@pytest.mark.unit
def test_bottleneck_names_a_saturated_process_or_the_machine() -> None:
    assert "worker1 at 95%" in bottleneck({"worker1": 95.0, "ingest": 40.0})
    assert "2 cores" in bottleneck({"worker1": 80.0, "ingest": 60.0, "simulator": 50.0})
    assert "no process saturated" in bottleneck({"worker1": 30.0, "ingest": 20.0})


@pytest.mark.unit
def test_report_counts_ticks_missing_anywhere_on_the_way_as_lost() -> None:
    drained = Totals(at=200.0, ingested=1000, processed=990, received=900, filtered=50)
    report = report_of(_args(), Universe(("NIFTY",), 1, 5), [_phase(1000, 1000, 1000, 20.0)], drained, 2, 10, 0,
                       {"worker1": ProcessSampler(os.getpid())}, 100.0, None)
    assert report["lost"] == {"ticks": 10 + 40, "bars": 2}
    assert "LOST 50 ticks and 2 bars" in report["verdict"]
    whole = Totals(at=200.0, ingested=1000, processed=1000, received=950, filtered=50)
    report = report_of(_args(), Universe(("NIFTY",), 1, 5), [_phase(1000, 1000, 1000, 20.0)], whole, 0, 10, 0,
                       {}, 100.0, None)
    assert report["lost"] == {"ticks": 0, "bars": 0} and "nothing lost" in report["verdict"]
    json.dumps(report, allow_nan=False)
