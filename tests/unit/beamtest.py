"""Helpers for Beam unit tests: record builders and TestStream plumbing."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.utils.timestamp import Timestamp

from transforms.records import EVENT_US_KEY
from transforms.timeutil import format_micros, parse_rfc3339_micros

T0 = parse_rfc3339_micros("2026-11-02T00:00:00Z")
MIN_US = 60 * 1_000_000
HOUR_US = 60 * MIN_US


def seconds(micros: int) -> float:
    return Timestamp(micros=micros).micros / 1e6


def streaming_pipeline() -> TestPipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(options=options)


def payment(event_id: str, at_us: int, **fields) -> dict:
    record = {
        "event_id": event_id,
        "merchant_id": fields.pop("merchant_id", "m_1"),
        "amount": fields.pop("amount", 1000),
        "currency": fields.pop("currency", "USD"),
        "card_fingerprint": fields.pop("card_fingerprint", "cf_1"),
        "ip_address": fields.pop("ip_address", "203.0.113.7"),
        "billing_postal": fields.pop("billing_postal", {"postal_code": "94107", "country": None}),
        "created_at": format_micros(at_us),
        "device_id": fields.pop("device_id", None),
        "user_id": fields.pop("user_id", None),
        "schema_version": 1,
        "ingested_at": fields.pop("ingested_at", format_micros(at_us)),
        "_extra": {},
        "_source": "test",
        "_position": "",
        EVENT_US_KEY: at_us,
    }
    record.update(fields)
    return record


def chargeback(charge_id: str, received_us: int, **fields) -> dict:
    record = {
        "charge_id": charge_id,
        "reason_code": fields.pop("reason_code", "10.4"),
        "received_at": format_micros(received_us),
        "evidence_status": fields.pop("evidence_status", "pending"),
        "schema_version": 1,
        "ingested_at": format_micros(received_us),
        "_extra": {},
        "_source": "test",
        "_position": "",
        EVENT_US_KEY: received_us,
    }
    record.update(fields)
    return record


def kyc(user_id: str, version: int, updated_us: int, status: str = "verified") -> dict:
    return {
        "user_id": user_id,
        "legal_name": "Ana Pérez",
        "dob": "1980-05-17",
        "address": {"line1": "1 Main St", "city": None, "postal_code": None, "country": "US"},
        "document_type": "passport",
        "verification_status": status,
        "updated_at": format_micros(updated_us),
        "version": version,
        "schema_version": 1,
        "ingested_at": format_micros(updated_us),
        "_extra": {},
        "_source": "test",
        "_position": "",
        EVENT_US_KEY: updated_us,
    }


def timestamped(record: dict) -> beam.window.TimestampedValue:
    return beam.window.TimestampedValue(record, Timestamp(micros=record[EVENT_US_KEY]))
