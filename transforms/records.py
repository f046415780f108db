"""The shapes that travel between riskpipe transforms.

``SourceRecord`` is what every source connector emits: the payload exactly as
received plus where it came from. ``ParseRecords`` turns it into a normalised
record (a plain ``dict``: cheap to pickle, schema-free for Beam, and what the
sinks write). Keys that start with ``_`` are riskpipe's own bookkeeping
(source position, unknown fields); they never reach curated or analytics
output because ``ProtectFields`` only passes classified fields.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import orjson

from schemas import DATASETS

Record = dict[str, Any]
#: (key, value) pairs into keyed stateful steps: a str key gets a deterministic key coder
KeyedRecord = tuple[str, Any]

#: field that carries each dataset's event time (ARCHITECTURE.md section 5)
EVENT_TIME_FIELD = {
    "payment_event": "created_at",
    "chargeback": "received_at",
    "kyc_profile": "updated_at",
}

#: natural key of each dataset: dedup key and the sinks' MERGE key
NATURAL_KEY = {
    "payment_event": ("event_id",),
    "chargeback": ("charge_id", "received_at"),
    "kyc_profile": ("user_id", "version"),
}

#: bookkeeping keys ParseRecords adds (never business data)
SOURCE_KEY = "_source"
POSITION_KEY = "_position"
EXTRA_KEY = "_extra"
EVENT_US_KEY = "_event_us"


class SourceRecord(NamedTuple):
    """One message or line as received, with its source coordinates."""

    payload: bytes | str | dict
    source: str = ""  # e.g. "kafka:payments" or "file:payment_event/part-00000.jsonl"
    position: str = ""  # e.g. "3:1042" (partition:offset) or "17" (line number)
    schema_version: int | None = None  # from the header/attribute; None = absent
    ingested_at: str | None = None  # canonical UTC text; None = unknown
    fmt: str = "json"  # "json" or "avro" (schemaless, writer schema = schema_version)


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return dataset


def natural_key(dataset: str, record: Record) -> str:
    """The natural key as one string (fields joined by a separator no field contains)."""
    return "\x1f".join(str(record[name]) for name in NATURAL_KEY[dataset])


def business_fields(record: Record) -> Record:
    """The record without riskpipe bookkeeping and processing-time columns."""
    return {k: v for k, v in record.items() if not k.startswith("_") and k != "ingested_at"}


def content_digest(record: Record) -> str:
    """A stable digest of the business content: equal for retries that only differ in transport."""
    return hashlib.blake2b(
        orjson.dumps(business_fields(record), option=orjson.OPT_SORT_KEYS), digest_size=16
    ).hexdigest()
