"""Bars of one interval: ``builder`` (a bar from its ticks), ``watermark`` (when a bucket closes), ``slots``
(per-instrument state), ``late_store`` (closed buckets kept for corrections), ``aggregator`` (all together)."""
