"""ParseRecords: normalisation, schema evolution, quarantine reasons, never raises."""

import io

import apache_beam as beam
import fastavro
import orjson
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from transforms.parse import ParseRecords, _ParseRecordFn
from transforms.records import SourceRecord

V1 = {
    "event_id": "pe_1",
    "merchant_id": "m_1",
    "amount": 1250,
    "currency": "usd",
    "card_fingerprint": "cf_a",
    "ip_address": "2001:0db8:0000:0000:0000:0000:0000:0001",
    "billing_postal": "94107",
    "created_at": "2026-11-02T10:00:00.5+02:00",
}


def _parse_one(dataset, element):
    """Run the DoFn directly (fast) and return (parsed, quarantined) lists."""
    fn = _ParseRecordFn(dataset)
    fn.setup()
    parsed, quarantined = [], []
    for out in fn.process(element):
        if isinstance(out, beam.pvalue.TaggedOutput):
            quarantined.append(out.value)
        else:
            parsed.append(out)
    return parsed, quarantined


def _strip(record):
    return {k: v for k, v in record.items() if not k.startswith("_") and k != "ingested_at"}


def test_v1_is_upcast_and_normalised():
    [record], [] = _parse_one("payment_event", orjson.dumps(V1))
    assert _strip(record) == {
        "event_id": "pe_1",
        "merchant_id": "m_1",
        "amount": 1250,
        "currency": "USD",
        "card_fingerprint": "cf_a",
        "ip_address": "2001:db8::1",
        "billing_postal": {"postal_code": "94107", "country": None},
        "created_at": "2026-11-02T08:00:00.500000Z",
        "device_id": None,
        "user_id": None,
        "schema_version": 1,
    }
    assert record["_extra"] == {}


def test_v3_struct_and_unknown_fields_kept_apart():
    v3 = dict(V1, billing_postal={"postal_code": "10115", "country": "de"}, device_id="d1", wallet_type="x")
    [record], [] = _parse_one("payment_event", SourceRecord(orjson.dumps(v3), "kafka:p", "0:7", 3))
    assert record["billing_postal"] == {"postal_code": "10115", "country": "DE"}
    assert record["schema_version"] == 3
    assert record["_extra"] == {"wallet_type": "x"}
    assert "wallet_type" not in record
    assert (record["_source"], record["_position"]) == ("kafka:p", "0:7")


def test_avro_payload_with_schema_version_header():
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schemas.load_schema("payment_event", 1), dict(V1, currency="EUR"))
    [record], [] = _parse_one("payment_event", SourceRecord(buf.getvalue(), "k", "1", 1, None, "avro"))
    assert record["currency"] == "EUR"
    assert record["billing_postal"]["postal_code"] == "94107"


def test_kyc_address_both_shapes():
    base = {
        "user_id": "u1",
        "legal_name": "Zoë Łukasiewicz",
        "dob": "1990-02-28",
        "document_type": "passport",
        "verification_status": "verified",
        "updated_at": "2026-11-02T10:00:00-05:00",
        "version": 2,
    }
    [a], [] = _parse_one("kyc_profile", dict(base, address="1 Main St, Springfield, 62704, US"))
    [b], [] = _parse_one("kyc_profile", dict(base, address={"line1": "1 Main St", "country": "us"}))
    assert a["address"]["country"] == b["address"]["country"] == "US"
    assert a["updated_at"] == "2026-11-02T15:00:00.000000Z"


def _reason(dataset, element):
    parsed, quarantined = _parse_one(dataset, element)
    assert not parsed
    return quarantined[0]["reason"]


def test_quarantine_reasons_are_machine_readable():
    without_amount = {k: v for k, v in V1.items() if k != "amount"}
    assert _reason("payment_event", b'{"event_id": "x", ') == "invalid_json"
    assert _reason("payment_event", b"[1, 2]") == "not_an_object"
    assert _reason("payment_event", b"\xff\xfe{}") == "not_utf8"
    assert _reason("payment_event", orjson.dumps(without_amount)) == "missing_field:amount"
    assert _reason("payment_event", orjson.dumps(dict(V1, amount="12.50"))) == "bad_type:amount"
    assert _reason("payment_event", orjson.dumps(dict(V1, amount=True))) == "bad_type:amount"
    assert (
        _reason("payment_event", orjson.dumps(dict(V1, created_at="yesterday"))) == "bad_timestamp:created_at"
    )
    assert (
        _reason("payment_event", orjson.dumps(dict(V1, created_at="2026-13-45T99:00:00Z")))
        == "bad_timestamp:created_at"
    )
    assert _reason("payment_event", orjson.dumps(dict(V1, ip_address="999.1.1.1"))) == "bad_value:ip_address"
    assert (
        _reason("payment_event", SourceRecord(orjson.dumps(V1), schema_version=9))
        == "unknown_schema_version:9"
    )
    assert _reason("payment_event", SourceRecord(b"\x00\x01", fmt="avro", schema_version=1)) == "invalid_avro"
    assert (
        _reason("chargeback", {"charge_id": "c", "reason_code": 4, "received_at": "2026-11-02T00:00:00Z"})
        == "bad_type:reason_code"
    )


def test_quarantine_keeps_original_bytes_and_source():
    _, [q] = _parse_one("chargeback", SourceRecord(b"not json", "file:cb.jsonl", "12"))
    assert q["payload"] == b"not json"
    assert (q["dataset"], q["source"], q["position"]) == ("chargeback", "file:cb.jsonl", "12")


def test_parse_records_in_a_pipeline_splits_outputs():
    with TestPipeline() as p:
        outputs = (
            p
            | beam.Create([orjson.dumps(V1), b"{oops", orjson.dumps(dict(V1, event_id="pe_2"))])
            | (ParseRecords("payment_event"))
        )
        assert_that(
            outputs.parsed | beam.Map(lambda r: r["event_id"]), equal_to(["pe_1", "pe_2"]), label="ok"
        )
        assert_that(
            outputs.quarantine | beam.Map(lambda q: q["reason"]), equal_to(["invalid_json"]), label="dlq"
        )


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=300), dataset=st.sampled_from(schemas.DATASETS))
def test_any_bytes_are_parsed_or_quarantined_never_raised(payload, dataset):
    parsed, quarantined = _parse_one(dataset, payload)
    assert len(parsed) + len(quarantined) == 1
    if quarantined:
        assert quarantined[0]["reason"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    overrides=st.dictionaries(st.sampled_from([*sorted(V1), "device_id", "extra"]), json_values, max_size=4)
)
def test_any_field_values_are_parsed_or_quarantined(overrides):
    obj = dict(V1, **overrides)
    parsed, quarantined = _parse_one("payment_event", obj)
    assert len(parsed) + len(quarantined) == 1
    if parsed:
        assert isinstance(parsed[0]["amount"], int)
        assert parsed[0]["created_at"].endswith("Z")
