"""Raw zone on a real S3/KMS API (moto server): land, re-land, replay, shred, quarantine prefix."""

from __future__ import annotations

import hashlib
import json
import uuid

import boto3

from io_connectors.keys import KmsKeyProvider
from io_connectors.raw_bucket import init_raw_bucket
from io_connectors.tables import DERIVED_TABLES
from io_connectors.warehouse import table_digest
from runners.cli import main as cli_main
from runners.synthetic import GeneratorRates, generate

DERIVED = DERIVED_TABLES


def _objects(s3, bucket: str, prefix: str) -> dict[str, str]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = hashlib.sha256(
                s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            ).hexdigest()
    return out


def test_raw_zone_on_s3_end_to_end(kms_key, tmp_path, capsys):
    s3 = boto3.client("s3")
    raw_bucket = f"riskpipe-raw-{uuid.uuid4().hex[:10]}"
    keys_bucket = f"riskpipe-keys-{uuid.uuid4().hex[:10]}"
    init_raw_bucket(f"s3://{raw_bucket}", kms_key)
    # moto evaluates only StringEquals policy conditions and treats the rest as true, so the
    # raw bucket's deny-non-TLS/deny-unencrypted statements would deny every put here;
    # their content is asserted in test_raw_bucket.py, and our writes always send SSE-KMS.
    s3.delete_bucket_policy(Bucket=raw_bucket)
    s3.create_bucket(Bucket=keys_bucket)
    s3.put_bucket_versioning(Bucket=keys_bucket, VersioningConfiguration={"Status": "Enabled"})
    store = f"s3://{keys_bucket}/tokenization/prod.json"
    KmsKeyProvider(store, env="prod").init(kms_key)
    generate(str(tmp_path / "in"), events=150, seed=9, rates=GeneratorRates(malformed_rate=0.05))
    common = [
        "--env=prod",
        f"--key_store={store}",
        f"--raw=s3://{raw_bucket}/raw",
        f"--raw_keys=s3://{keys_bucket}/subjects",
        f"--raw_kms_key_id={kms_key}",
    ]
    assert (
        cli_main(
            ["run", "all", f"--input={tmp_path / 'in'}", f"--warehouse={tmp_path / 'wh.duckdb'}", *common]
        )
        == 0
    )
    landed = _objects(s3, raw_bucket, "raw/")
    assert any(k.startswith("raw/payment_event/dt=") for k in landed)
    assert any(k.startswith("raw/_quarantine/") for k in landed)
    some = next(k for k in landed if k.startswith("raw/kyc_profile/"))
    head = s3.head_object(Bucket=raw_bucket, Key=some)
    assert head["ServerSideEncryption"] == "aws:kms" and head["ObjectLockMode"] == "COMPLIANCE"

    # re-landing the same input: byte-identical objects, no new versions
    assert cli_main(["run", "land", f"--input={tmp_path / 'in'}", *common]) == 0
    assert _objects(s3, raw_bucket, "raw/") == landed
    versions = s3.list_object_versions(Bucket=raw_bucket, Prefix="raw/")["Versions"]
    assert len(versions) == len(landed)

    # replay from S3 reproduces every derived table
    replay = tmp_path / "replay.duckdb"
    args = [
        "run",
        "backfill",
        "--from=2026-11-01T00:00:00Z",
        "--to=2026-12-01T00:00:00Z",
        f"--warehouse={replay}",
        *common,
    ]
    assert cli_main(args) == 0
    for table in DERIVED:
        assert table_digest(str(replay), table, exclude=("ingested_at", "computed_at")) == table_digest(
            str(tmp_path / "wh.duckdb"), table, exclude=("ingested_at", "computed_at")
        ), table

    # crypto-shredding: every version of the subject's key is gone, the report lists objects
    user = json.loads(next((tmp_path / "in" / "kyc_profile").glob("*.jsonl")).read_bytes().splitlines()[0])[
        "user_id"
    ]
    capsys.readouterr()
    assert cli_main(["erase-keys", "--subject", user, "--dataset", "kyc_profile", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    ref = report["subject_refs"][0]["subject_ref"]
    assert report["destroyed"][0]["key_versions_destroyed"] >= 1
    assert report["affected_objects"]["kyc_profile"]
    remaining = s3.list_object_versions(Bucket=keys_bucket, Prefix=f"subjects/kyc_profile/{ref}.key")
    assert not remaining.get("Versions") and not remaining.get("DeleteMarkers")
