"""Raw-zone bucket against a real S3/KMS API (moto server): set-up read back, idempotence, refusals, locked puts.

moto treats every bucket-policy condition except StringEquals as true, so on moto the raw-zone
policy denies all object requests. The policy is asserted as a document here; object-level tests
remove it first, which also makes sure a denied delete is Object Lock's doing, not the policy's.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from io_connectors import raw_bucket
from io_connectors.raw_bucket import (
    POLICY_SIDS,
    RETENTION_DAYS,
    check_raw_bucket,
    init_raw_bucket,
    put_immutable,
)


def _new_name() -> str:
    return f"riskpipe-raw-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def raw_uri(aws_env) -> str:
    return f"s3://{_new_name()}/landing"


def test_init_creates_a_locked_encrypted_private_bucket(kms_key, raw_uri):
    result = init_raw_bucket(raw_uri, kms_key)
    bucket = raw_uri[5:].split("/")[0]
    s3 = boto3.client("s3")

    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    assert lock["Rule"]["DefaultRetention"]["Days"] == RETENTION_DAYS
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": kms_key,
    }
    assert rule["BucketKeyEnabled"] is True
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    statements = {s["Sid"]: s for s in json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]}
    assert set(statements) == set(POLICY_SIDS)
    assert all(s["Effect"] == "Deny" and s["Principal"] == "*" for s in statements.values())
    tls = statements["RiskpipeDenyInsecureTransport"]
    assert tls["Action"] == "s3:*"
    assert sorted(tls["Resource"]) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    not_kms = statements["RiskpipeDenyPutWithoutSseKms"]
    assert (not_kms["Action"], not_kms["Resource"]) == ("s3:PutObject", f"arn:aws:s3:::{bucket}/*")
    assert not_kms["Condition"] == {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}
    missing = statements["RiskpipeDenyPutWithoutSseHeader"]
    assert (missing["Action"], missing["Resource"]) == ("s3:PutObject", f"arn:aws:s3:::{bucket}/*")
    assert missing["Condition"] == {"Null": {"s3:x-amz-server-side-encryption": "true"}}

    # the returned summary is what the server reports, in the documented shape
    assert result == {
        "bucket": bucket,
        "prefix": "landing",
        "versioning": "Enabled",
        "object_lock": {"enabled": True, "mode": "COMPLIANCE", "days": RETENTION_DAYS},
        "encryption": {"algorithm": "aws:kms", "kms_key_id": kms_key, "bucket_key_enabled": True},
        "public_access_block": dict.fromkeys(raw_bucket.PUBLIC_ACCESS_FLAGS, True),
        "policy_sids": list(POLICY_SIDS),
    }


def test_init_twice_is_idempotent(kms_key, raw_uri):
    bucket = raw_uri[5:].split("/")[0]
    first = init_raw_bucket(raw_uri, kms_key)
    policy = boto3.client("s3").get_bucket_policy(Bucket=bucket)["Policy"]
    assert init_raw_bucket(raw_uri, kms_key) == first
    assert boto3.client("s3").get_bucket_policy(Bucket=bucket)["Policy"] == policy


def test_init_merges_an_existing_policy_deterministically(kms_key, aws_env):
    bucket = _new_name()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    keep = {
        "Sid": "KeepBucket",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteBucket",
        "Resource": f"arn:aws:s3:::{bucket}",
    }
    stale = {  # an older version of one of ours: replaced, not duplicated
        "Sid": "RiskpipeDenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [stale, keep]})
    )

    result = init_raw_bucket(f"s3://{bucket}", kms_key)

    assert result["policy_sids"] == ["KeepBucket", *POLICY_SIDS]
    statements = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert statements[0] == keep
    assert statements[1]["Action"] == "s3:*"
    assert init_raw_bucket(f"s3://{bucket}", kms_key) == result


def test_init_refuses_a_bucket_created_without_object_lock(kms_key, bucket):
    with pytest.raises(ValueError, match="without S3 Object Lock") as err:
        init_raw_bucket(f"s3://{bucket}/raw", kms_key)
    assert "new bucket" in str(err.value)
    assert "when the bucket is created" in str(err.value)
    # refused before any change
    s3 = boto3.client("s3")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=bucket)


def test_check_lists_every_problem_of_a_plain_bucket(kms_key, bucket):
    problems = check_raw_bucket(f"s3://{bucket}", kms_key)
    text = "\n".join(problems)
    assert "versioning is not enabled" in text
    assert "Object Lock is not enabled" in text
    assert "default encryption is not configured" in text
    assert "S3 Bucket Key is not enabled" in text
    assert "public access block flags not set: BlockPublicAcls, IgnorePublicAcls" in text
    for sid in POLICY_SIDS:
        assert f"lacks the Deny statement {sid}" in text


def test_check_passes_an_initialised_bucket_and_catches_drift(kms_key, raw_uri):
    init_raw_bucket(raw_uri, kms_key)
    assert check_raw_bucket(raw_uri, kms_key) == []
    assert check_raw_bucket(raw_uri) == []

    other_key = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
    assert check_raw_bucket(raw_uri, other_key) == [
        f"default encryption uses KMS key {kms_key!r}, expected {other_key!r}"
    ]
    bucket = raw_uri[5:].split("/")[0]
    boto3.client("s3").put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": True,
        },
    )
    assert check_raw_bucket(raw_uri, kms_key) == ["public access block flags not set: BlockPublicPolicy"]


class _DropsBucketKey:
    """An S3 client whose encryption answer lacks the Bucket Key, as a server ignoring it would."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_bucket_encryption(self, **kwargs):
        answer = self._client.get_bucket_encryption(**kwargs)
        for rule in answer["ServerSideEncryptionConfiguration"]["Rules"]:
            rule["BucketKeyEnabled"] = False
        return answer


def test_init_fails_when_the_server_does_not_report_what_was_applied(kms_key, raw_uri):
    with pytest.raises(RuntimeError, match="S3 Bucket Key is not enabled"):
        init_raw_bucket(raw_uri, kms_key, s3=_DropsBucketKey(boto3.client("s3")))


def test_check_reports_a_missing_bucket(aws_env):
    name = _new_name()
    assert check_raw_bucket(f"s3://{name}") == [
        f"bucket {name!r} does not exist: create it with init_raw_bucket"
    ]


def test_put_immutable_locks_and_encrypts_and_delete_is_denied(kms_key, raw_uri):
    init_raw_bucket(raw_uri, kms_key)
    bucket = raw_uri[5:].split("/")[0]
    s3 = boto3.client("s3")
    s3.delete_bucket_policy(Bucket=bucket)  # see the module docstring: moto would deny every object request

    before = dt.datetime.now(dt.timezone.utc)
    version = put_immutable(
        s3,
        bucket,
        "landing/payment_event/0001.json",
        b'{"id": 1}\n',
        kms_key_id=kms_key,
        metadata={"source": "test"},
    )

    head = s3.head_object(Bucket=bucket, Key="landing/payment_event/0001.json", VersionId=version)
    assert head["VersionId"] == version
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].rsplit("/", 1)[-1] == kms_key
    assert head["BucketKeyEnabled"] is True
    assert head["ObjectLockMode"] == "COMPLIANCE"
    retained = head["ObjectLockRetainUntilDate"] - before
    # S3 keeps the date to the second
    assert (
        dt.timedelta(days=RETENTION_DAYS, seconds=-1)
        <= retained
        < dt.timedelta(days=RETENTION_DAYS, minutes=5)
    )
    assert head["Metadata"] == {"source": "test"}

    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=bucket, Key="landing/payment_event/0001.json", VersionId=version)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as denied:  # COMPLIANCE: no bypass, unlike GOVERNANCE
        s3.delete_object(
            Bucket=bucket,
            Key="landing/payment_event/0001.json",
            VersionId=version,
            BypassGovernanceRetention=True,
        )
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert (
        s3.get_object(Bucket=bucket, Key="landing/payment_event/0001.json")["Body"].read() == b'{"id": 1}\n'
    )


def test_put_immutable_sets_lock_and_encryption_itself_without_bucket_defaults(kms_key, aws_env):
    # Object Lock enabled but no default retention or encryption: what the object carries is what
    # put_immutable asked for (the case of writes the bucket default does not reach, e.g. multipart)
    bucket = _new_name()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    assert "Rule" not in s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]

    version = put_immutable(s3, bucket, "k.json", b"{}", kms_key_id=kms_key)

    head = s3.head_object(Bucket=bucket, Key="k.json", VersionId=version)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].rsplit("/", 1)[-1] == kms_key
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(
        days=RETENTION_DAYS - 1
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=bucket, Key="k.json", VersionId=version)


def test_put_immutable_refuses_bodies_over_the_single_put_limit(aws_env, monkeypatch):
    # the real limit is 5 GiB; a smaller one keeps the test from allocating it
    monkeypatch.setattr(raw_bucket, "MAX_PUT_BYTES", 8)
    with pytest.raises(ValueError, match="at most 5 GiB"):
        put_immutable(boto3.client("s3"), "any-bucket", "k", b"123456789")


@pytest.mark.parametrize("uri", ["raw-bucket", "s3://", "s3://Bad_Name/x", "gs://bucket/x"])
def test_init_rejects_bad_uris(uri):
    with pytest.raises(ValueError, match=r"s3://bucket\[/prefix\]|not a valid S3 bucket name"):
        init_raw_bucket(uri, "alias/raw")


def test_cli_raw_init_then_check(kms_key, capsys):
    import uuid

    from runners.cli import main as cli_main

    uri = f"s3://riskpipe-cli-{uuid.uuid4().hex[:10]}"
    assert cli_main(["raw", "check", uri, "--kms-key-id", kms_key]) == 1
    assert cli_main(["raw", "init", uri, "--kms-key-id", kms_key]) == 0
    assert cli_main(["raw", "check", uri, "--kms-key-id", kms_key]) == 0
    assert "compliant" in capsys.readouterr().out
