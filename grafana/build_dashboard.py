#!/usr/bin/env python3
"""Writes grafana/prescient.json, the Grafana dashboard, from the panel list below (edit here,
then run `python3 grafana/build_dashboard.py`). scripts/check_dashboard.py evaluates every
panel's query against a real Prometheus scraping a real prescient.

The datasource is the variable ${datasource} (any Prometheus); `instance` filters instances.
The job metrics' `job` label (the issue's name) collides with Prometheus's own target label, so
under the default `honor_labels: false` Prometheus stores it as `exported_job`, which the job
panels use. Store-level series (prescient_store_*) are mirrored by every instance from the same store, so
their panels take max() across instances rather than sum().
"""
import json
import os

SEL = 'instance=~"$instance"'

# (row title, [(panel title, unit, [(legend, expr)], kind)])
ROWS = [
    ("Traffic", [
        ("Commands/s by class", "ops", [
            ("{{class}}", f'sum by (class) (rate(prescient_command_duration_seconds_count{{{SEL}}}[1m]))'),
        ], "timeseries"),
        ("Latency p50 / p99", "s", [
            ("p50", f'histogram_quantile(0.5, sum by (le) (rate(prescient_command_duration_seconds_bucket{{{SEL}}}[5m])))'),
            ("p99", f'histogram_quantile(0.99, sum by (le) (rate(prescient_command_duration_seconds_bucket{{{SEL}}}[5m])))'),
        ], "timeseries"),
        ("Clients connected", "short", [
            ("{{instance}}", f'prescient_clients_connected{{{SEL}}}'),
        ], "timeseries"),
        ("Errors/s", "ops", [
            ("{{outcome}}", f'sum by (outcome) (rate(prescient_commands_total{{{SEL},outcome!="ok"}}[5m])) or label_replace(sum(rate(prescient_commands_total{{{SEL}}}[5m])) * 0, "outcome", "error", "", "")'),
        ], "timeseries"),
        ("Upstream up", "short", [
            ("{{instance}}", f'prescient_upstream_up{{{SEL}}}'),
        ], "stat"),
    ]),
    ("Cache", [
        ("Hit ratio", "percentunit", [
            ("hit ratio", f'max(rate(prescient_store_keyspace_hits_total{{{SEL}}}[5m])) / (max(rate(prescient_store_keyspace_hits_total{{{SEL}}}[5m])) + max(rate(prescient_store_keyspace_misses_total{{{SEL}}}[5m])))'),
        ], "timeseries"),
        ("Memory used", "bytes", [
            ("used_memory", f'max(prescient_store_used_memory_bytes{{{SEL}}})'),
        ], "timeseries"),
        ("Keys", "short", [
            ("keys", f'max(prescient_store_keys{{{SEL}}})'),
        ], "timeseries"),
        ("Evictions and expirations/s", "ops", [
            ("evicted", f'max(rate(prescient_store_evicted_keys_total{{{SEL}}}[5m]))'),
            ("expired", f'max(rate(prescient_store_expired_keys_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
    ]),
    ("Compression", [
        ("Stored / original bytes", "percentunit", [
            ("ratio", f'sum(rate(prescient_compression_bytes_after_total{{{SEL}}}[5m])) / sum(rate(prescient_compression_bytes_before_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
        ("Bytes saved/s", "Bps", [
            ("saved", f'sum(rate(prescient_compression_bytes_before_total{{{SEL}}}[5m])) - sum(rate(prescient_compression_bytes_after_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
        ("Codec time (CPU share)", "percentunit", [
            ("compress", f'sum(rate(prescient_compression_seconds_total{{{SEL}}}[5m]))'),
            ("decompress", f'sum(rate(prescient_decompression_seconds_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
    ]),
    ("Prefetch", [
        ("Precision and coverage", "percentunit", [
            ("precision", f'avg(prescient_prefetch_precision_ratio{{{SEL}}})'),
            ("coverage", f'avg(prescient_prefetch_coverage_ratio{{{SEL}}})'),
        ], "timeseries"),
        ("Late share", "percentunit", [
            ("late", f'sum(rate(prescient_prefetch_outcomes_total{{{SEL},class="late"}}[5m])) / sum(rate(prescient_prefetch_outcomes_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
        ("Outcomes/s by class", "ops", [
            ("{{class}}", f'sum by (class) (rate(prescient_prefetch_outcomes_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
        ("Queue depth", "short", [
            ("{{instance}}", f'prescient_prefetch_queue_size{{{SEL}}}'),
        ], "timeseries"),
        ("Worker throughput", "ops", [
            ("processed", f'sum(rate(prescient_prefetch_processed_total{{{SEL}}}[1m]))'),
            ("failed", f'sum(rate(prescient_prefetch_failed_total{{{SEL}}}[1m]))'),
        ], "timeseries"),
        ("Live threshold", "short", [
            ("{{instance}}", f'prescient_prefetch_threshold{{{SEL}}}'),
        ], "timeseries"),
        ("Origin load factor", "short", [
            ("{{instance}}", f'prescient_prefetch_load_factor{{{SEL}}}'),
        ], "timeseries"),
    ]),
    ("Origin", [
        ("Requests/s by route and outcome", "ops", [
            ("{{route}} {{outcome}}", f'sum by (route, outcome) (rate(prescient_origin_requests_total{{{SEL}}}[1m]))'),
        ], "timeseries"),
        ("Latency p99 by route", "s", [
            ("{{route}}", f'histogram_quantile(0.99, sum by (le, route) (rate(prescient_origin_request_duration_seconds_bucket{{{SEL}}}[5m])))'),
        ], "timeseries"),
        ("Breaker (0 closed, 1 open, 2 half-open)", "short", [
            ("{{origin}}", f'max by (origin) (prescient_origin_breaker_state{{{SEL}}})'),
        ], "timeseries"),
        ("Stale served/s", "ops", [
            ("{{route}}", f'sum by (route) (rate(prescient_origin_stale_served_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
    ]),
    ("Jobs", [
        ("Runs/s by job and outcome", "ops", [
            ("{{exported_job}} {{outcome}}", f'sum by (exported_job, outcome) (rate(prescient_job_runs_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
        ("Failures in the last hour", "short", [
            ("{{exported_job}}", f'sum by (exported_job) (increase(prescient_job_runs_total{{{SEL},outcome!="ok"}}[1h])) or sum by (exported_job) (prescient_job_runs_total{{{SEL}}}) * 0'),
        ], "timeseries"),
        ("Time since last success", "s", [
            ("{{exported_job}}", f'time() - max by (exported_job) (prescient_job_last_success_timestamp_seconds{{{SEL}}})'),
        ], "timeseries"),
        ("Leader", "short", [
            ("{{instance}}", f'prescient_job_leader{{{SEL}}}'),
        ], "stat"),
    ]),
    ("Tracking", [
        ("Learner lag p99", "s", [
            ("p99", f'histogram_quantile(0.99, sum by (le) (rate(prescient_prefetch_prediction_lag_seconds_bucket{{{SEL}}}[5m])))'),
        ], "timeseries"),
        ("Reads learned and shed/s", "ops", [
            ("learned", f'sum(rate(prescient_tracking_learned_total{{{SEL}}}[5m]))'),
            ("shed", f'sum(rate(prescient_tracking_shed_total{{{SEL}}}[5m]))'),
            ("dropped", f'sum(rate(prescient_tracking_dropped_total{{{SEL}}}[5m]))'),
        ], "timeseries"),
        ("Model size", "bytes", [
            ("{{instance}}", f'prescient_tracking_model_bytes{{{SEL}}}'),
        ], "timeseries"),
    ]),
]


def panel(pid, title, unit, targets, kind, x, y):
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def build():
    panels, pid, y = [], 1, 0
    for row, items in ROWS:
        panels.append({"id": pid, "type": "row", "title": row, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        for i, (title, unit, targets, kind) in enumerate(items):
            panels.append(panel(pid, title, unit, targets, kind, (i % 3) * 8, y + (i // 3) * 8))
            pid += 1
        y += ((len(items) + 2) // 3) * 8
    return {
        "title": "prescient",
        "uid": "prescient",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "tags": ["prescient", "redis"],
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
             "current": {}, "hide": 0},
            {"name": "instance", "type": "query", "label": "Instance",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(prescient_upstream_up, instance)", "refId": "instance"},
             "definition": "label_values(prescient_upstream_up, instance)",
             "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "hide": 0},
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prescient.json")
    with open(out, "w") as f:
        json.dump(build(), f, indent=2)
        f.write("\n")
    print(f"wrote {out}")
