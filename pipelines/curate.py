"""``curate``: payments, chargebacks and KYC updates → curated tables + quarantine."""

from __future__ import annotations

from pipelines import graph
from schemas import DATASETS


def build(p, options) -> dict:
    prepared = graph.read_and_prepare(p, options, DATASETS)
    curated = graph.curated_rows(p, graph.protect(prepared, options))
    quarantine = graph.quarantine_rows(prepared, options)
    graph.write_tables(curated, options, extra=[quarantine])
    return {**curated, "quarantine": quarantine}


def run(argv=None):
    options = graph.pipeline_options(argv)
    graph.preflight(options, DATASETS)
    return graph.run_pipeline(options, build)
