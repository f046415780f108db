"""riskpipe's pipeline options: one ``PipelineOptions`` subclass per concern.

Flags take the Beam spelling (``--dedup_ttl_hours``) and, where the CLI
contract names them, the dashed spelling too (``--idle-timeout``). Beam's own
options (``--runner``, ``--flink_master``, ``--s3_endpoint_url`` …) are reused,
never duplicated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os

from apache_beam.options.pipeline_options import PipelineOptions

from schemas import DATASETS

MODES = ("batch", "stream")
ENVS = ("dev", "nonprod", "prod")


class JobOptions(PipelineOptions):
    """Where a job reads and writes, and in which mode and environment."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--mode", choices=MODES, default="batch", help="batch: bounded input; stream: unbounded"
        )
        parser.add_argument(
            "--input",
            default=None,
            help="input directory (local or s3://) with one folder per dataset: "
            + ", ".join(f"{d}/" for d in DATASETS),
        )
        parser.add_argument("--lake", default=None, help="lake root directory (Parquet per zone/table)")
        parser.add_argument("--warehouse", default=None, help="warehouse DuckDB file")
        parser.add_argument(
            "--env",
            choices=ENVS,
            default="dev",
            help="environment: decides keys and which handlings the policy allows (nonprod never sees raw PII)",
        )
        parser.add_argument(
            "--idle_timeout",
            "--idle-timeout",
            dest="idle_timeout",
            type=float,
            default=None,
            help="stream mode: stop once no new input arrived for this many seconds",
        )
        parser.add_argument(
            "--poll_interval",
            "--poll-interval",
            dest="poll_interval",
            type=float,
            default=2.0,
            help="stream mode on files: how often (s) to look for new files",
        )


class TimeOptions(PipelineOptions):
    """Event-time policy: lateness, dedup memory, out-of-orderness."""

    @classmethod
    def _add_argparse_args(cls, parser):
        for dataset in DATASETS:
            parser.add_argument(
                f"--{dataset}_lateness_hours",
                type=float,
                default=24.0,
                help=f"allowed lateness of {dataset} records (h); later ones go to too_late",
            )
        parser.add_argument(
            "--dedup_ttl_hours",
            type=float,
            default=48.0,
            help="how long (event time) dedup remembers a key; must exceed every allowed lateness",
        )
        parser.add_argument(
            "--out_of_orderness_seconds",
            type=float,
            default=30.0,
            help="bounded out-of-orderness of the sources' watermark (s)",
        )
        parser.add_argument(
            "--lateness_shards", type=int, default=16, help="keys over which lateness probes are spread"
        )


def lateness(options: PipelineOptions, dataset: str) -> dt.timedelta:
    return dt.timedelta(hours=getattr(options.view_as(TimeOptions), f"{dataset}_lateness_hours"))


def validate_time_options(options: PipelineOptions) -> None:
    """Refuse settings that would double count: dedup must remember keys longer than any lateness."""
    time_opts = options.view_as(TimeOptions)
    ttl = dt.timedelta(hours=time_opts.dedup_ttl_hours)
    for dataset in DATASETS:
        allowed = lateness(options, dataset)
        if allowed < dt.timedelta(0):
            raise ValueError(f"--{dataset}_lateness_hours must be >= 0")
        if ttl <= allowed:
            raise ValueError(
                f"--dedup_ttl_hours ({time_opts.dedup_ttl_hours}) must exceed --{dataset}_lateness_hours "
                f"({allowed.total_seconds() / 3600:g}): a retry arriving after dedup forgot its key would count twice"
            )


def unknown_arguments(argv: list[str]) -> list[str]:
    """Arguments no PipelineOptions subclass declares (Beam itself would only log and drop them)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    seen: set[type] = set()

    def visit(cls):
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                try:
                    sub._add_argparse_args(parser)
                except argparse.ArgumentError:
                    pass  # two classes declaring one flag: already known
                visit(sub)

    visit(PipelineOptions)
    _, unknown = parser.parse_known_args(argv)
    return [arg for arg in unknown if arg.startswith("-")]


class KeyOptions(PipelineOptions):
    """Where tokenization keys come from (never the keys themselves)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--key_store",
            default=None,
            help="KMS-wrapped key store document (s3://bucket/key.json or a path); required for --env prod",
        )
        parser.add_argument(
            "--local_key_file",
            default=None,
            help="dev/nonprod only: local file of unwrapped keys (created if missing); default next to --warehouse",
        )


def key_provider(options: PipelineOptions):
    """The key provider the job's options select; refuses local keys in prod."""
    from io_connectors.keys import KmsKeyProvider, LocalKeyProvider

    job = options.view_as(JobOptions)
    keys = options.view_as(KeyOptions)
    if keys.key_store:
        return KmsKeyProvider(keys.key_store, env=job.env)
    if job.env == "prod":
        raise ValueError(
            "--env prod needs --key_store (KMS-wrapped keys); local key files are refused in prod"
        )
    path = keys.local_key_file
    if not path:
        base = os.path.dirname(os.path.abspath(job.warehouse)) if job.warehouse else os.getcwd()
        path = os.path.join(base, f".riskpipe-keys-{job.env}.json")
    return LocalKeyProvider(path, env=job.env)


class BackfillOptions(PipelineOptions):
    """The event-time range a backfill replays."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--from", dest="range_from", default=None, help="range start (RFC 3339, whole hour)"
        )
        parser.add_argument(
            "--to", dest="range_to", default=None, help="range end, exclusive (RFC 3339, whole hour)"
        )


class RawOptions(PipelineOptions):
    """The raw zone: where landed records and their per-subject keys live."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--raw", default=None, help="raw zone root (local dir or s3://bucket/prefix)")
        parser.add_argument(
            "--raw_keys",
            default=None,
            help="per-subject key store (never inside the Object Lock bucket); default: <raw>-keys for a local raw zone",
        )
        parser.add_argument("--raw_kms_key_id", default=None, help="KMS key for SSE-KMS of raw objects (S3)")


def raw_settings(options: PipelineOptions):
    """RawZoneSettings for the job, or None without --raw."""
    from io_connectors.raw_zone import RawZoneSettings

    raw = options.view_as(RawOptions)
    if not raw.raw:
        return None
    keys = raw.raw_keys
    if not keys:
        if raw.raw.startswith("s3://"):
            raise ValueError("--raw_keys is required with an s3:// raw zone (a bucket without Object Lock)")
        keys = raw.raw.rstrip("/") + "-keys"
    if keys.rstrip("/").startswith(raw.raw.rstrip("/") + "/"):
        raise ValueError("--raw_keys must not be inside --raw: locked keys could not be shredded")
    return RawZoneSettings(raw.raw, keys, key_provider(options), raw.raw_kms_key_id)


class KafkaOptions(PipelineOptions):
    """Stream sources on Kafka (MSK in production). TLS material by path; no credential is an option."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--source", choices=("files", "kafka"), default="files", help="where records come from"
        )
        parser.add_argument("--kafka_bootstrap", default=None, help="bootstrap servers (host:port,...)")
        parser.add_argument(
            "--kafka_security_protocol",
            choices=("SSL", "SASL_SSL"),
            default="SSL",
            help="TLS, or TLS + SASL (MSK IAM)",
        )
        parser.add_argument(
            "--kafka_ca", default=None, help="CA bundle (PEM) that signed the brokers' certificates"
        )
        parser.add_argument(
            "--kafka_msk_iam_region", default=None, help="SASL_SSL: OAUTHBEARER tokens from MSK IAM"
        )
        parser.add_argument(
            "--kafka_topic_prefix", default="riskpipe.", help="topic per dataset: <prefix><dataset>"
        )
        parser.add_argument(
            "--kafka_group", default="riskpipe", help="consumer group (offsets for lag monitoring)"
        )
        parser.add_argument("--kafka_start", choices=("earliest", "latest"), default="earliest")


def kafka_settings(options: PipelineOptions):
    from io_connectors.kafka import KafkaSettings

    kafka = options.view_as(KafkaOptions)
    if not kafka.kafka_bootstrap:
        raise ValueError("--source kafka needs --kafka_bootstrap")
    return KafkaSettings(
        kafka.kafka_bootstrap,
        security_protocol=kafka.kafka_security_protocol,
        ssl_ca_location=kafka.kafka_ca,
        msk_iam_region=kafka.kafka_msk_iam_region,
    )
