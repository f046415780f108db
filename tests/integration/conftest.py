"""Integration tier: real local services started by ``riskpipe stack up`` (``make test`` does it).

A missing service is a failure that says how to start it — never a skip.
Tests talk to the services through the standard AWS environment
(``AWS_ENDPOINT_URL``, ``AWS_REGION``), exactly as the CLI would against AWS.
"""

from __future__ import annotations

import secrets
import uuid

import boto3
import pytest

from runners import stack


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def moto_url() -> str:
    info = stack._read_endpoints().get("moto")
    if not info or not stack._moto_healthy(info["url"]):
        pytest.fail(
            "moto (S3/KMS/STS) is not running: start the local stack with `make stack-up`", pytrace=False
        )
    return info["url"]


@pytest.fixture
def aws_env(moto_url, monkeypatch):
    # moto accepts any credentials; these are generated per test, never real
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test" + secrets.token_hex(8))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secrets.token_hex(20))
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture
def kms_key(aws_env) -> str:
    kms = boto3.client("kms")
    return kms.create_key(Description=f"riskpipe test {uuid.uuid4()}")["KeyMetadata"]["KeyId"]


@pytest.fixture
def bucket(aws_env) -> str:
    name = f"riskpipe-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
