"""Pure pieces of the sinks: SQL rendering, migration files, JSON building, conflation."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import sink_helpers as h

from pipeline.core.rollups import OIRollup
from pipeline.records.time_units import label_of
from sinks.migrate import check_schema_name, load_migrations, render
from sinks.pg_copy import binary_copy
from sinks.redis.channels import Channels
from sinks.redis.conflation import BoundedRowQueue, latest_per_instrument
from sinks.redis.forward_gate import forward_ticks_call
from sinks.redis.payloads import (
    SCHEMA_VERSION,
    bar_messages,
    bar_objects,
    chain_messages,
    dumps,
    float_list,
    tick_objects,
)
from sinks.timescale_writer import (
    bars_upsert_sql,
    instrument_record,
    newest_versions,
    ticks_insert_sql,
)

pytestmark = pytest.mark.unit


def _strict_loads(text: str):
    def reject(token: str):
        raise ValueError(f"invalid JSON constant {token}")

    return json.loads(text, parse_constant=reject)


def test_migrations_ordered_and_timescale_marked():
    migrations = load_migrations()
    names = [m.name for m in migrations]
    assert names[:2] == ["0001_init", "0002_timescale"]
    assert names == sorted(names)
    assert "timescaledb" in migrations[1].requires
    assert not migrations[0].requires


def test_render_substitutes_quoted_schema():
    sql = render("CREATE TABLE {schema}.t (a int[] DEFAULT '{}')", "my_schema")
    assert sql == "CREATE TABLE \"my_schema\".t (a int[] DEFAULT '{}')"
    assert render("SELECT {timescaledb}.f()", "s", "public") == 'SELECT "public".f()'


def test_render_without_timescale_schema_raises():
    with pytest.raises(ValueError):
        render("SELECT {timescaledb}.f()", "s")


@pytest.mark.parametrize("bad", ["", "a;drop", 'x"y', "x'y", "1abc", "a" * 64, "a b"])
def test_bad_schema_name_rejected(bad):
    with pytest.raises(ValueError):
        check_schema_name(bad)


def test_init_migration_renders_every_table():
    sql = render(load_migrations()[0].sql, "s1")
    for table in ("instruments", "ticks", "bars_1m", "bars_5m", "bars_15m", "strike_bars_1m", "strike_bars_15m",
                  "chain_bars_1m", "chain_bars_15m"):
        assert f'"s1".{table} ' in sql
    assert "{schema}" not in sql


def test_bars_upsert_sql_newest_version_guard():
    sql = bars_upsert_sql("public", "bars_5m")
    assert 'INSERT INTO "public".bars_5m AS t' in sql
    assert "DISTINCT ON (s.instrument_token, s.bucket)" in sql
    assert "ORDER BY s.instrument_token, s.bucket, s.tick_count DESC, s.last_recv_ts DESC" in sql
    assert sql.rstrip().endswith(
        "WHERE EXCLUDED.tick_count > t.tick_count\n"
        "   OR (EXCLUDED.tick_count = t.tick_count AND EXCLUDED.last_recv_ts >= t.last_recv_ts)"
    )
    assert "DO NOTHING" in ticks_insert_sql("public")


def test_instrument_record_kite_dict_converted():
    rows = h.instrument_rows()
    spot = instrument_record(rows[0])
    call = instrument_record(rows[2])
    assert spot[0] == h.SPOT and spot[4] is None  # '' expiry -> NULL
    assert call[4] == h.EXPIRY and call[5] == 22000.0 and call[7] == 75 and call[1] == "7"
    assert instrument_record({**rows[2], "expiry": "2030-01-31"})[4] == h.EXPIRY


def test_float_list_nan_becomes_none():
    assert float_list(np.array([1.5, np.nan, np.inf])) == [1.5, None, None]
    assert float_list(np.array([1.0, 2.0])) == [1.0, 2.0]


def test_tick_objects_options_carry_greeks_and_json_is_valid():
    objs = tick_objects(h.ticks(), h.index())
    by_token = {o["token"]: o for o in objs}
    call = by_token[h.CALL]
    assert call["type"] == "CE" and call["strike"] == 22000.0 and call["expiry"] == "2030-01-31"
    assert call["iv"] == 0.14 and call["gamma"] is None and call["ask"] is None
    assert call["symbol"] == "NIFTY30JAN22000CE"
    assert (call["mid_iv"], call["forward_source"], call["stale"], call["near_expiry"]) == (0.141, "future", False, False)
    assert by_token[h.PUT]["type"] == "PE"
    assert by_token[h.FUT]["type"] == "FUT" and "iv" not in by_token[h.FUT]
    assert by_token[h.SPOT]["type"] == "INDEX" and "expiry" not in by_token[h.SPOT]
    assert "stale" not in by_token[h.SPOT] and "mid_iv" not in by_token[h.FUT]
    text = dumps({"ticks": objs})
    assert "NaN" not in text
    assert _strict_loads(text)["ticks"][0]["recv_ts"] == int(h.ticks()["recv_ts"][0])


def test_tick_objects_unknown_token_named_by_number():
    objs = tick_objects(h.ticks(tokens=(99,)), h.index())
    assert objs[0]["symbol"] == "99" and "type" not in objs[0]


def test_forward_ticks_call_orders_by_recv_ts_and_points_each_tick_at_its_snapshot_hash():
    older = h.ticks(price=100.0)
    newer = h.ticks(recv_start=1_900_000_000_000_101, price=200.0)
    keys, args = forward_ticks_call(Channels("p:"), "NIFTY", np.concatenate([newer, older]), h.index(),
                                    ttl_s=60, per_instrument=True)
    assert keys[:2] == ["p:ticks:NIFTY", "p:snapshot_recv:NIFTY"]
    assert sorted(keys[2:]) == ["p:snapshot:NIFTY:2030-01-31", "p:snapshot:NIFTY:spot"]
    head, ttl, tick_prefix, rest = args[0], args[1], args[2], args[3:]
    assert ttl == 60 and tick_prefix == "p:tick:"
    assert _strict_loads(f"{head}]}}")["schema_version"] == SCHEMA_VERSION
    quads = [rest[i:i + 4] for i in range(0, len(rest), 4)]
    assert len(quads) == 8
    recvs = [recv for _, recv, _, _ in quads]
    assert recvs == sorted(recvs)  # oldest first: the newest tick of each instrument is the last one kept
    for token, recv, slot, text in quads:
        tick = _strict_loads(text)
        assert (tick["token"], tick["recv_ts"]) == (token, recv)
        assert keys[slot - 1].endswith(tick.get("expiry", "spot"))  # Lua's KEYS are 1-based


def test_forward_ticks_call_without_ttl_or_per_instrument_channels_passes_zero_and_empty():
    _, args = forward_ticks_call(Channels(), "NIFTY", h.ticks(), h.index(), ttl_s=None, per_instrument=False)
    assert args[1:3] == [0, ""]


def test_build_bars_one_message_per_timeframe():
    batch = np.concatenate([h.bars(60), h.bars(300), h.bars(60, tokens=(h.PUT,))])
    batch["vwap"][0] = np.nan
    messages = bar_messages(Channels(), "NIFTY", batch, h.index())
    assert [c for c, _ in messages] == ["bars:1m:NIFTY", "bars:5m:NIFTY"]
    first = _strict_loads(messages[0][1])
    assert first["timeframe"] == "1m" and len(first["bars"]) == 2 and first["schema_version"] == SCHEMA_VERSION
    assert [b["correction"] for b in first["bars"]] == [False, False]
    assert first["bars"][0]["vwap"] is None and first["bars"][0]["symbol"] == "NIFTY30JAN22000CE"


def test_bar_objects_without_index_have_no_symbol():
    assert "symbol" not in bar_objects(h.bars())[0]


def test_timeframe_names():
    assert [label_of(s) for s in (60, 300, 900, 30)] == ["1m", "5m", "15m", "30s"]


def test_latest_per_instrument_keeps_newest_recv_ts_in_receive_order():
    a = h.ticks(tokens=(h.CALL, h.PUT), recv_start=10, price=1.0)
    b = h.ticks(tokens=(h.PUT, h.CALL), recv_start=20, price=2.0)
    out = latest_per_instrument(np.concatenate([b, a]))  # arrival order need not be recv order
    assert out["instrument_token"].tolist() == [h.PUT, h.CALL]
    assert out["recv_ts"].tolist() == [20, 21]


def test_bounded_row_queue_drops_oldest_batches_but_keeps_the_newest() -> None:
    queue = BoundedRowQueue(max_rows=5)
    assert not queue.append("NIFTY", h.bars(60, tokens=(h.CALL, h.PUT)))
    assert not queue.append("NIFTY", h.bars(60, tokens=(h.CALL, h.PUT)))
    assert queue.append("BANKNIFTY", h.bars(60, tokens=(h.CALL, h.PUT)))  # 6 rows > 5: the oldest batch goes
    assert queue.rows == 4 and queue.dropped == 2 and len(queue) == 2
    assert queue.append("NIFTY", np.concatenate([h.bars(60)] * 6))  # one batch bigger than the bound stays
    assert len(queue) == 1 and queue.rows == len(queue.peek()[1])
    underlying, rows = queue.pop()
    assert underlying == "NIFTY" and queue.rows == 0 and len(queue) == 0


def test_channel_names_carry_the_prefix_and_timeframe_label() -> None:
    ch = Channels("t1:")
    assert ch.ticks("NIFTY") == "t1:ticks:NIFTY" and ch.tick(7) == "t1:tick:7"
    assert ch.bars(300, "NIFTY") == "t1:bars:5m:NIFTY" and ch.chain("NIFTY", "2030-01-31") == "t1:chain:NIFTY:2030-01-31"
    assert ch.snapshot("NIFTY", "") == "t1:snapshot:NIFTY:spot"


def test_a_corrected_bar_says_so_and_chain_messages_carry_the_schema_version() -> None:
    bars = h.bars(60, tokens=(h.CALL, h.PUT))
    bars["correction"] = [1, 0]
    (_, message), = bar_messages(Channels(), "NIFTY", bars, h.index())
    assert [b["correction"] for b in _strict_loads(message)["bars"]] == [True, False]
    rows = OIRollup("NIFTY", 60).update(h.bars(60), h.index())[1]
    (channel, chain), = chain_messages(Channels(), "NIFTY", rows)
    assert channel == "chain:NIFTY:2030-01-31" and _strict_loads(chain)["schema_version"] == SCHEMA_VERSION


def test_newest_versions_keeps_most_ticks_then_newest_then_last_emitted() -> None:
    a = h.bars(60, tokens=(h.CALL,))
    more = a.copy()
    more["tick_count"] += 1
    more["last_recv_ts"] -= 10  # more ticks wins even with an older version
    volume_fix = a.copy()
    volume_fix["volume"] = 7  # same version, emitted later: a volume-only correction
    other = h.bars(60, tokens=(h.PUT,))
    kept = newest_versions(np.concatenate([a, volume_fix, other]))
    assert sorted(zip(kept["instrument_token"].tolist(), kept["volume"].tolist())) == sorted([(h.CALL, 7), (h.PUT, 1500)])
    assert newest_versions(np.concatenate([more, a]))["tick_count"].tolist() == [43]


def test_binary_copy_lays_out_header_rows_and_trailer_in_network_order():
    rows = np.zeros(2, [("a", "<i8"), ("b", "<f8"), ("c", "<i4")])
    rows["a"], rows["b"], rows["c"] = [1, -2], [0.5, np.nan], [7, 8]
    payload = binary_copy(rows, [("a", "bigint"), ("b", "float8"), ("c", "integer")])
    assert payload.startswith(b"PGCOPY\n\xff\r\n\x00" + bytes(8)) and payload.endswith(b"\xff\xff")
    body = payload[19:-2]
    assert len(body) == 2 * (2 + (4 + 8) + (4 + 8) + (4 + 4))
    first = struct.unpack(">hiqidii", body[:34])
    assert first[:6] == (3, 8, 1, 8, 0.5, 4) and first[6] == 7


def test_binary_copy_refuses_variable_width_columns():
    with pytest.raises(ValueError, match="not text"):
        binary_copy(np.zeros(1, [("a", "<i8")]), [("a", "text")])
