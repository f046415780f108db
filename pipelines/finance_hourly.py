"""``finance-hourly``: payments + chargebacks → analytics.finance_hourly (and curated.chargeback)."""

from __future__ import annotations

from pipelines import graph

DATASETS = ("payment_event", "chargeback")


def build(p, options) -> dict:
    prepared = graph.read_and_prepare(p, options, DATASETS)
    protected = graph.protect(prepared, options)
    chargebacks = graph.enrich_chargebacks(protected["payment_event"], protected["chargeback"])
    finance = graph.finance_hourly(protected["payment_event"], chargebacks, options)
    quarantine = graph.quarantine_rows(prepared, options)
    tables = {"curated.chargeback": chargebacks, "analytics.finance_hourly": finance}
    graph.write_tables(tables, options, extra=[quarantine])
    return {**tables, "quarantine": quarantine}


def run(argv=None):
    options = graph.pipeline_options(argv)
    graph.preflight(options, DATASETS)
    return graph.run_pipeline(options, build)
