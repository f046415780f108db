"""Kafka source and sink on confluent-kafka.

``ReadFromKafka`` is an unbounded splittable DoFn per (topic, partition):

* the restriction is an offset range ``[next offset, end)``, so a runner's
  checkpoint of the restriction IS the consumer position — a restore resumes
  exactly where the checkpoint was, whatever the consumer group says;
* the DoFn checkpoints itself (``defer_remainder``) after a record or time
  budget, because the Flink runner never splits a Python SDF on its own;
* the watermark is the newest event time read minus the bounded
  out-of-orderness (manual estimator, monotonic); with ``idle_timeout`` a
  partition that is caught up and idle for that long finishes its
  restriction, which releases its watermark (bounded replays and tests);
* consumer-group offsets are committed when the runner finalizes the bundle
  (after its outputs are durable), for lag monitoring only — never read back
  as the resume position;
* each message becomes a ``SourceRecord`` with ``kafka:<topic>`` and
  ``<partition>:<offset>`` as coordinates, the broker timestamp as ingest
  time and the ``schema_version`` / ``format`` headers (absent = 1 / json).

``WriteToKafka`` produces with the idempotent producer (``acks=all``,
``enable.idempotence``), keyed by natural key, flushing per bundle and failing
the bundle on any delivery error (so the runner retries it).

Security: TLS (``SSL``) everywhere; production uses ``SASL_SSL`` with
``OAUTHBEARER`` tokens from MSK IAM (``aws-msk-iam-sasl-signer-python``'s
``MSKAuthTokenProvider``, plugged in as ``oauth_cb``). PLAINTEXT is refused
unless explicitly allowed for a throwaway test. No credential is ever an
option or a log line: TLS material comes from files, IAM from the standard
AWS chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from io_connectors.files import event_micros, stop_requested
from transforms.records import SourceRecord
from transforms.timeutil import format_micros, now_micros

_END = 2**62


@dataclass(frozen=True)
class KafkaSettings:
    """Connection settings (picklable; paths and names only, never secrets)."""

    bootstrap: str
    security_protocol: str = "SSL"  # SSL | SASL_SSL | PLAINTEXT (tests only, needs allow_plaintext)
    ssl_ca_location: str | None = None
    sasl_mechanism: str | None = None  # OAUTHBEARER for MSK IAM
    msk_iam_region: str | None = None  # set → OAUTHBEARER tokens from MSK IAM
    allow_plaintext: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.security_protocol == "PLAINTEXT" and not self.allow_plaintext:
            raise ValueError("Kafka without TLS is refused: use security_protocol SSL or SASL_SSL")
        if self.security_protocol not in ("SSL", "SASL_SSL", "PLAINTEXT"):
            raise ValueError(f"unsupported security_protocol {self.security_protocol!r}")

    def client_config(self) -> dict:
        config = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        if self.security_protocol == "SASL_SSL":
            config["sasl.mechanism"] = self.sasl_mechanism or "OAUTHBEARER"
            if self.msk_iam_region:
                config["oauth_cb"] = _msk_iam_token_callback(self.msk_iam_region)
        config.update(self.extra)
        return config


def _msk_iam_token_callback(region: str):
    def token(_config):
        try:
            from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
        except ImportError as err:  # pragma: no cover - optional production dependency
            raise RuntimeError(
                "MSK IAM auth needs aws-msk-iam-sasl-signer-python: pip install it on workers"
            ) from err
        value, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return value, expiry_ms / 1000

    return token


def _headers(message) -> dict[str, str]:
    out = {}
    for key, value in message.headers() or []:
        if value is not None:
            out[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return out


class _PartitionRestrictions(RestrictionProvider):
    """Element (topic, partition, start offset) → restriction [start offset, end)."""

    def initial_restriction(self, element):
        return OffsetRange(element[2], _END)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction

    def truncate(self, element, restriction):
        return None  # on drain: stop reading


class _ReadPartitionFn(beam.DoFn):
    def __init__(
        self,
        dataset: str,
        settings: KafkaSettings,
        group_id: str,
        max_records: int,
        max_seconds: float,
        idle_timeout: float | None,
        lag_us: int,
    ):
        self._dataset, self._settings, self._group = dataset, settings, group_id
        self._max_records, self._max_seconds = max_records, max_seconds
        self._idle, self._lag_us = idle_timeout, lag_us

    def setup(self):
        from confluent_kafka import Consumer

        self._consumer = Consumer(
            {
                **self._settings.client_config(),
                "group.id": self._group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )
        self._last_data: dict[tuple, float] = {}
        self._records = Metrics.counter("riskpipe.kafka", f"{self._dataset}.records_read")

    def teardown(self):
        self._consumer.close()

    def _caught_up(self, topic: str, partition: int, tracker) -> bool:
        """Idle only counts once every message up to the partition's high watermark was read."""
        from confluent_kafka import TopicPartition

        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=10, cached=False
        )
        return tracker.current_restriction().start >= high

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element,
        finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(_PartitionRestrictions()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        from confluent_kafka import TopicPartition

        topic, partition, _ = element
        key = (topic, partition)
        position = tracker.current_restriction().start
        self._consumer.assign([TopicPartition(topic, partition, position)])
        started = time.monotonic()
        self._last_data.setdefault(key, started)
        emitted, newest, last_offset = 0, None, None
        while emitted < self._max_records and time.monotonic() - started < self._max_seconds:
            # the first fetch after (re)assigning can take a moment: wait longer for it
            message = self._consumer.poll(1.0 if emitted == 0 else 0.2)
            if message is None:
                break
            if message.error():
                raise RuntimeError(f"Kafka error on {topic}[{partition}]: {message.error().name()}")
            offset = message.offset()
            if not tracker.try_claim(offset):
                return
            headers = _headers(message)
            _, broker_ms = message.timestamp()
            record = SourceRecord(
                message.value() or b"",
                f"kafka:{topic}",
                f"{partition}:{offset}",
                int(headers["schema_version"]) if headers.get("schema_version", "").isdigit() else None,
                format_micros(broker_ms * 1000)
                if broker_ms and broker_ms > 0
                else format_micros(now_micros()),
                headers.get("format", "json"),
            )
            event_us = event_micros(self._dataset, record) if record.fmt == "json" else None
            if event_us is not None:
                newest = event_us if newest is None else max(newest, event_us)
            self._records.inc()
            emitted += 1
            last_offset = offset
            yield beam.window.TimestampedValue(
                record, Timestamp(micros=event_us if event_us is not None else newest or 0)
            )
        if newest is not None:
            candidate = Timestamp(micros=newest - self._lag_us)
            current = watermark.current_watermark()
            if current is None or candidate > current:
                watermark.set_watermark(candidate)
        if last_offset is not None:
            self._last_data[key] = time.monotonic()
            commit_to = TopicPartition(topic, partition, last_offset + 1)
            # after the runner made this bundle's outputs durable: for lag monitoring only
            finalizer.register(lambda: self._consumer.commit(offsets=[commit_to], asynchronous=False))
        idle_for = time.monotonic() - self._last_data[key]
        if stop_requested() or (
            self._idle is not None
            and emitted == 0
            and idle_for >= self._idle
            and self._caught_up(topic, partition, tracker)
        ):
            tracker.try_claim(_END - 1)  # finish: releases this partition's watermark
            return
        tracker.defer_remainder(Duration(seconds=0 if emitted else 0.5))


class _ListPartitionsFn(beam.DoFn):
    """topic → (topic, partition, start offset) for every partition (earliest or latest)."""

    def __init__(self, settings: KafkaSettings, start: str):
        self._settings, self._start = settings, start

    def process(self, topic):
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {**self._settings.client_config(), "group.id": "riskpipe-metadata", "log_level": 3}
        )
        try:
            info = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if info is None or info.error is not None:
                raise RuntimeError(f"Kafka topic {topic!r} not found (create it before starting the job)")
            for partition in sorted(info.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                yield topic, partition, low if self._start == "earliest" else high
        finally:
            consumer.close()


class ReadFromKafka(beam.PTransform):
    """Unbounded read of one topic → SourceRecords of ``dataset`` (see the module docstring)."""

    def __init__(
        self,
        topic: str,
        dataset: str,
        settings: KafkaSettings,
        *,
        group_id: str = "riskpipe",
        start: str = "earliest",
        max_records_per_bundle: int = 5_000,
        max_seconds_per_bundle: float = 2.0,
        idle_timeout: float | None = None,
        out_of_orderness_us: int = 30_000_000,
    ):
        super().__init__()
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be earliest or latest, got {start!r}")
        if max_records_per_bundle < 1 or max_seconds_per_bundle <= 0:
            raise ValueError("bundle budgets must be positive")
        self._topic, self._settings, self._start = topic, settings, start
        self._fn = _ReadPartitionFn(
            dataset,
            settings,
            group_id,
            max_records_per_bundle,
            max_seconds_per_bundle,
            idle_timeout,
            out_of_orderness_us,
        )

    def expand(self, pbegin):
        return (
            pbegin
            | "Topic" >> beam.Create([self._topic])
            | "ListPartitions" >> beam.ParDo(_ListPartitionsFn(self._settings, self._start))
            | "ReadPartitions" >> beam.ParDo(self._fn)
        )


class _ProduceFn(beam.DoFn):
    def __init__(self, topic: str, settings: KafkaSettings, key_field: str | None):
        self._topic, self._settings, self._key_field = topic, settings, key_field

    def setup(self):
        from confluent_kafka import Producer

        self._producer = Producer(
            {**self._settings.client_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 20}
        )
        self._sent = Metrics.counter("riskpipe.kafka", f"{self._topic}.produced")

    def start_bundle(self):
        self._errors: list[str] = []

    def process(self, element):
        key, value, headers = element
        self._producer.produce(
            self._topic, value=value, key=key, headers=headers, on_delivery=self._delivered
        )
        self._producer.poll(0)

    def _delivered(self, err, msg):
        if err is not None:
            self._errors.append(err.name())
        else:
            self._sent.inc()

    def finish_bundle(self):
        remaining = self._producer.flush(30)
        if remaining or self._errors:
            # fail the bundle: the runner retries it; the idempotent producer prevents broker duplicates
            raise RuntimeError(
                f"{remaining} messages not delivered to {self._topic}; errors: {sorted(set(self._errors))}"
            )


class WriteToKafka(beam.PTransform):
    """``(key bytes, value bytes, headers)`` → one topic, idempotent producer, flushed per bundle."""

    def __init__(self, topic: str, settings: KafkaSettings):
        super().__init__()
        self._topic, self._settings = topic, settings

    def expand(self, pcoll):
        return pcoll | "Produce" >> beam.ParDo(_ProduceFn(self._topic, self._settings, None))
