"""Classification policy, the non-prod guard, fail-closed protection and token properties."""

from __future__ import annotations

import json
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import dlp_configs
import schemas
from io_connectors.keys import LocalKeyProvider
from runners.options import key_provider
from tests.unit.beamtest import T0, kyc, payment
from transforms.protect import ProtectFields, ZonePlan, ip_prefix

POLICY_TEXT = (dlp_configs.resources.files("dlp_configs") / "classification.yaml").read_text()


def _leaf_paths(schema_fields, prefix=""):
    for field in schema_fields:
        ftype = field["type"]
        branches = ftype if isinstance(ftype, list) else [ftype]
        records = [b for b in branches if isinstance(b, dict) and b.get("type") == "record"]
        if records:
            for record in records:
                yield from _leaf_paths(record["fields"], f"{prefix}{field['name']}.")
        else:
            yield f"{prefix}{field['name']}"


@pytest.mark.parametrize("dataset", schemas.DATASETS)
def test_every_schema_field_of_every_version_is_classified(dataset):
    policy = dlp_configs.load_policy().dataset(dataset)
    for version in schemas.versions(dataset):
        for path in _leaf_paths(schemas.raw_schema(dataset, version)["fields"]):
            # a string that was later widened into a struct (billing_postal v1) is upcast into
            # the struct's leaves, so classifying those leaves classifies it
            upcast = any(name.startswith(path + ".") for name in policy.fields)
            assert path in policy.fields or upcast, f"{dataset} v{version}: {path} unclassified"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("class: PCI", "class: SECRET", "class"),
        (
            "curated: [{handling: tokenize, column: card_token}]",
            "curated: [{handling: shred, column: card_token}]",
            "handling",
        ),
        ("    subject: card_fingerprint", "    subject: card_fingerprint\n    owner: fraud", "owner"),
        (
            "analytics: tokenize\n      ip_address",
            "analytics: keep\n      ip_address",
            "analytics may not keep",
        ),
        (
            "curated: [{handling: mask, column: billing_postal_masked}]",
            "curated: keep",
            "curated may not keep",
        ),
        (
            "curated: [{handling: tokenize, column: name_token}]",
            "curated: [{handling: tokenize, column: nm}]",
            "no transformation",
        ),
    ],
)
def test_policy_typos_and_unsafe_handlings_fail_at_load(old, new, message):
    assert old in POLICY_TEXT
    with pytest.raises(dlp_configs.PolicyError, match=message):
        dlp_configs.parse_policy(POLICY_TEXT.replace(old, new, 1))


def test_nonprod_guard_refuses_keep_of_personal_data():
    text = POLICY_TEXT.replace(
        "      dob:\n        class: SPI\n",
        "      dob:\n        class: SPI\n        nonprod: {curated: [{handling: keep, column: dob_raw}]}\n",
    )
    policy = dlp_configs.parse_policy(text)
    dlp_configs.check_environment(policy, "prod")  # prod keeps the normal handling
    with pytest.raises(dlp_configs.PolicyError, match="refused in nonprod"):
        dlp_configs.check_environment(policy, "nonprod")


def test_local_key_file_is_refused_in_prod(tmp_path):
    with pytest.raises(ValueError, match="refused for --env prod"):
        LocalKeyProvider(str(tmp_path / "k.json"), env="prod")
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(ValueError, match="needs --key_store"):
        key_provider(PipelineOptions(["--env=prod", "--warehouse=w.duckdb"]))


def test_protect_payment_rows_hold_tokens_only(tmp_path):
    keys = LocalKeyProvider(str(tmp_path / "k.json"))
    record = payment(
        "pe_1",
        T0,
        card_fingerprint="cf_secret_card",
        ip_address="203.0.113.77",
        billing_postal={"postal_code": "94107", "country": "US"},
        device_id="dev_abc123",
        _extra={"wallet_type": "apple_pay"},
    )
    plan = ZonePlan("payment_event", "curated", "dev")
    with TestPipeline() as p:
        rows = p | beam.Create([record]) | ProtectFields("payment_event", "dev", keys)
        assert_that(rows | beam.Map(lambda r: sorted(r)), equal_to([sorted(plan.columns)]), label="columns")
        assert_that(
            rows
            | beam.Map(
                lambda r: (
                    r["ip_prefix"],
                    r["billing_postal_masked"],
                    r["billing_country"],
                    r["amount_minor"],
                )
            ),
            equal_to([("203.0.113.0/24", "941**", "US", 1000)]),
            label="values",
        )
        assert_that(
            rows
            | beam.Map(
                lambda r: any(
                    v in json.dumps(r) for v in ("cf_secret_card", "203.0.113.77", "dev_abc123", "apple_pay")
                )
            ),
            equal_to([False]),
            label="no_raw",
        )


def test_kyc_rows_generalize_and_tokenize(tmp_path):
    keys = LocalKeyProvider(str(tmp_path / "k.json"))
    with TestPipeline() as p:
        rows = p | beam.Create([kyc("u1", 3, T0)]) | ProtectFields("kyc_profile", "dev", keys)
        assert_that(
            rows
            | beam.Map(
                lambda r: (
                    r["dob_year"],
                    r["address_country"],
                    r["name_token"].startswith("NAME("),
                    "legal_name" in r,
                )
            ),
            equal_to([(1980, "US", True, False)]),
        )


def test_ip_prefix_generalizes_both_families():
    assert ip_prefix("203.0.113.77") == "203.0.113.0/24"
    assert ip_prefix("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert ip_prefix("not an ip") is None


_TOKEN_SCRIPT = """
import json, sys
from io_connectors.keys import LocalKeyProvider
from transforms.deid import LocalDeidEngine
import dlp_configs
engine = LocalDeidEngine(dlp_configs.load_templates()["payment_event"], LocalKeyProvider(sys.argv[1], env=sys.argv[2]).resolver())
print(json.dumps(engine.deidentify([{"card_token": "cf_same_card", "ip_token": "198.51.100.9"}])[0]))
"""


def _token_in_subprocess(key_file, env):
    out = subprocess.run(
        [sys.executable, "-c", _TOKEN_SCRIPT, str(key_file), env], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tokens_are_stable_across_processes_and_differ_between_environments(tmp_path):
    dev_a = _token_in_subprocess(tmp_path / "dev.json", "dev")
    dev_b = _token_in_subprocess(tmp_path / "dev.json", "dev")
    nonprod = _token_in_subprocess(tmp_path / "nonprod.json", "nonprod")
    assert dev_a == dev_b
    assert dev_a["card_token"] != nonprod["card_token"]
    assert dev_a["ip_token"] != nonprod["ip_token"]
    assert "cf_same_card" not in json.dumps(dev_a)
