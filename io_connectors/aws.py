"""boto3 clients from the standard AWS environment, the same way everywhere in riskpipe.

Credentials come from the default chain (environment, IRSA, instance profile);
the region from ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (botocore itself only
reads the latter); the endpoint from ``AWS_ENDPOINT_URL`` (botocore reads it),
so the same commands run against AWS or a local S3/KMS-compatible server.
"""

from __future__ import annotations

import os


def client(service: str, region: str | None = None, endpoint_url: str | None = None):
    try:
        import boto3
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError(f"the {service} connector needs boto3: pip install 'riskpipe[aws]'") from err
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url)
