"""``fraud-features``: payments → analytics.fraud_features (point-in-time, tokens only)."""

from __future__ import annotations

from pipelines import graph

DATASETS = ("payment_event",)


def build(p, options) -> dict:
    prepared = graph.read_and_prepare(p, options, DATASETS)
    payments = graph.protect(prepared, options)["payment_event"]
    features = graph.fraud_features(payments)
    quarantine = graph.quarantine_rows(prepared, options)
    graph.write_tables({"analytics.fraud_features": features}, options, extra=[quarantine])
    return {"analytics.fraud_features": features, "quarantine": quarantine}


def run(argv=None):
    options = graph.pipeline_options(argv)
    graph.preflight(options, DATASETS)
    return graph.run_pipeline(options, build)
