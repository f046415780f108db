"""``backfill``: replay an event-time range of the input through the same graph as ``all``.

``riskpipe run backfill --from 2026-11-02T00:00:00Z --to 2026-11-03T00:00:00Z --input … --lake … --warehouse …``
(or ``--raw URI`` instead of ``--input``: replay from the raw zone, production only)
recomputes every table's rows whose event time is in ``[from, to)`` and MERGEs them by
natural key, so a backfill over a processed range changes nothing and one over a range
with too-late or missing data restates exactly those rows. Whole hours only, so finance
hours are complete. Fraud features look back 24 h before ``from`` (the longest
window); chargebacks whose payment lies before the replayed input are enriched from
``curated.payment_event`` in the warehouse, and a chargeback whose payment is found
nowhere is not written (the stored row is left alone rather than degraded).
"""

from __future__ import annotations

import apache_beam as beam

from io_connectors.warehouse import ReadWarehouseTable
from pipelines import graph
from runners.options import BackfillOptions, JobOptions, RawOptions
from schemas import DATASETS
from transforms.eventtime import FilterEventTime, KeepRowsInRange
from transforms.features import HISTORY_US
from transforms.timeutil import HOUR_US, format_micros, parse_rfc3339_micros


def time_range(options) -> tuple[int, int]:
    opts = options.view_as(BackfillOptions)
    if not opts.range_from or not opts.range_to:
        raise ValueError(
            "--from and --to are required (RFC 3339, whole hours), e.g. --from 2026-11-02T00:00:00Z"
        )
    try:
        start, end = parse_rfc3339_micros(opts.range_from), parse_rfc3339_micros(opts.range_to)
    except ValueError:
        raise ValueError("--from/--to must be RFC 3339 timestamps, e.g. 2026-11-02T00:00:00Z") from None
    if start % HOUR_US or end % HOUR_US:
        raise ValueError("--from/--to must be whole hours so that finance hours are complete")
    if end <= start:
        raise ValueError("--to must be after --from")
    return start, end


def build(p, options) -> dict:
    start, end = time_range(options)
    lo, hi = format_micros(start), format_micros(end)
    from_raw = options.view_as(RawOptions).raw is not None and not options.view_as(JobOptions).input
    sources = graph.read_sources(
        p, options, DATASETS, raw_range=(start - HISTORY_US, end) if from_raw else None
    )
    prepared = graph.read_and_prepare(p, options, DATASETS, sources)
    for dataset, parts in prepared.items():
        lookback = HISTORY_US if dataset == "payment_event" else 0
        parts["clean"] = parts["clean"] | f"Range_{dataset}" >> FilterEventTime(start - lookback, end)
    protected = graph.protect(prepared, options)
    payments_with_history = protected["payment_event"]
    payments = payments_with_history | "PaymentsInRange" >> KeepRowsInRange("created_at", lo, hi)
    stored_payments = p | "StoredPayments" >> ReadWarehouseTable(
        options.view_as(JobOptions).warehouse,
        "curated.payment_event",
        ("event_id", "merchant_id", "currency", "amount_minor", "created_at"),
    )
    chargebacks = graph.enrich_chargebacks(
        payments_with_history, protected["chargeback"], extra_payments=stored_payments
    ) | "MatchedChargebacks" >> beam.Filter(lambda r: r["merchant_id"] is not None)
    features = graph.fraud_features(payments_with_history) | "FeaturesInRange" >> KeepRowsInRange(
        "created_at", lo, hi
    )
    tables = {
        "curated.payment_event": payments,
        "curated.chargeback": chargebacks,
        "curated.kyc_profile": protected["kyc_profile"],
        "analytics.fraud_features": features,
        "analytics.finance_hourly": graph.finance_hourly(payments, chargebacks, options),
    }
    quarantine = graph.quarantine_rows(prepared, options)
    graph.write_tables(tables, options, extra=[quarantine])
    return {**tables, "quarantine": quarantine}


def run(argv=None):
    options = graph.pipeline_options(argv)
    from_raw = options.view_as(RawOptions).raw is not None and not options.view_as(JobOptions).input
    graph.preflight(options, DATASETS, needs_input=not from_raw, reads_raw=from_raw)
    if options.view_as(JobOptions).mode != "batch":
        raise ValueError("backfill runs in --mode batch")
    time_range(options)
    return graph.run_pipeline(options, build)
