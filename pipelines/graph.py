"""Graph pieces the job modules compose. Wiring only: the logic lives in transforms/.

Every job reads its sources with the connector the mode selects, runs
``PrepareDataset`` per dataset, and plugs the branches it needs. Step labels
are fixed (Flink state is tied to them): renaming one is a state migration.
"""

from __future__ import annotations

import datetime as dt
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

import dlp_configs
from io_connectors.files import ReadDatasetFiles
from io_connectors.kafka import ReadFromKafka
from io_connectors.quarantine import EncryptQuarantine
from io_connectors.raw_zone import LandRaw, ReadRawZone
from io_connectors.warehouse import LocalTableSink, WriteToTables
from runners.options import (
    JobOptions,
    KafkaOptions,
    TimeOptions,
    kafka_settings,
    key_provider,
    lateness,
    raw_settings,
    validate_time_options,
)
from transforms.features import ComputeFraudFeatures
from transforms.finance import AggregateFinanceHourly, EnrichChargebacks
from transforms.kyc import LatestKycProfile
from transforms.prepare import PrepareDataset
from transforms.protect import ProtectFields


def preflight(
    options: PipelineOptions,
    datasets,
    *,
    needs_sink: bool = True,
    needs_input: bool = True,
    reads_raw: bool = False,
) -> None:
    """Fail before launch with a message that says what to fix."""
    job = options.view_as(JobOptions)
    if reads_raw and job.env == "nonprod":
        raise ValueError(
            f"reading the raw zone is refused in {job.env}: raw data is production personal data"
        )
    raw_settings(options)  # validates --raw/--raw_keys
    jar = options.get_all_options().get("flink_job_server_jar")
    if jar and "://" not in jar and not os.path.exists(jar):
        raise ValueError(
            f"Flink job server jar not found at {jar}: put the jar of exactly apache-beam's version there "
            "(the runner must not download it at run time)"
        )
    kafka = options.view_as(KafkaOptions)
    if kafka.source == "kafka":
        if job.mode != "stream":
            raise ValueError(
                "--source kafka reads unbounded topics: use --mode stream (with --idle-timeout to stop)"
            )
        kafka_settings(options)
        needs_input = False
    if needs_input and not job.input:
        raise ValueError("--input is required: the directory with payment_event/, chargeback/, kyc_profile/")
    if needs_sink and not job.warehouse:
        raise ValueError("--warehouse is required: the DuckDB file the tables are written to")
    if job.idle_timeout is not None and job.idle_timeout <= 0:
        raise ValueError("--idle-timeout must be > 0 seconds")
    validate_time_options(options)
    dlp_configs.check_environment(dlp_configs.load_policy(), job.env, zones=("curated", "analytics"))
    provider = key_provider(options)  # refuses local keys in prod
    try:
        provider.resolver()  # the key store is readable and this job may unwrap its keys
    except Exception as err:  # noqa: BLE001 - any failure here means "fix the key configuration"
        raise ValueError(
            f"cannot load tokenization keys for env {job.env!r}: {type(err).__name__}: {err}"
        ) from None
    if needs_sink:
        LocalTableSink(job.warehouse, job.lake).open().ensure_all()


def pipeline_options(argv) -> PipelineOptions:
    options = PipelineOptions(argv)
    if options.view_as(JobOptions).mode == "stream":
        options.view_as(StandardOptions).streaming = True
    return options


def read_sources(
    p: beam.Pipeline, options: PipelineOptions, datasets, raw_range=None
) -> dict[str, beam.PCollection]:
    """SourceRecords per dataset: input files (batch or watched), Kafka topics, or the raw zone for ``raw_range``."""
    job = options.view_as(JobOptions)
    time_opts = options.view_as(TimeOptions)
    sources = {}
    for dataset in datasets:
        if raw_range is not None:
            sources[dataset] = p | f"ReadRaw_{dataset}" >> ReadRawZone(
                dataset, raw_settings(options), *raw_range
            )
            continue
        kafka = options.view_as(KafkaOptions)
        if kafka.source == "kafka":
            sources[dataset] = p | f"ReadKafka_{dataset}" >> ReadFromKafka(
                f"{kafka.kafka_topic_prefix}{dataset}",
                dataset,
                kafka_settings(options),
                group_id=kafka.kafka_group,
                start=kafka.kafka_start,
                idle_timeout=job.idle_timeout,
                out_of_orderness_us=int(time_opts.out_of_orderness_seconds * 1_000_000),
            )
            continue
        sources[dataset] = p | f"Read_{dataset}" >> ReadDatasetFiles(
            job.input,
            dataset,
            stream=job.mode == "stream",
            poll_interval=job.poll_interval,
            idle_timeout=job.idle_timeout,
            out_of_orderness=dt.timedelta(seconds=time_opts.out_of_orderness_seconds),
        )
    return sources


def land_raw(sources: dict[str, beam.PCollection], options: PipelineOptions) -> None:
    """Land every source record in the raw zone (when --raw is set)."""
    settings = raw_settings(options)
    if settings is None:
        return
    for dataset, records in sources.items():
        records | f"LandRaw_{dataset}" >> LandRaw(dataset, settings)


def read_and_prepare(p: beam.Pipeline, options: PipelineOptions, datasets, sources=None) -> dict[str, dict]:
    time_opts = options.view_as(TimeOptions)
    sources = sources if sources is not None else read_sources(p, options, datasets)
    prepared = {}
    for dataset in datasets:
        records = sources[dataset]
        prepared[dataset] = records | f"Prepare_{dataset}" >> PrepareDataset(
            dataset,
            allowed_lateness=lateness(options, dataset),
            dedup_ttl=dt.timedelta(hours=time_opts.dedup_ttl_hours),
            lateness_shards=time_opts.lateness_shards,
        )
    return prepared


def protect(prepared: dict[str, dict], options: PipelineOptions) -> dict[str, beam.PCollection]:
    env = options.view_as(JobOptions).env
    keys = key_provider(options)
    out = {}
    for dataset, parts in prepared.items():
        clean = parts["clean"]
        if dataset == "kyc_profile":
            clean = clean | "LatestKycProfile" >> LatestKycProfile()
        out[dataset] = clean | f"Protect_{dataset}" >> ProtectFields(dataset, env, keys)
    return out


def quarantine_rows(prepared: dict[str, dict], options: PipelineOptions) -> beam.PCollection:
    """Encrypted quarantine rows (parse failures and too-late records) of every prepared dataset."""
    tagged = []
    for dataset, parts in prepared.items():
        tagged.append(
            parts["quarantine"]
            | f"TagQuarantine_{dataset}" >> beam.Map(lambda q, d=dataset: (d, "quarantine", q))
        )
        tagged.append(
            parts["too_late"] | f"TagTooLate_{dataset}" >> beam.Map(lambda r, d=dataset: (d, "too_late", r))
        )
    return (
        tagged
        | "FlattenQuarantine" >> beam.Flatten()
        | "EncryptQuarantine" >> EncryptQuarantine(key_provider(options))
    )


def table(name: str):
    return beam.Map(lambda row, n=name: (n, row))


def enrich_chargebacks(payments, chargebacks, extra_payments=None, label: str = "EnrichChargebacks"):
    """curated.chargeback rows; ``extra_payments`` (e.g. read back from the warehouse) widen the lookup."""
    if extra_payments is not None:
        payments = (payments, extra_payments) | f"{label}Payments" >> beam.Flatten()
    return (payments, chargebacks) | label >> EnrichChargebacks()


def curated_rows(p, protected: dict[str, beam.PCollection]) -> dict[str, beam.PCollection]:
    """The three curated tables (chargebacks enriched from the payment they dispute)."""
    return {
        "curated.payment_event": protected["payment_event"],
        "curated.chargeback": enrich_chargebacks(protected["payment_event"], protected["chargeback"]),
        "curated.kyc_profile": protected["kyc_profile"],
    }


def fraud_features(curated_payments) -> beam.PCollection:
    return curated_payments | "ComputeFraudFeatures" >> ComputeFraudFeatures()


def finance_hourly(curated_payments, curated_chargebacks, options: PipelineOptions) -> beam.PCollection:
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    refresh_count = 500 if "Direct" in runner else None
    return (
        (curated_payments, curated_chargebacks)
        | "AggregateFinanceHourly" >> AggregateFinanceHourly(refresh_count=refresh_count)
        # back to the default trigger so it flattens with the other tables into one sink
        | "FinanceDefaultWindowing" >> beam.WindowInto(beam.window.GlobalWindows())
    )


def analytics_rows(
    curated: dict[str, beam.PCollection], options: PipelineOptions
) -> dict[str, beam.PCollection]:
    return {
        "analytics.fraud_features": fraud_features(curated["curated.payment_event"]),
        "analytics.finance_hourly": finance_hourly(
            curated["curated.payment_event"], curated["curated.chargeback"], options
        ),
    }


def write_tables(tables: dict[str, beam.PCollection], options: PipelineOptions, extra=()) -> None:
    job = options.view_as(JobOptions)
    tagged = [rows | f"Tag_{name}" >> table(name) for name, rows in tables.items()]
    sink = LocalTableSink(job.warehouse, job.lake)
    ([*tagged, *extra] | "FlattenTables" >> beam.Flatten() | "WriteToTables" >> WriteToTables(sink))


def run_pipeline(options: PipelineOptions, build):
    p = beam.Pipeline(options=options)
    build(p, options)
    result = p.run()
    result.wait_until_finish()
    return result
