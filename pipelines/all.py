"""``all``: every dataset into every table of ARCHITECTURE.md section 4, in one pipeline.

curated.payment_event / chargeback / kyc_profile, analytics.fraud_features /
finance_hourly and quarantine.<dataset>, in the lake (``--lake``) and the
warehouse (``--warehouse``), by natural key.
"""

from __future__ import annotations

from pipelines import graph
from schemas import DATASETS


def build(p, options) -> dict:
    sources = graph.read_sources(p, options, DATASETS)
    graph.land_raw(sources, options)  # with --raw: every record as received, sealed per subject
    prepared = graph.read_and_prepare(p, options, DATASETS, sources)
    protected = graph.protect(prepared, options)
    curated = graph.curated_rows(p, protected)
    analytics = graph.analytics_rows(curated, options)
    quarantine = graph.quarantine_rows(prepared, options)
    graph.write_tables({**curated, **analytics}, options, extra=[quarantine])
    return {**curated, **analytics, "quarantine": quarantine}


def run(argv=None):
    options = graph.pipeline_options(argv)
    graph.preflight(options, DATASETS)
    return graph.run_pipeline(options, build)
