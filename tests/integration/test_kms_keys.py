"""KMS-wrapped key store against a real KMS/S3 API (moto server): init, unwrap, rotate, env separation."""

from __future__ import annotations

import json

import boto3
import pytest

import dlp_configs
from io_connectors.keys import KmsKeyProvider
from transforms.deid import LocalDeidEngine

TEMPLATE = dlp_configs.load_templates()["payment_event"]


def _token(provider, value="cf_card_1"):
    engine = LocalDeidEngine(TEMPLATE, provider.resolver())
    return engine.deidentify([{"card_token": value}])[0]["card_token"]


def test_key_store_on_s3_holds_only_wrapped_keys(kms_key, bucket):
    store = f"s3://{bucket}/keys/prod.json"
    provider = KmsKeyProvider(store, env="prod")
    summary = provider.init(kms_key)
    assert summary == {
        "riskpipe-pii": {"current": 1, "versions": ["1"]},
        "riskpipe-pci": {"current": 1, "versions": ["1"]},
    }
    obj = boto3.client("s3").get_object(Bucket=bucket, Key="keys/prod.json")
    assert obj["ServerSideEncryption"] == "aws:kms"
    doc = json.loads(obj["Body"].read())
    resolver = provider.resolver()
    _, plain = resolver.current("riskpipe-pci")
    assert len(plain) == 64
    assert plain.hex() not in json.dumps(doc)
    # idempotent: a second init changes nothing
    assert provider.init(kms_key) == summary
    assert provider.resolver().current("riskpipe-pci") == resolver.current("riskpipe-pci")


def test_tokens_are_deterministic_and_rotation_keeps_old_tokens_readable(kms_key, bucket):
    provider = KmsKeyProvider(f"s3://{bucket}/keys/prod.json", env="prod")
    provider.init(kms_key)
    before = _token(provider)
    assert before == _token(provider)  # same key, same token (joinable)
    assert before.startswith("CARD(") and ":1." in before
    provider.init(kms_key, rotate=True)
    after = _token(provider)
    assert ":2." in after and after != before
    engine = LocalDeidEngine(TEMPLATE, provider.resolver())
    # an old token re-identifies with the version it carries
    assert engine.reidentify_value("card_token", before) == "cf_card_1"
    assert engine.reidentify_value("card_token", after) == "cf_card_1"


def test_environments_never_share_keys_or_tokens(kms_key, bucket):
    prod = KmsKeyProvider(f"s3://{bucket}/keys/prod.json", env="prod")
    nonprod = KmsKeyProvider(f"s3://{bucket}/keys/nonprod.json", env="nonprod")
    prod.init(kms_key)
    nonprod.init(kms_key)
    assert _token(prod) != _token(nonprod)
    # a nonprod job pointed at the prod store is refused by name...
    with pytest.raises(ValueError, match="belongs to env 'prod'"):
        KmsKeyProvider(f"s3://{bucket}/keys/prod.json", env="nonprod").resolver()
    # ...and a doctored copy that claims to be nonprod cannot be unwrapped: the env is bound in the KMS context
    s3 = boto3.client("s3")
    doc = json.loads(s3.get_object(Bucket=bucket, Key="keys/prod.json")["Body"].read())
    doc["env"] = "nonprod"
    s3.put_object(Bucket=bucket, Key="keys/stolen.json", Body=json.dumps(doc).encode())
    with pytest.raises(Exception, match=r"InvalidCiphertext|AccessDenied|context"):
        KmsKeyProvider(f"s3://{bucket}/keys/stolen.json", env="nonprod").resolver()
