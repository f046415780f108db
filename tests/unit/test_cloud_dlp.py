"""CloudDlpEngine: the requests it builds and how responses map back, at the protobuf level.

No Cloud DLP endpoint exists here, so a fake client stands in for DlpServiceClient: it records the
requests and answers with a DeidentifyContentResponse built from dlp_v2 types (tokens are a hash of
the value; dates become their year, as timePartConfig YEAR does).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import pathlib
import pickle
import traceback

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import dlp_v2

from io_connectors import cloud_dlp
from io_connectors.cloud_dlp import CloudDlpEngine, CloudDlpSettings
from transforms.deid import DeidError

ROOT = pathlib.Path(__file__).resolve().parents[2]
SENTINEL = "SENTINEL-PII-4111111111111111"
PII_KMS = "projects/rp-test/locations/europe-west3/keyRings/riskpipe/cryptoKeys/pii"
PCI_KMS = "projects/rp-test/locations/europe-west3/keyRings/riskpipe/cryptoKeys/pci"
PII_WRAPPED = b"wrapped-by-gcp-kms:pii" * 4
PCI_WRAPPED = b"wrapped-by-gcp-kms:pci" * 4


def load(name: str) -> dict:
    with open(ROOT / "dlp_configs" / "deidentify" / f"{name}.json", encoding="utf-8") as handle:
        return json.load(handle)


def settings(**overrides) -> CloudDlpSettings:
    values = {
        "project": "rp-test",
        "location": "europe-west3",
        "kms_key_names": {"riskpipe-pii": PII_KMS, "riskpipe-pci": PCI_KMS},
        "wrapped_keys": {
            "riskpipe-pii": base64.b64encode(PII_WRAPPED).decode(),
            "riskpipe-pci": base64.b64encode(PCI_WRAPPED).decode(),
        },
    }
    values.update(overrides)
    return CloudDlpSettings(**values)


def token(text: str) -> str:
    return "TOK:" + hashlib.sha256(text.encode()).hexdigest()[:12]


def fake_answer(request) -> dlp_v2.DeidentifyContentResponse:
    """What a DLP server would plausibly return: same table, strings tokenized, dates → year."""
    rows = []
    for row in request.item.table.rows:
        values = []
        for value in row.values:
            kind = dlp_v2.Value.pb(value).WhichOneof("type")
            if kind == "string_value":
                values.append(dlp_v2.Value(string_value=token(value.string_value)))
            elif kind == "date_value":
                values.append(dlp_v2.Value(integer_value=value.date_value.year))
            elif kind == "timestamp_value":
                values.append(dlp_v2.Value(integer_value=value.timestamp_value.year))
            else:
                values.append(dlp_v2.Value())
        rows.append(dlp_v2.Table.Row(values=values))
    table = dlp_v2.Table(headers=list(request.item.table.headers), rows=rows)
    return dlp_v2.DeidentifyContentResponse(item=dlp_v2.ContentItem(table=table))


class FakeClient:
    """Records deidentify_content calls; raises the queued errors first, then answers."""

    def __init__(self, answer=fake_answer, errors=()):
        self.answer = answer
        self.errors = list(errors)
        self.calls: list[dict] = []

    def deidentify_content(self, request=None, **kwargs):
        self.calls.append({"request": request, **kwargs})
        if self.errors:
            raise self.errors.pop(0)
        return self.answer(request)


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(cloud_dlp, "_sleep", slept.append)
    return slept


def payment(**fields) -> dict:
    record = {
        "event_id": "pe_1",
        "amount_minor": 1299,
        "card_token": "fp_4111",
        "ip_token": "203.0.113.7",
        "device_token": "DEVa1b2c3",
        "billing_postal_masked": "10115",
    }
    record.update(fields)
    return record


def cells(request) -> list[list]:
    """Each row as Python: (kind, value) per cell, kind None for an empty Value."""
    out = []
    for row in request.item.table.rows:
        cells_ = []
        for value in row.values:
            pb = dlp_v2.Value.pb(value)
            kind = pb.WhichOneof("type")
            cells_.append((kind, getattr(pb, kind) if kind else None))
        out.append(cells_)
    return out


def crypto_keys(config: dlp_v2.DeidentifyConfig) -> dict[str, tuple[str, bytes]]:
    """field → (KMS key name, wrapped key) of its crypto primitive."""
    keys = {}
    for ft in config.record_transformations.field_transformations:
        pt = dlp_v2.PrimitiveTransformation.pb(ft.primitive_transformation)
        kind = pt.WhichOneof("transformation")
        cfg = getattr(pt, kind)
        if cfg.HasField("crypto_key") if hasattr(cfg, "crypto_key") else False:
            wrapped = cfg.crypto_key.kms_wrapped
            for f in ft.fields:
                keys[f.name] = (wrapped.crypto_key_name, wrapped.wrapped_key)
    return keys


# ---- requests ------------------------------------------------------------------------------------


def test_payment_event_request_sends_only_template_fields_with_keys_per_family():
    engine = CloudDlpEngine(load("payment_event"), settings())
    record = payment(event_id=SENTINEL, merchant_secret=SENTINEL)
    (request,) = engine.build_requests([record])

    assert isinstance(request, dlp_v2.DeidentifyContentRequest)
    assert request.parent == "projects/rp-test/locations/europe-west3"
    headers = [h.name for h in request.item.table.headers]
    assert headers == ["card_token", "ip_token", "device_token", "billing_postal_masked"]
    assert headers == list(engine.fields)
    assert cells(request) == [
        [
            ("string_value", "fp_4111"),
            ("string_value", "203.0.113.7"),
            ("string_value", "DEVa1b2c3"),
            ("string_value", "10115"),
        ]
    ]
    # data minimisation: other columns never leave the process, not even in the serialized bytes
    wire = dlp_v2.DeidentifyContentRequest.serialize(request)
    assert SENTINEL.encode() not in wire
    assert b"1299" not in wire and b"event_id" not in wire

    # the template's family names are replaced by the GCP KMS key and the data key it wraps
    config = request.deidentify_config
    assert crypto_keys(config) == {
        "card_token": (PCI_KMS, PCI_WRAPPED),
        "ip_token": (PII_KMS, PII_WRAPPED),
        "device_token": (PII_KMS, PII_WRAPPED),
    }
    assert b"riskpipe-pii" not in wire and b"riskpipe-pci" not in wire
    # throwError is explicit: leaveUntransformed would return raw values
    assert "throw_error" in config.transformation_error_handling
    # the rest of the template survives the conversion
    mask = config.record_transformations.field_transformations[3].primitive_transformation
    assert mask.character_mask_config.number_to_mask == 2
    assert mask.character_mask_config.reverse_order is True
    deterministic = config.record_transformations.field_transformations[0].primitive_transformation
    assert deterministic.crypto_deterministic_config.surrogate_info_type.name == "CARD"
    assert engine.template == load("payment_event")  # the original, with families


def test_none_and_missing_values_are_empty_cells():
    engine = CloudDlpEngine(load("payment_event"), settings())
    record = {"card_token": None, "ip_token": "198.51.100.1"}  # device/billing missing
    (request,) = engine.build_requests([record])
    assert cells(request) == [[(None, None), ("string_value", "198.51.100.1"), (None, None), (None, None)]]


def test_requests_are_chunked_at_max_rows_in_order():
    engine = CloudDlpEngine(load("payment_event"), settings(max_rows_per_request=2))
    records = [payment(card_token=f"fp_{n}") for n in range(5)]
    requests = engine.build_requests(records)
    assert [len(r.item.table.rows) for r in requests] == [2, 2, 1]
    sent = [row[0][1] for r in requests for row in cells(r)]
    assert sent == [f"fp_{n}" for n in range(5)]
    assert all(r.parent == requests[0].parent for r in requests)


def test_requests_also_split_on_size_and_oversized_rows_are_refused():
    engine = CloudDlpEngine(load("payment_event"), settings())
    big = "A" * 200_000
    requests = engine.build_requests([payment(card_token=big) for _ in range(3)])
    assert [len(r.item.table.rows) for r in requests] == [2, 1]  # 0.5 MB per request, not 500 rows
    assert all(dlp_v2.DeidentifyContentRequest.pb(r).ByteSize() < 500_000 for r in requests)
    with pytest.raises(DeidError) as err:
        engine.build_requests([payment(card_token=SENTINEL * 40_000)])
    assert SENTINEL not in str(err.value)


def test_kyc_dates_are_sent_as_dates_and_timestamps():
    engine = CloudDlpEngine(load("kyc_profile"), settings())
    records = [
        {"user_id": "u1", "name_token": "Ada Lovelace", "dob_year": "1990-05-17"},
        {"user_id": "u2", "name_token": "Grace Hopper", "dob_year": dt.date(1985, 12, 9)},
        {"user_id": "u3", "name_token": "Alan Turing", "dob_year": "1970-01-02T03:04:05.000006Z"},
    ]
    (request,) = engine.build_requests(records)
    assert [h.name for h in request.item.table.headers] == ["name_token", "dob_year"]
    rows = cells(request)
    assert rows[0][0] == ("string_value", "Ada Lovelace")
    assert (rows[0][1][0], rows[0][1][1].year, rows[0][1][1].month, rows[0][1][1].day) == (
        "date_value",
        1990,
        5,
        17,
    )
    assert rows[1][1][1].year == 1985
    assert rows[2][1][0] == "timestamp_value"
    assert (rows[2][1][1].seconds, rows[2][1][1].nanos) == (86400 + 3 * 3600 + 4 * 60 + 5, 6000)
    assert crypto_keys(request.deidentify_config) == {"name_token": (PII_KMS, PII_WRAPPED)}


# ---- responses -----------------------------------------------------------------------------------


def test_deidentify_maps_rows_back_and_keeps_other_columns():
    client = FakeClient()
    engine = CloudDlpEngine(load("payment_event"), settings(), client=client)
    records = [payment(), payment(card_token="fp_5555", device_token=None), {"event_id": "pe_9"}]
    before = copy.deepcopy(records)
    out = engine.deidentify(records)

    assert records == before  # inputs are never mutated
    assert out[0] == {
        "event_id": "pe_1",
        "amount_minor": 1299,
        "card_token": token("fp_4111"),
        "ip_token": token("203.0.113.7"),
        "device_token": token("DEVa1b2c3"),
        "billing_postal_masked": token("10115"),
    }
    assert out[1]["card_token"] == token("fp_5555") and out[1]["device_token"] is None
    assert out[2] == {"event_id": "pe_9"}  # nothing to transform: untouched and not sent
    (call,) = client.calls
    assert len(call["request"].item.table.rows) == 2
    assert call["timeout"] == 30.0 and call["retry"] is None
    assert engine.failures == {}


def test_kyc_response_maps_integer_year_back():
    engine = CloudDlpEngine(load("kyc_profile"), settings(), client=FakeClient())
    out = engine.deidentify(
        [
            {"user_id": "u1", "name_token": "Ada Lovelace", "dob_year": "1990-05-17", "status": "ok"},
            {"user_id": "u2", "name_token": "Grace Hopper", "dob_year": None},
        ]
    )
    assert out[0] == {"user_id": "u1", "name_token": token("Ada Lovelace"), "dob_year": 1990, "status": "ok"}
    assert isinstance(out[0]["dob_year"], int)
    assert out[1] == {"user_id": "u2", "name_token": token("Grace Hopper"), "dob_year": None}


def test_apply_response_converts_every_value_kind():
    template = {
        "recordTransformations": {
            "fieldTransformations": [
                {
                    "fields": [{"name": n} for n in ("s", "i", "f", "b", "d", "d_obj", "t", "t_obj", "r")],
                    "primitiveTransformation": {"redactConfig": {}},
                }
            ]
        }
    }
    engine = CloudDlpEngine(template, settings())
    record = {
        "s": "x",
        "i": 1,
        "f": 1.5,
        "b": True,
        "d": "2024-01-01",
        "d_obj": dt.date(2024, 1, 1),
        "t": "2024-01-01T00:00:00Z",
        "t_obj": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        "r": "gone",
        "other": 7,
    }
    (request,) = engine.build_requests([record])
    values = [
        dlp_v2.Value(string_value="S"),
        dlp_v2.Value(integer_value=42),
        dlp_v2.Value(float_value=2.5),
        dlp_v2.Value(boolean_value=False),
        dlp_v2.Value(date_value={"year": 2023, "month": 12, "day": 31}),
        dlp_v2.Value(date_value={"year": 2023, "month": 12, "day": 31}),
        dlp_v2.Value(timestamp_value={"seconds": 86400, "nanos": 5000}),
        dlp_v2.Value(timestamp_value={"seconds": 86400}),
        dlp_v2.Value(),  # redacted
    ]
    response = dlp_v2.DeidentifyContentResponse(
        item=dlp_v2.ContentItem(
            table=dlp_v2.Table(
                headers=list(request.item.table.headers), rows=[dlp_v2.Table.Row(values=values)]
            )
        )
    )
    (out,) = engine.apply_response([record], response)
    assert out == {
        "s": "S",
        "i": 42,
        "f": 2.5,
        "b": False,
        "d": "2023-12-31",
        "d_obj": dt.date(2023, 12, 31),
        "t": "1970-01-02T00:00:00.000005Z",
        "t_obj": dt.datetime(1970, 1, 2, tzinfo=dt.timezone.utc),
        "r": None,
        "other": 7,
    }


def _response(headers: list[str], rows: list[list[str]]) -> dlp_v2.DeidentifyContentResponse:
    table = dlp_v2.Table(
        headers=[dlp_v2.FieldId(name=h) for h in headers],
        rows=[dlp_v2.Table.Row(values=[dlp_v2.Value(string_value=v) for v in row]) for row in rows],
    )
    return dlp_v2.DeidentifyContentResponse(item=dlp_v2.ContentItem(table=table))


@pytest.mark.parametrize(
    "response",
    [
        _response(["name_token", "dob_year"], [[SENTINEL, SENTINEL]] * 2),  # one row too many
        _response(["name_token"], [[SENTINEL]]),  # a header missing
        _response(["dob_year", "name_token"], [[SENTINEL, SENTINEL]]),  # headers swapped
        _response([SENTINEL, "dob_year"], [[SENTINEL, SENTINEL]]),  # a header that is a value
        dlp_v2.DeidentifyContentResponse(item=dlp_v2.ContentItem(value=SENTINEL)),  # not a table
    ],
)
def test_mismatched_response_is_an_error_without_values(response):
    engine = CloudDlpEngine(load("kyc_profile"), settings())
    record = {"name_token": SENTINEL, "dob_year": "1990-05-17"}
    with pytest.raises(DeidError) as err:
        engine.apply_response([record], response)
    assert "does not match" in str(err.value)
    assert SENTINEL not in "".join(traceback.format_exception(err.value))
    assert err.value.__cause__ is None


def test_summary_errors_are_counted_and_the_field_withheld():
    def answer(request):
        response = fake_answer(request)
        summary = dlp_v2.TransformationSummary(
            field=dlp_v2.FieldId(name="ip_token"),
            results=[
                dlp_v2.TransformationSummary.SummaryResult(
                    count=3, code=dlp_v2.TransformationSummary.TransformationResultCode.SUCCESS
                ),
                dlp_v2.TransformationSummary.SummaryResult(
                    count=1,
                    code=dlp_v2.TransformationSummary.TransformationResultCode.ERROR,
                    details="bad value",
                ),
            ],
        )
        response.overview = dlp_v2.TransformationOverview(transformation_summaries=[summary])
        return response

    engine = CloudDlpEngine(load("payment_event"), settings(), client=FakeClient(answer))
    out = engine.deidentify([payment(), payment(ip_token="not-an-ip")])
    assert engine.failures == {"ip_token": 1}
    # which cell failed is not reported, so none of that field's cells can be trusted
    assert [row["ip_token"] for row in out] == [None, None]
    assert out[0]["card_token"] == token("fp_4111")


def test_values_that_would_fail_in_dlp_are_not_sent():
    client = FakeClient()
    engine = CloudDlpEngine(load("payment_event"), settings(), client=client)
    records = [
        payment(device_token="dev_1f2e3d"),  # "_" is outside ALPHA_NUMERIC
        payment(device_token="D"),  # FPE needs at least two characters
        payment(device_token="DEVé12"),  # FPE needs ASCII
        payment(card_token={"nested": SENTINEL}),  # not a scalar
        payment(card_token=""),  # empty stays empty, as in the local engine
    ]
    out = engine.deidentify(records)
    assert [row["device_token"] for row in out[:3]] == [None, None, None]
    assert out[3]["card_token"] is None and out[4]["card_token"] == ""
    assert engine.failures == {"device_token": 3, "card_token": 1}
    sent = [row for call in client.calls for row in cells(call["request"])]
    assert [row[2] for row in sent[:3]] == [(None, None)] * 3
    assert sent[4][0] == (None, None)


def test_records_with_nothing_to_send_make_no_request():
    client = FakeClient()
    engine = CloudDlpEngine(load("payment_event"), settings(), client=client)
    assert engine.deidentify([]) == []
    assert engine.deidentify([{"event_id": "pe_1"}, {"card_token": None}]) == [
        {"event_id": "pe_1"},
        {"card_token": None},
    ]
    assert client.calls == []


def test_oversized_row_fails_closed_in_deidentify():
    client = FakeClient()
    engine = CloudDlpEngine(load("payment_event"), settings(), client=client)
    out = engine.deidentify([payment(card_token=SENTINEL * 40_000), payment()])
    assert out[0]["card_token"] is None and out[0]["ip_token"] is None
    assert out[1]["card_token"] == token("fp_4111")
    assert engine.failures["card_token"] == 1
    (call,) = client.calls
    assert len(call["request"].item.table.rows) == 1


def test_dotted_fields_read_and_write_nested_records():
    template = {
        "recordTransformations": {
            "fieldTransformations": [
                {
                    "fields": [{"name": "billing_postal.postal_code"}],
                    "primitiveTransformation": {"characterMaskConfig": {"numberToMask": 2}},
                }
            ]
        }
    }
    engine = CloudDlpEngine(template, settings(), client=FakeClient())
    record = {"billing_postal": {"postal_code": "10115", "country": "DE"}}
    (out,) = engine.deidentify([record])
    assert out == {"billing_postal": {"postal_code": token("10115"), "country": "DE"}}
    assert record["billing_postal"]["postal_code"] == "10115"


def test_date_shift_sends_its_context_column_and_needs_a_context_value():
    template = {
        "recordTransformations": {
            "fieldTransformations": [
                {
                    "fields": [{"name": "dob"}],
                    "primitiveTransformation": {
                        "dateShiftConfig": {
                            "upperBoundDays": 30,
                            "lowerBoundDays": -30,
                            "context": {"name": "user_id"},
                            "cryptoKey": {"kmsWrapped": {"cryptoKeyName": "riskpipe-pii", "wrappedKey": ""}},
                        }
                    },
                }
            ]
        }
    }

    def answer(request):  # DLP returns the context column unchanged and the date shifted
        response = fake_answer(request)
        for row_in, row_out in zip(request.item.table.rows, response.item.table.rows, strict=True):
            if "date_value" in row_in.values[0]:
                row_out.values[0] = dlp_v2.Value(date_value={"year": 2000, "month": 1, "day": 1})
            row_out.values[1] = row_in.values[1]
        return response

    client = FakeClient(answer)
    engine = CloudDlpEngine(template, settings(), client=client)
    assert engine.fields == ("dob",) and engine.headers == ("dob", "user_id")
    out = engine.deidentify([{"user_id": "u1", "dob": "1990-05-17"}, {"dob": "1990-05-17"}])
    assert out == [{"user_id": "u1", "dob": "2000-01-01"}, {"dob": None}]  # no context: no random shift
    assert engine.failures == {"dob": 1}
    (call,) = client.calls
    assert cells(call["request"])[0][1] == ("string_value", "u1")


# ---- templates and settings that are refused -------------------------------------------------------


def test_unknown_template_key_fails_at_construction():
    template = load("payment_event")
    mask = template["recordTransformations"]["fieldTransformations"][3]["primitiveTransformation"]
    mask["characterMaskConfig"]["numbertoMask"] = mask["characterMaskConfig"].pop("numberToMask")
    with pytest.raises(ValueError, match="numbertoMask"):
        CloudDlpEngine(template, settings())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.update(transformationErrorHandling={"leaveUntransformed": {}}),
            "transformationErrorHandling",
        ),
        (lambda t: t["recordTransformations"].update(recordSuppressions=[]), "recordSuppressions"),
        (lambda t: t["recordTransformations"]["fieldTransformations"][0].update(condition={}), "condition"),
        (lambda t: t["recordTransformations"].update(fieldTransformations=[]), "non-empty"),
        (
            lambda t: t["recordTransformations"]["fieldTransformations"][0].update(
                primitiveTransformation={"replaceWithInfoTypeConfig": {}}
            ),
            "replaceWithInfoTypeConfig",
        ),
        (
            lambda t: t["recordTransformations"]["fieldTransformations"][1].update(
                fields=[{"name": "card_token"}]
            ),
            "more than once",
        ),
        (
            lambda t: t["recordTransformations"]["fieldTransformations"][0]["primitiveTransformation"][
                "cryptoDeterministicConfig"
            ].update(context={"name": "ip_token"}),
            "names a column sent to DLP",
        ),
    ],
)
def test_templates_the_local_engine_refuses_are_refused(change, message):
    template = load("payment_event")
    change(template)
    with pytest.raises(ValueError, match=message):
        CloudDlpEngine(template, settings())


@pytest.mark.parametrize("missing", ["kms_key_names", "wrapped_keys"])
def test_family_missing_from_settings_is_named(missing):
    partial = dict(getattr(settings(), missing))
    del partial["riskpipe-pci"]
    with pytest.raises(ValueError, match="'riskpipe-pci'"):
        CloudDlpEngine(load("payment_event"), settings(**{missing: partial}))
    # kyc_profile only uses riskpipe-pii, so the same settings serve it
    assert CloudDlpEngine(load("kyc_profile"), settings(**{missing: partial})).fields == (
        "name_token",
        "dob_year",
    )


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ({"unwrapped": {"key": base64.b64encode(b"k" * 32).decode()}}, "unwrapped"),
        ({"transient": {"name": "tmp"}}, "transient"),
    ],
)
def test_unwrapped_and_transient_keys_are_refused(key, message):
    template = load("kyc_profile")
    template["recordTransformations"]["fieldTransformations"][0]["primitiveTransformation"][
        "cryptoDeterministicConfig"
    ]["cryptoKey"] = key
    with pytest.raises(ValueError, match=message) as err:
        CloudDlpEngine(template, settings())
    assert base64.b64encode(b"k" * 32).decode() not in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"project": ""},
        {"location": "europe-west3/../x"},
        {"max_rows_per_request": 0},
        {"timeout_s": 0},
        {"kms_key_names": {"riskpipe-pii": "alias/riskpipe-tokenization"}},
        {"wrapped_keys": {"riskpipe-pii": "not base64!"}},
    ],
)
def test_invalid_settings_are_refused(overrides):
    with pytest.raises(ValueError, match="CloudDlpSettings"):
        settings(**overrides)


# ---- calling DLP ---------------------------------------------------------------------------------


def test_retries_service_unavailable_then_succeeds(no_backoff_sleep):
    client = FakeClient(errors=[api_exceptions.ServiceUnavailable("try again")])
    engine = CloudDlpEngine(load("kyc_profile"), settings(timeout_s=5.0), client=client)
    (out,) = engine.deidentify([{"name_token": "Ada", "dob_year": "1990-05-17"}])
    assert out == {"name_token": token("Ada"), "dob_year": 1990}
    assert len(client.calls) == 2
    assert client.calls[0]["request"] == client.calls[1]["request"]
    assert all(call["timeout"] == 5.0 and call["retry"] is None for call in client.calls)
    assert len(no_backoff_sleep) == 1 and 0 <= no_backoff_sleep[0] <= 2.0


def test_retries_are_bounded(no_backoff_sleep):
    errors = [
        api_exceptions.ResourceExhausted("quota"),
        api_exceptions.DeadlineExceeded("slow"),
        *[api_exceptions.ServiceUnavailable("down")] * 4,
    ]
    client = FakeClient(errors=errors)
    engine = CloudDlpEngine(load("kyc_profile"), settings(), client=client)
    with pytest.raises(DeidError, match="after 5 attempts"):
        engine.deidentify([{"name_token": "Ada"}])
    assert len(client.calls) == 5
    assert len(no_backoff_sleep) == 4
    assert all(0 <= s <= limit for s, limit in zip(no_backoff_sleep, [2, 4, 8, 16], strict=True))
    assert engine.failures == {}


def test_other_api_errors_are_not_retried_and_drop_the_server_message():
    client = FakeClient(errors=[api_exceptions.InvalidArgument(f"invalid identifier {SENTINEL}")])
    engine = CloudDlpEngine(load("kyc_profile"), settings(), client=client)
    with pytest.raises(DeidError, match="InvalidArgument") as err:
        engine.deidentify([{"name_token": SENTINEL}])
    assert len(client.calls) == 1
    assert SENTINEL not in "".join(traceback.format_exception(err.value))


def test_engine_pickles_before_first_use_and_creates_its_client_lazily(monkeypatch):
    engine = CloudDlpEngine(
        load("payment_event"), settings(api_endpoint="dlp.europe-west3.rep.googleapis.com")
    )
    copy_ = pickle.loads(pickle.dumps(engine))
    assert copy_.fields == engine.fields
    assert copy_.deidentify_config == engine.deidentify_config
    assert copy_.build_requests([payment()]) == engine.build_requests([payment()])

    created = []

    class Client(FakeClient):
        def __init__(self, client_options=None):
            super().__init__()
            created.append(client_options)

    monkeypatch.setattr(dlp_v2, "DlpServiceClient", Client)
    assert copy_.deidentify([payment()])[0]["card_token"] == token("fp_4111")
    assert created == [{"api_endpoint": "dlp.europe-west3.rep.googleapis.com"}]
    # a client it created is not pickled (gRPC channels cannot be); the next worker makes its own
    assert pickle.loads(pickle.dumps(copy_))._client is None
