"""``riskpipe produce``: send generated records to Kafka at a set rate (stream demos and tests).

Topics are ``<prefix><dataset>``; each message carries the ``schema_version``
header and is keyed by its natural key, in arrival order. Creates missing
topics (3 partitions) first.
"""

from __future__ import annotations

import argparse
import sys
import time

from io_connectors.kafka import KafkaSettings
from runners.synthetic import GeneratorRates, iter_messages


def ensure_topics(settings: KafkaSettings, topics: list[str], partitions: int = 3) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.client_config())
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
    if missing:
        for future in admin.create_topics(missing).values():
            future.result()


def produce(
    settings: KafkaSettings, messages, prefix: str = "riskpipe.", rate: float | None = None
) -> dict[str, int]:
    """Produce ``(dataset, payload bytes, schema_version, key)`` tuples; returns counts per topic."""
    from confluent_kafka import Producer

    producer = Producer(
        {**settings.client_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 10}
    )
    errors: list[str] = []
    counts: dict[str, int] = {}
    started = time.monotonic()
    for n, (dataset, payload, version, key) in enumerate(messages, start=1):
        topic = f"{prefix}{dataset}"
        producer.produce(
            topic,
            value=payload,
            key=key.encode() if key else None,
            headers=[("schema_version", str(version).encode())],
            on_delivery=lambda err, msg: errors.append(err.name()) if err else None,
        )
        counts[topic] = counts.get(topic, 0) + 1
        producer.poll(0)
        if rate:
            ahead = n / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    if producer.flush(60) or errors:
        raise RuntimeError(f"delivery failed: {sorted(set(errors))}")
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="riskpipe produce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kafka_bootstrap", required=True)
    parser.add_argument("--kafka_ca", default=None)
    parser.add_argument("--kafka_topic_prefix", default="riskpipe.")
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rate", type=float, default=None, help="messages per second (default: as fast as possible)"
    )
    args = parser.parse_args(argv)
    settings = KafkaSettings(args.kafka_bootstrap, ssl_ca_location=args.kafka_ca)
    ensure_topics(
        settings, [f"{args.kafka_topic_prefix}{d}" for d in ("payment_event", "chargeback", "kyc_profile")]
    )
    messages = (
        (m.dataset, m.payload, m.schema_version, m.key)
        for m in iter_messages(args.events, args.seed, GeneratorRates())
    )
    for topic, count in sorted(produce(settings, messages, args.kafka_topic_prefix, args.rate).items()):
        print(f"{topic}: {count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
