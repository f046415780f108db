"""``ParseRecords``: bytes, text or dicts in; normalised records or quarantine out.

What "normalised" means for every dataset:

* the payload is decoded (JSON, or schemaless Avro with the writer schema named
  by the ``schema_version`` header) and upcast to the current reader shape:
  fields that older versions lack are present with ``None``;
* fields whose type changed across versions are accepted in every shape they
  ever had, forever (``billing_postal``: string → ``{postal_code, country}``;
  KYC ``address``: string or struct) and come out in the newest shape;
* timestamps are converted to canonical UTC text (see ``timeutil``);
* fields no schema version knows are kept apart under ``_extra`` — never merged
  into known fields — so the policy layer can count and drop them;
* anything invalid goes to the ``quarantine`` output with a machine-readable
  reason (``invalid_json``, ``not_an_object``, ``missing_field:<name>``,
  ``bad_type:<name>``, ``bad_value:<name>``, ``bad_timestamp:<name>``,
  ``unknown_schema_version:<v>``, ``invalid_avro``, ``not_utf8``).

The transform never raises on input: an unexpected error while normalising is
quarantined as ``internal_error:<ExceptionType>`` so one poison message cannot
stop a streaming job. Quarantine payloads are the original bytes (they hold
PII: the quarantine sink encrypts them).
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import fastavro
import orjson
from apache_beam import pvalue
from apache_beam.metrics import Metrics

import schemas
from transforms.records import (
    EVENT_TIME_FIELD,
    EVENT_US_KEY,
    EXTRA_KEY,
    POSITION_KEY,
    SOURCE_KEY,
    Record,
    SourceRecord,
    check_dataset,
)
from transforms.timeutil import format_micros, now_micros, parse_rfc3339_micros

QUARANTINE = "quarantine"
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_INT64 = 2**63


class RecordError(ValueError):
    """A record is invalid; ``reason`` is the machine-readable quarantine reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- field readers: each returns the normalised value or raises RecordError ---


def _required(obj: dict, name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise RecordError(f"missing_field:{name}")
    return obj[name]


def _str(obj: dict, name: str, *, required: bool = True) -> str | None:
    value = _required(obj, name) if required else obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"bad_type:{name}")
    if required and not value.strip():
        raise RecordError(f"bad_value:{name}")
    return value


def _int(obj: dict, name: str) -> int:
    value = _required(obj, name)
    # bool is an int subclass in Python; a JSON true is not an amount
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"bad_type:{name}")
    if not -_INT64 <= value < _INT64:  # Avro long / Parquet int64 / NUMBER(19)
        raise RecordError(f"bad_value:{name}")
    return value


def _timestamp(obj: dict, name: str) -> int:
    value = _required(obj, name)
    if not isinstance(value, str):
        raise RecordError(f"bad_type:{name}")
    try:
        return parse_rfc3339_micros(value)
    except (ValueError, OverflowError):
        raise RecordError(f"bad_timestamp:{name}") from None


def _country(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"bad_type:{name}")
    if not _COUNTRY.match(value):
        raise RecordError(f"bad_value:{name}")
    return value.upper()


# --- per-dataset normalisers ---


def _normalize_payment(obj: dict) -> tuple[Record, int, int]:
    amount = _int(obj, "amount")
    if amount < 0:
        raise RecordError("bad_value:amount")
    currency = _str(obj, "currency")
    if not _CURRENCY.match(currency):
        raise RecordError("bad_value:currency")
    ip_text = _str(obj, "ip_address")
    try:
        ip = ipaddress.ip_address(ip_text.strip())
    except ValueError:
        raise RecordError("bad_value:ip_address") from None
    postal = _required(obj, "billing_postal")
    # v1/v2: a string; v3: a struct. Both shapes are valid forever.
    if isinstance(postal, str):
        postal = {"postal_code": postal, "country": None}
        inferred = 1
    elif isinstance(postal, dict):
        code = postal.get("postal_code")
        if not isinstance(code, str):
            raise RecordError(
                "bad_type:billing_postal.postal_code"
                if code is not None
                else "missing_field:billing_postal.postal_code"
            )
        postal = {"postal_code": code, "country": _country(postal.get("country"), "billing_postal.country")}
        inferred = 3
    else:
        raise RecordError("bad_type:billing_postal")
    created_us = _timestamp(obj, "created_at")
    device_id = _str(obj, "device_id", required=False)
    user_id = _str(obj, "user_id", required=False)
    if inferred == 1 and ("device_id" in obj or "user_id" in obj):
        inferred = 2
    record = {
        "event_id": _str(obj, "event_id"),
        "merchant_id": _str(obj, "merchant_id"),
        "amount": amount,
        "currency": currency.upper(),
        "card_fingerprint": _str(obj, "card_fingerprint"),
        "ip_address": ip.compressed,
        "billing_postal": postal,
        "created_at": format_micros(created_us),
        "device_id": device_id,
        "user_id": user_id,
    }
    return record, created_us, inferred


def _normalize_chargeback(obj: dict) -> tuple[Record, int, int]:
    received_us = _timestamp(obj, "received_at")
    record = {
        "charge_id": _str(obj, "charge_id"),
        "reason_code": _str(obj, "reason_code"),
        "received_at": format_micros(received_us),
        "evidence_status": _str(obj, "evidence_status"),
    }
    return record, received_us, 1


def _normalize_kyc(obj: dict) -> tuple[Record, int, int]:
    dob = _str(obj, "dob")
    try:
        if len(dob) != 10:
            raise ValueError(dob)
        dt.date.fromisoformat(dob)
    except ValueError:
        raise RecordError("bad_value:dob") from None
    address = _required(obj, "address")
    if isinstance(address, str):
        address = {
            "line1": address,
            "city": None,
            "postal_code": None,
            "country": _country_from_text(address),
        }
    elif isinstance(address, dict):
        line1 = address.get("line1")
        if not isinstance(line1, str):
            raise RecordError(
                "bad_type:address.line1" if line1 is not None else "missing_field:address.line1"
            )
        address = {
            "line1": line1,
            "city": _opt_str(address, "city", "address.city"),
            "postal_code": _opt_str(address, "postal_code", "address.postal_code"),
            "country": _country(address.get("country"), "address.country"),
        }
    else:
        raise RecordError("bad_type:address")
    version = _int(obj, "version")
    if version < 1:
        raise RecordError("bad_value:version")
    updated_us = _timestamp(obj, "updated_at")
    record = {
        "user_id": _str(obj, "user_id"),
        "legal_name": _str(obj, "legal_name"),
        "dob": dob,
        "address": address,
        "document_type": _str(obj, "document_type"),
        "verification_status": _str(obj, "verification_status"),
        "updated_at": format_micros(updated_us),
        "version": version,
    }
    return record, updated_us, 1


def _opt_str(obj: dict, key: str, label: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise RecordError(f"bad_type:{label}")
    return value


def _country_from_text(address: str) -> str | None:
    """A free-text address often ends in a country code ("…, 62704, US"); use it only if it is one."""
    tail = address.rsplit(",", 1)[-1].strip()
    return tail.upper() if _COUNTRY.match(tail) else None


_NORMALIZERS: dict[str, Callable[[dict], tuple[Record, int, int]]] = {
    "payment_event": _normalize_payment,
    "chargeback": _normalize_chargeback,
    "kyc_profile": _normalize_kyc,
}


class _ParseRecordFn(beam.DoFn):
    def __init__(self, dataset: str):
        self._dataset = dataset

    def setup(self):
        dataset = self._dataset
        self._known = frozenset(schemas.all_field_names(dataset))
        self._versions = frozenset(schemas.versions(dataset))
        self._reader = schemas.load_schema(dataset)
        self._writers = {v: schemas.load_schema(dataset, v) for v in self._versions}
        self._normalize = _NORMALIZERS[dataset]
        self._parsed = Metrics.counter("riskpipe.parse", f"{dataset}.parsed")
        self._quarantined = Metrics.counter("riskpipe.parse", f"{dataset}.quarantined")
        self._with_extra = Metrics.counter("riskpipe.parse", f"{dataset}.records_with_unknown_fields")

    def process(self, element):
        src = element if isinstance(element, SourceRecord) else SourceRecord(payload=element)
        try:
            record = self._parse(src)
        except RecordError as err:
            yield self._quarantine(src, err.reason)
            return
        except Exception as err:  # noqa: BLE001 - the safety net: never stop the pipeline on input
            yield self._quarantine(src, f"internal_error:{type(err).__name__}")
            return
        self._parsed.inc()
        if record[EXTRA_KEY]:
            self._with_extra.inc()
        yield record

    def _parse(self, src: SourceRecord) -> Record:
        declared = src.schema_version
        if declared is not None and declared not in self._versions:
            raise RecordError(f"unknown_schema_version:{declared}")
        obj = self._decode(src, declared)
        if not isinstance(obj, dict):
            raise RecordError("not_an_object")
        record, event_us, inferred = self._normalize(obj)
        record["schema_version"] = declared if declared is not None else inferred
        record["ingested_at"] = src.ingested_at or format_micros(now_micros())
        record[EXTRA_KEY] = {k: v for k, v in obj.items() if k not in self._known}
        record[SOURCE_KEY] = src.source
        record[POSITION_KEY] = src.position
        record[EVENT_US_KEY] = event_us
        return record

    def _decode(self, src: SourceRecord, declared: int | None) -> Any:
        payload = src.payload
        if isinstance(payload, dict):
            return payload
        if src.fmt == "avro":
            if not isinstance(payload, bytes | bytearray):
                raise RecordError("invalid_avro")
            writer = self._writers[declared if declared is not None else 1]
            try:
                return fastavro.schemaless_reader(io.BytesIO(payload), writer, self._reader)
            except Exception:  # noqa: BLE001 - fastavro raises many types on garbage
                raise RecordError("invalid_avro") from None
        if isinstance(payload, bytes | bytearray):
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise RecordError("not_utf8") from None
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise RecordError("invalid_json") from None

    def _quarantine(self, src: SourceRecord, reason: str) -> pvalue.TaggedOutput:
        self._quarantined.inc()
        Metrics.counter("riskpipe.parse", f"{self._dataset}.quarantined.{reason.split(':', 1)[0]}").inc()
        payload = src.payload
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogatepass")
        elif isinstance(payload, dict):
            payload = _dump_any(payload)
        return pvalue.TaggedOutput(
            QUARANTINE,
            {
                "dataset": self._dataset,
                "reason": reason,
                "source": src.source,
                "position": src.position,
                "schema_version": src.schema_version,
                "ingested_at": src.ingested_at or format_micros(now_micros()),
                "payload": bytes(payload),
            },
        )


def _dump_any(obj: dict) -> bytes:
    """Serialise a decoded payload for quarantine, whatever it holds (e.g. ints beyond 64 bits)."""
    try:
        return orjson.dumps(obj, default=str)
    except TypeError:
        return json.dumps(obj, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")


class ParseRecords(beam.PTransform):
    """Parse and normalise one dataset; invalid input leaves through ``quarantine``.

    Returns a ``DoOutputsTuple`` with ``parsed`` (normalised records) and
    ``quarantine`` (dicts with ``reason``, ``source``, ``position`` and the
    original ``payload`` bytes). Guarantee: every input element appears in
    exactly one of the two outputs.
    """

    def __init__(self, dataset: str):
        super().__init__()
        self._dataset = check_dataset(dataset)

    def expand(self, pcoll):
        return pcoll | "Parse" >> beam.ParDo(_ParseRecordFn(self._dataset)).with_outputs(
            QUARANTINE, main="parsed"
        )


def event_time_field(dataset: str) -> str:
    return EVENT_TIME_FIELD[check_dataset(dataset)]
