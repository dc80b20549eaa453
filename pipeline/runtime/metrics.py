"""Prometheus metrics shared by the ingestor and the worker (one registry per process).

Names follow Prometheus conventions: ``*_total`` counters, base units
(seconds, bytes). On-call reads ingest rate vs processing rate vs publish
rate from the counters' rates, and staleness from the lag gauges.
"""

from __future__ import annotations

import urllib.request

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from pipeline.runtime.freshness import AgeGauge

REGISTRY = CollectorRegistry(auto_describe=True)

# ingest
FRAMES = Counter("strikeflow_ws_frames_total", "WebSocket binary frames received", ["connection"], registry=REGISTRY)
HEARTBEATS = Counter("strikeflow_ws_heartbeats_total", "1-byte heartbeats received", ["connection"], registry=REGISTRY)
FRAME_ERRORS = Counter("strikeflow_ws_frame_errors_total", "Frames rejected by the codec", ["reason"], registry=REGISTRY)
PARTIAL_PACKETS = Counter(
    "strikeflow_ws_partial_packets_total",
    "Packets below full mode (Kite's quote snapshot right after subscribe: no exchange time, no OI), not produced",
    ["mode"], registry=REGISTRY,
)
TICKS_INGESTED = Counter("strikeflow_ticks_ingested_total", "Ticks decoded and produced to Kafka", registry=REGISTRY)
RECONNECTS = Counter("strikeflow_ws_reconnects_total", "WebSocket reconnects", ["connection"], registry=REGISTRY)
MUTE_RECONNECTS = Counter("strikeflow_ws_mute_reconnects_total", "Connections reconnected because they were open "
                          "(heartbeats) but sent no data while another connection did", ["connection"], registry=REGISTRY)
WS_CONNECTION_ERRORS = Counter("strikeflow_ws_connection_errors_total",
                               "Sessions of a Kite connection ended by an unexpected error (reconnected with backoff)",
                               ["connection", "error"], registry=REGISTRY)
DEAD_LETTERS = Counter("strikeflow_dead_letters_total",
                       "Poison records sent to <topic>.dlq (never retried forever, never silently dropped)",
                       ["topic", "reason"], registry=REGISTRY)
VOL_INDEX_SKIPPED = Counter("strikeflow_vol_index_skipped_total",
                            "Closed minutes without a volatility index row, by reason (no_expiries, no_quotes, "
                            "few_strikes, negative_variance)", ["underlying", "reason"], registry=REGISTRY)
TICKS_REJECTED = Counter("strikeflow_ticks_rejected_total",
                         "Ticks rejected before they could move event time: exchange time implausible against the "
                         "receive clock (reason future: more than STRIKEFLOW_MAX_CLOCK_SKEW_S ahead)",
                         ["stage", "reason"], registry=REGISTRY)
WS_CONNECTED = Gauge("strikeflow_ws_connected", "1 when the connection is up", ["connection"], registry=REGISTRY)
PRODUCE_BUFFER_BYTES = Gauge(
    "strikeflow_produce_buffer_bytes", "Tick batches waiting for Kafka", registry=REGISTRY
)
PRODUCE_ERRORS = Counter("strikeflow_produce_errors_total", "Failed Kafka sends (retried)", registry=REGISTRY)
FEED_DATA_AGE = AgeGauge("strikeflow_feed_data_age_seconds", "Seconds since a Kite connection last delivered a data "
                         "frame (grows while the connection is silent)", "connection", REGISTRY)
INSTRUMENTS_SUBSCRIBED = Gauge("strikeflow_instruments_subscribed", "Instruments the ingestor subscribes",
                               registry=REGISTRY)
INSTRUMENTS_BUDGET = Gauge("strikeflow_instruments_budget", "Instruments the accounts allow (accounts x connections "
                           "x tokens per connection)", registry=REGISTRY)

# process
TICKS_PROCESSED = Counter("strikeflow_ticks_processed_total", "Ticks through the process agent", ["underlying"], registry=REGISTRY)
BAD_BATCHES = Counter("strikeflow_bad_batches_total", "Kafka records that were not valid batches", ["topic"], registry=REGISTRY)
FEED_GAPS = Counter("strikeflow_feed_gaps_total", "Silences in an underlying's receive times longer than "
                    "the dead-socket timeout (ingestor restarts, connection outages)", ["underlying"], registry=REGISTRY)
DUPLICATE_TICKS = Counter("strikeflow_duplicate_ticks_total", "Redelivered ticks dropped", registry=REGISTRY)
LATE_CORRECTIONS = Counter("strikeflow_late_corrections_total", "Bars re-emitted for late ticks", registry=REGISTRY)
TOO_LATE_TICKS = Counter("strikeflow_too_late_ticks_total", "Ticks older than the late window, dropped", registry=REGISTRY)
BARS_EMITTED = Counter("strikeflow_bars_emitted_total", "Closed bars produced", ["interval"], registry=REGISTRY)
ROLLUP_ROWS = Counter(
    "strikeflow_rollup_rows_total", "OI rollup rows produced (strike and chain, incl. late re-emissions)",
    ["table"], registry=REGISTRY,
)
EVENT_LAG = Gauge(
    "strikeflow_process_lag_seconds", "Wall time minus receive time of the last processed tick", ["underlying"], registry=REGISTRY
)
TICK_AGE = AgeGauge("strikeflow_tick_age_seconds", "Seconds since the receive time of the newest tick the worker "
                    "processed of an underlying (grows while its ticks stop coming)", "underlying", REGISTRY)
CHECKPOINTS = Counter("strikeflow_checkpoints_total", "Process-agent checkpoints by result (saved, failed, restored, "
                      "refused: not restorable here, none: no checkpoint to restore)", ["result"], registry=REGISTRY)
CHECKPOINT_BYTES = Gauge("strikeflow_checkpoint_bytes", "Size of the newest checkpoint of a ticks partition",
                         ["partition"], registry=REGISTRY)
CHECKPOINT_SECONDS = Histogram(
    "strikeflow_checkpoint_seconds", "Time to take and save one checkpoint (producer flush, state, database)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY,
)
CHECKPOINT_PAUSE_SECONDS = Histogram(
    "strikeflow_checkpoint_pause_seconds", "Time the process agent waited for a checkpoint (producer flush and "
    "snapshot, under the processing lock): a pause of the live path",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=REGISTRY,
)
UNCHECKPOINTED_RECORDS = Gauge("strikeflow_uncheckpointed_records",
                               "Processed ticks records not yet covered by a saved checkpoint (not yet acked)",
                               registry=REGISTRY)
TICK_TO_PROCESS = Histogram(
    "strikeflow_tick_to_process_seconds",
    "Receive (ingest) to the process agent taking the record (Kafka and the worker's queues), newest tick of each record",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
TICK_TO_PUBLISH = Histogram(
    "strikeflow_tick_to_publish_seconds",
    "Receive (ingest) to Redis publish latency",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)

# sinks
REDIS_PUBLISHED = Counter("strikeflow_redis_messages_total", "Redis messages published", ["kind"], registry=REGISTRY)
REDIS_TICKS_PUBLISHED = Counter("strikeflow_redis_ticks_published_total", "Live ticks published on ticks:<underlying>",
                                registry=REGISTRY)
REDIS_STALE = Counter("strikeflow_redis_stale_ticks_total",
                      "Live ticks too old to publish (a replay after a restart, or a long backlog)", registry=REGISTRY)
REDIS_NOT_NEWER = Counter("strikeflow_redis_not_newer_ticks_total",
                          "Live ticks not published because Redis already had a newer tick of the instrument "
                          "(a replay after a restart or a moved partition)", registry=REGISTRY)
REDIS_CONFLATED = Counter("strikeflow_redis_conflated_ticks_total", "Ticks replaced by newer ones before publishing",
                          registry=REGISTRY)
ROWS_WRITTEN = Counter("strikeflow_rows_written_total", "Rows upserted into PostgreSQL", ["table"], registry=REGISTRY)
BAR_WRITTEN_AGE = AgeGauge("strikeflow_bar_written_age_seconds", "Seconds since bars of an underlying were last "
                           "written to the database (grows while no bar is written)", "underlying", REGISTRY)
SINK_ERRORS = Counter("strikeflow_sink_errors_total", "Failed sink writes (retried)", ["sink"], registry=REGISTRY)

# --- liveness and the dashboard (pipeline.runtime.health, pipeline.commands.web)
TASK_DEATHS = Counter("strikeflow_background_task_deaths_total", "Background tasks the process needs that ended with "
                      "an error (or ended at all) while it ran", ["task"], registry=REGISTRY)
EVENT_LOOP_LAG = Gauge("strikeflow_event_loop_lag_seconds", "How late the event loop woke the last time (a blocked "
                       "loop: every request and record waits this long)", registry=REGISTRY)
DASHBOARD_VIEWERS = Gauge("strikeflow_dashboard_viewers", "Open live chain pages", registry=REGISTRY)
DASHBOARD_REFUSED = Counter("strikeflow_dashboard_refused_total", "Live chain viewers refused: over the caps on "
                            "viewers in total or per chain", registry=REGISTRY)
DASHBOARD_CONFLATED = Counter("strikeflow_dashboard_conflated_total", "Updates replaced by newer ones before a slow "
                              "browser read them", registry=REGISTRY)


def metrics_text() -> bytes:
    """The registry in Prometheus text exposition format."""
    return generate_latest(REGISTRY)


def scrape(url: str, timeout: float = 1.0) -> dict[str, float]:
    """Another process's /metrics, summed by sample name over labels, plus one entry per labelled
    sample as ``name{label=value,...}``; {} when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            if sample.labels:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                totals[f"{sample.name}{{{labels}}}"] = sample.value
    return totals
