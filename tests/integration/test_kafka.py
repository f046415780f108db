"""Kafka over TLS (real KRaft broker from the local stack): produce, stream the pipeline, parity, bad messages."""

from __future__ import annotations

import uuid

import pytest

from io_connectors.kafka import KafkaSettings
from io_connectors.tables import DERIVED_TABLES
from io_connectors.warehouse import table_digest, table_row_counts
from runners import stack
from runners.cli import main as cli_main
from runners.produce import ensure_topics, produce
from runners.synthetic import GeneratorRates, generate, iter_messages

DATASETS = ("payment_event", "chargeback", "kyc_profile")
DERIVED = DERIVED_TABLES
# source metadata differs by transport: ingest time (broker vs file time) and schema_version
# (a header on Kafka, inferred from the record's shape in files)
SOURCE_COLUMNS = ("ingested_at", "computed_at", "schema_version")


@pytest.fixture(scope="module")
def kafka() -> KafkaSettings:
    info = stack._read_endpoints().get("kafka")
    if not info or not stack._kafka_healthy(info["bootstrap"], info["ca"]):
        pytest.fail("Kafka is not running: start the local stack with `make stack-up`", pytrace=False)
    return KafkaSettings(info["bootstrap"], ssl_ca_location=info["ca"])


def _kafka_args(settings: KafkaSettings, prefix: str) -> list[str]:
    return [
        "--source=kafka",
        f"--kafka_bootstrap={settings.bootstrap}",
        f"--kafka_ca={settings.ssl_ca_location}",
        f"--kafka_topic_prefix={prefix}",
        f"--kafka_group=test-{prefix}",
    ]


def test_plaintext_is_refused_and_tls_is_required(kafka):
    with pytest.raises(ValueError, match="without TLS is refused"):
        KafkaSettings(kafka.bootstrap, security_protocol="PLAINTEXT")
    from confluent_kafka.admin import AdminClient

    plain = KafkaSettings(kafka.bootstrap, security_protocol="PLAINTEXT", allow_plaintext=True)
    admin = AdminClient({**plain.client_config(), "log_level": 0})
    with pytest.raises(Exception):  # noqa: B017 - the broker only speaks TLS: metadata never arrives
        admin.list_topics(timeout=3)


def test_stream_from_kafka_matches_batch_from_files_and_quarantines_bad_messages(kafka, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    events, seed = 200, 21
    rates = GeneratorRates(chargeback_too_late_rate=0.0)
    ensure_topics(kafka, [f"{prefix}{d}" for d in DATASETS])
    messages = [(m.dataset, m.payload, m.schema_version, m.key) for m in iter_messages(events, seed, rates)]
    # poison: garbage bytes and an unknown schema version; the job must quarantine them and keep going
    messages.append(("payment_event", b"\xff\x00garbage", 1, None))
    messages.append(("payment_event", b'{"event_id": "x"}', 99, None))
    counts = produce(kafka, messages, prefix)
    assert counts[f"{prefix}payment_event"] > events

    generate(str(tmp_path / "files"), events=events, seed=seed, rates=rates)
    batch_wh = tmp_path / "batch.duckdb"
    keys = f"--local_key_file={tmp_path / 'keys.json'}"
    assert (
        cli_main(
            ["run", "all", "--mode=batch", f"--input={tmp_path / 'files'}", f"--warehouse={batch_wh}", keys]
        )
        == 0
    )

    stream_wh = tmp_path / "stream.duckdb"
    args = [
        "run",
        "all",
        "--mode=stream",
        "--idle-timeout=4",
        f"--warehouse={stream_wh}",
        f"--raw={tmp_path / 'raw'}",
        keys,
        *_kafka_args(kafka, prefix),
    ]
    assert cli_main(args) == 0
    # every message landed in the raw zone (one object per topic-partition, hour and bundle)
    import fastavro

    landed = 0
    for path in (tmp_path / "raw").rglob("*.avro"):
        assert path.name.startswith(prefix)
        with path.open("rb") as handle:
            landed += sum(1 for _ in fastavro.reader(handle))
    assert landed == sum(counts.values())
    for table in DERIVED:
        assert table_digest(str(stream_wh), table, exclude=SOURCE_COLUMNS) == table_digest(
            str(batch_wh), table, exclude=SOURCE_COLUMNS
        ), table
    import duckdb

    con = duckdb.connect(str(stream_wh), read_only=True)
    try:
        reasons = {r[0] for r in con.execute("SELECT reason FROM quarantine.payment_event").fetchall()}
        positions = {r[0] for r in con.execute("SELECT source FROM quarantine.payment_event").fetchall()}
    finally:
        con.close()
    assert {"not_utf8", "unknown_schema_version:99"} <= reasons
    assert positions == {f"kafka:{prefix}payment_event"}
    assert {r["table"]: r["rows"] for r in table_row_counts(str(stream_wh))}[
        "curated.payment_event"
    ] == events


def test_write_to_kafka_delivers_every_message_once(kafka):
    import apache_beam as beam
    from confluent_kafka import Consumer, TopicPartition

    from io_connectors.kafka import WriteToKafka

    topic = f"t{uuid.uuid4().hex[:8]}.out"
    ensure_topics(kafka, [topic], partitions=2)
    rows = [(f"k{i}".encode(), f'{{"n": {i}}}'.encode(), [("schema_version", b"1")]) for i in range(300)]
    with beam.Pipeline() as p:
        p | beam.Create(rows) | WriteToKafka(topic, kafka)
    consumer = Consumer({**kafka.client_config(), "group.id": f"check-{topic}", "enable.auto.commit": False})
    seen: dict[bytes, int] = {}
    try:
        partitions = [TopicPartition(topic, p, 0) for p in range(2)]
        total = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions)
        assert total == len(rows)  # every message on the broker exactly once
        consumer.assign(partitions)
        while sum(seen.values()) < total:
            message = consumer.poll(5.0)
            assert message is not None and not message.error()
            seen[message.key()] = seen.get(message.key(), 0) + 1
    finally:
        consumer.close()
    assert len(seen) == len(rows) and set(seen.values()) == {1}
