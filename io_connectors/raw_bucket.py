"""The raw-zone bucket: set it up so that what lands there cannot be changed, read or leaked.

What: ``init_raw_bucket`` makes an S3 bucket fit for the raw zone (ARCHITECTURE: every record as
received, immutable for 400 days, SSE-KMS) and returns the configuration READ BACK from the server;
``check_raw_bucket`` lists what is wrong with a bucket (preflight: an empty list means compliant);
``put_immutable`` writes one object so that it is locked even where the bucket default would not apply.

Why: the raw zone is the evidence — regulators and dispute handling rely on records nobody could
edit or delete, not even an administrator. S3 Object Lock in COMPLIANCE mode gives that; everything
else here closes the paths around it:

* versioning Enabled (Object Lock needs it; a delete only adds a delete marker);
* default retention COMPLIANCE for ``retention_days`` (400) on every new object version;
* default encryption SSE-KMS with the given key and an S3 Bucket Key (far fewer KMS calls);
* the public access block with all four flags set;
* a bucket policy with three Deny statements (``POLICY_SIDS``): any request without TLS; a
  ``PutObject`` whose ``x-amz-server-side-encryption`` header is not ``aws:kms``; a ``PutObject``
  without that header at all. (IAM already treats ``StringNotEquals`` on a missing key as a match,
  so the ``Null`` statement is belt and braces that says the rule out loud.) Statements with other
  Sids in an existing policy are kept in their order; ours replace any earlier version of
  themselves and always come last, so a second run writes the identical document.

The settings are applied on every run (idempotent) and then read back; ``init_raw_bucket`` fails if
the server does not report what was asked for. The bucket is created with
``ObjectLockEnabledForBucket=True``. An existing bucket without Object Lock is refused with a
``ValueError`` and left untouched: turning Object Lock on afterwards (AWS allows it for versioned
buckets since late 2023) would leave every object already in the bucket unlocked, so the raw zone
always starts in a new bucket. The ``/prefix`` of the URI is informational — all settings and the
policy are bucket-wide.

Clients come from boto3's standard chain: credentials, ``AWS_ENDPOINT_URL``, and the region from
``AWS_REGION`` (botocore itself reads only ``AWS_DEFAULT_REGION``, so it is passed explicitly).

What the local stack (moto 5.2 server) does not enforce, and how the project guards it:

* Multipart uploads do not get the bucket's default retention → ``put_immutable`` sets
  ``ObjectLockMode=COMPLIANCE`` and ``ObjectLockRetainUntilDate`` on every object explicitly and
  refuses bodies above the 5 GiB single-PUT limit instead of switching to multipart.
* Shortening a COMPLIANCE retention (``PutObjectRetention``) is accepted → nothing in riskpipe calls
  it; the guarantee is AWS's, and no test relies on moto for it.
* ``GetObjectRetention`` answers HTTP 500 → lock mode and retain-until date are read with
  ``HeadObject`` instead.
* Content-MD5 is neither required nor verified on Object Lock buckets → ``put_immutable`` always
  sends a correct one (AWS requires it, or an SDK checksum, for puts with Object Lock headers).
* Bucket-policy conditions other than ``StringEquals`` are treated as always true, so on moto the
  Deny statements above refuse EVERY object request (bare HTTP 403) → integration tests assert the
  policy document itself and remove it before object-level tests; its effect is only real on AWS.

Deleting a COMPLIANCE-locked object version IS denied by moto (``AccessDenied``), and the tests
check that.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re

RETENTION_DAYS = 400
# S3's single-PUT limit; anything larger would need multipart, which this module does not do
MAX_PUT_BYTES = 5 * 1024**3
# S3 accepts at most 100 years of default retention
_MAX_RETENTION_DAYS = 36_500

LOCK_MODE = "COMPLIANCE"
SSE_ALGORITHM = "aws:kms"
PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
SID_TLS = "RiskpipeDenyInsecureTransport"
SID_SSE_NOT_KMS = "RiskpipeDenyPutWithoutSseKms"
SID_SSE_MISSING = "RiskpipeDenyPutWithoutSseHeader"
POLICY_SIDS = (SID_TLS, SID_SSE_NOT_KMS, SID_SSE_MISSING)

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# "not configured yet" answers of the Get* calls; any other error is real and propagates
_NOT_CONFIGURED = {
    "ObjectLockConfigurationNotFoundError",
    "ServerSideEncryptionConfigurationNotFoundError",
    "NoSuchPublicAccessBlockConfiguration",
    "NoSuchBucketPolicy",
}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` → ``(bucket, prefix)``; ``ValueError`` naming the bad URI otherwise."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"raw-zone URI must look like s3://bucket[/prefix], got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} in {uri!r} is not a valid S3 bucket name")
    return bucket, prefix.strip("/")


def init_raw_bucket(uri: str, kms_key_id: str, *, retention_days: int = RETENTION_DAYS, s3=None) -> dict:
    """Create (if missing) and configure the raw-zone bucket; return its configuration as read back.

    Idempotent: a second run changes nothing and returns the same dict. Raises ``ValueError`` for
    bad arguments and for an existing bucket without Object Lock (nothing is changed then), and
    ``RuntimeError`` if the server does not report the configuration that was just applied.
    """
    bucket, prefix = parse_s3_uri(uri)
    _validate_key_id(kms_key_id)
    if isinstance(retention_days, bool) or not isinstance(retention_days, int):
        raise ValueError(f"retention_days must be an int, got {retention_days!r}")
    if not 1 <= retention_days <= _MAX_RETENTION_DAYS:
        raise ValueError(f"retention_days must be 1..{_MAX_RETENTION_DAYS}, got {retention_days}")
    s3 = s3 or _s3_client()

    if not _bucket_exists(s3, bucket):
        _create_locked_bucket(s3, bucket)
    lock = _get_config(s3.get_object_lock_configuration, bucket).get("ObjectLockConfiguration", {})
    if lock.get("ObjectLockEnabled") != "Enabled":
        raise ValueError(
            f"bucket {bucket!r} exists without S3 Object Lock. The raw zone needs Object Lock enabled "
            "when the bucket is created (ObjectLockEnabledForBucket=True): enabling it later would "
            "leave the objects already stored unlocked, so riskpipe does not adopt this bucket and "
            "changed nothing. Use a new bucket name for the raw zone."
        )

    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": LOCK_MODE, "Days": retention_days}},
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": SSE_ALGORITHM,
                        "KMSMasterKeyID": kms_key_id,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    # before the policy: with BlockPublicPolicy on, S3 refuses any public statement from now on
    s3.put_public_access_block(
        Bucket=bucket, PublicAccessBlockConfiguration=dict.fromkeys(PUBLIC_ACCESS_FLAGS, True)
    )
    current = _read_policy(s3, bucket)
    merged = merge_policy(current, _required_statements(bucket, _partition(s3)))
    if merged != current:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(merged, sort_keys=True))

    summary, policy = _read_back(s3, bucket, prefix)
    problems = _problems(summary, policy, _partition(s3), kms_key_id, retention_days)
    if problems:
        raise RuntimeError(
            f"bucket {bucket!r} does not report the configuration just applied: " + "; ".join(problems)
        )
    return summary


def check_raw_bucket(
    uri: str, kms_key_id: str | None = None, s3=None, *, retention_days: int = RETENTION_DAYS
) -> list[str]:
    """Human-readable problems with the raw-zone bucket; ``[]`` means compliant (used by preflight).

    ``kms_key_id`` (optional) must then be the bucket's default key: an id and an ARN naming the same
    key match, an alias is compared as written. A default retention other than ``retention_days``
    is a problem either way: shorter breaks the retention promise, longer keeps data past it.
    Credentials that cannot read the configuration yield one problem saying so, not an exception.
    """
    bucket, prefix = parse_s3_uri(uri)
    s3 = s3 or _s3_client()
    from botocore.exceptions import ClientError

    try:
        if not _bucket_exists(s3, bucket):
            return [f"bucket {bucket!r} does not exist: create it with init_raw_bucket"]
        summary, policy = _read_back(s3, bucket, prefix)
    except (ClientError, ValueError) as err:
        return [f"cannot read the configuration of bucket {bucket!r}: {err}"]
    return _problems(summary, policy, _partition(s3), kms_key_id, retention_days)


def put_immutable(s3, bucket: str, key: str, body: bytes, *, kms_key_id=None, metadata=None) -> str:
    """Put one object locked in COMPLIANCE mode for ``RETENTION_DAYS``; return its VersionId.

    The lock and SSE-KMS are requested explicitly on the object rather than left to the bucket
    defaults, so they hold for any write path. ``kms_key_id=None`` uses the bucket's default key.
    Bodies over 5 GiB are refused (``ValueError``): they would need a multipart upload.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be bytes, got {type(body).__name__}")
    if not key:
        raise ValueError("key must be a non-empty object key")
    size = memoryview(body).nbytes
    if size > MAX_PUT_BYTES:
        raise ValueError(
            f"body for s3://{bucket}/{key} is {size} bytes; put_immutable takes at most 5 GiB "
            "(one PUT) — larger objects would need a multipart upload, which it does not do"
        )
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise ValueError(f"metadata must be a dict of str to str, got {metadata!r}")
    if kms_key_id is not None:
        _validate_key_id(kms_key_id)
    body = bytes(body)
    extra = {"SSEKMSKeyId": kms_key_id} if kms_key_id else {}
    if metadata:
        extra["Metadata"] = metadata
    response = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        # required by S3 for puts carrying Object Lock headers; an integrity check, not security
        ContentMD5=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii"),
        ServerSideEncryption=SSE_ALGORITHM,
        BucketKeyEnabled=True,
        ObjectLockMode=LOCK_MODE,
        ObjectLockRetainUntilDate=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=RETENTION_DAYS),
        **extra,
    )
    version = response.get("VersionId")
    if not version:
        raise RuntimeError(f"s3://{bucket}/{key} was stored without a version: the bucket is not versioned")
    return version


def merge_policy(current: dict | None, required: list[dict]) -> dict:
    """``current`` with the ``required`` statements replacing same-Sid ones, appended in order.

    Other statements keep their order and content, so the result depends only on the inputs.
    """
    current = current or {}
    statements = current.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    ours = {statement["Sid"] for statement in required}
    kept = [statement for statement in statements if statement.get("Sid") not in ours]
    merged = {"Version": "2012-10-17", "Statement": kept + list(required)}
    if "Id" in current:
        merged["Id"] = current["Id"]
    return merged


def _required_statements(bucket: str, partition: str = "aws") -> list[dict]:
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    objects_arn = f"{bucket_arn}/*"
    return [
        {
            "Sid": SID_TLS,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, objects_arn],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": SID_SSE_NOT_KMS,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects_arn,
            "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": SSE_ALGORITHM}},
        },
        {
            "Sid": SID_SSE_MISSING,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects_arn,
            "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}},
        },
    ]


def _read_back(s3, bucket: str, prefix: str) -> tuple[dict, dict | None]:
    """The bucket's effective configuration (the summary ``init_raw_bucket`` returns) and its policy."""
    versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    lock = _get_config(s3.get_object_lock_configuration, bucket).get("ObjectLockConfiguration", {})
    retention = lock.get("Rule", {}).get("DefaultRetention", {})
    # S3 takes Days or Years; moto answers Years=0 next to Days. A year is counted as 365 days here.
    days = retention.get("Days") or (retention.get("Years") or 0) * 365 or None
    rules = (
        _get_config(s3.get_bucket_encryption, bucket)
        .get("ServerSideEncryptionConfiguration", {})
        .get("Rules", [])
    )
    rule = rules[0] if rules else {}
    default = rule.get("ApplyServerSideEncryptionByDefault", {})
    block = _get_config(s3.get_public_access_block, bucket).get("PublicAccessBlockConfiguration", {})
    policy = _read_policy(s3, bucket)
    statements = (policy or {}).get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    summary = {
        "bucket": bucket,
        "prefix": prefix,
        "versioning": versioning,
        "object_lock": {
            "enabled": lock.get("ObjectLockEnabled") == "Enabled",
            "mode": retention.get("Mode"),
            "days": days,
        },
        "encryption": {
            "algorithm": default.get("SSEAlgorithm"),
            "kms_key_id": default.get("KMSMasterKeyID"),
            "bucket_key_enabled": bool(rule.get("BucketKeyEnabled", False)),
        },
        "public_access_block": {flag: bool(block.get(flag, False)) for flag in PUBLIC_ACCESS_FLAGS},
        "policy_sids": [statement["Sid"] for statement in statements if statement.get("Sid")],
    }
    return summary, policy


def _problems(
    summary: dict, policy: dict | None, partition: str, kms_key_id: str | None, retention_days: int
) -> list[str]:
    problems = []
    if summary["versioning"] != "Enabled":
        problems.append(f"versioning is {summary['versioning'] or 'not enabled'}, must be Enabled")
    lock = summary["object_lock"]
    if not lock["enabled"]:
        problems.append(
            "Object Lock is not enabled: it must be enabled when the bucket is created, use a new "
            "bucket set up by init_raw_bucket"
        )
    else:
        if lock["mode"] != LOCK_MODE:
            problems.append(f"default retention mode is {lock['mode'] or 'not set'}, must be {LOCK_MODE}")
        if lock["days"] != retention_days:
            problems.append(
                f"default retention is {lock['days'] or 'not set'} days, must be {retention_days}"
            )
    encryption = summary["encryption"]
    if encryption["algorithm"] != SSE_ALGORITHM:
        problems.append(
            f"default encryption is {encryption['algorithm'] or 'not configured'}, must be SSE-KMS ({SSE_ALGORITHM})"
        )
    elif not encryption["kms_key_id"]:
        problems.append("default encryption names no KMS key (it would use the AWS managed aws/s3 key)")
    elif kms_key_id and not _same_key(encryption["kms_key_id"], kms_key_id):
        problems.append(
            f"default encryption uses KMS key {encryption['kms_key_id']!r}, expected {kms_key_id!r}"
        )
    if not encryption["bucket_key_enabled"]:
        problems.append("S3 Bucket Key is not enabled for the default encryption")
    off = [flag for flag, on in summary["public_access_block"].items() if not on]
    if off:
        problems.append("public access block flags not set: " + ", ".join(off))
    statements = (policy or {}).get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    by_sid = {statement.get("Sid"): statement for statement in statements}
    for expected in _required_statements(summary["bucket"], partition):
        found = by_sid.get(expected["Sid"])
        if found is None:
            problems.append(f"bucket policy lacks the Deny statement {expected['Sid']}")
        elif _normalise(found) != _normalise(expected):
            problems.append(f"bucket policy statement {expected['Sid']} differs from the required one")
    return problems


def _normalise(statement: dict) -> dict:
    """Compare statements as IAM does: a single value and a one-element list are the same."""

    def as_set(value):
        return sorted(value) if isinstance(value, list) else [value]

    out = {key: statement.get(key) for key in ("Sid", "Effect")}
    principal = statement.get("Principal")
    out["Principal"] = "*" if principal in ("*", {"AWS": "*"}) else principal
    for key in ("Action", "Resource"):
        out[key] = as_set(statement.get(key))
    out["Condition"] = {
        operator: {name: as_set(value) for name, value in entries.items()}
        for operator, entries in (statement.get("Condition") or {}).items()
    }
    return out


def _same_key(configured: str, wanted: str) -> bool:
    """An id and an ARN (``arn:...:key/<id>``) of the same key match; aliases only as written."""
    return configured.rsplit(":key/", 1)[-1] == wanted.rsplit(":key/", 1)[-1]


def _validate_key_id(kms_key_id) -> None:
    if not isinstance(kms_key_id, str) or not kms_key_id.strip():
        raise ValueError(f"kms_key_id must name a KMS key (id, ARN or alias), got {kms_key_id!r}")


def _bucket_exists(s3, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        if code in ("403", "AccessDenied", "Forbidden"):
            raise ValueError(
                f"bucket {bucket!r} exists but these credentials cannot access it (another account "
                "owns the name, or s3:ListBucket is missing)"
            ) from None
        raise
    return True


def _create_locked_bucket(s3, bucket: str) -> None:
    from botocore.exceptions import ClientError

    region = s3.meta.region_name
    location = (
        {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    try:
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True, **location)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        if code == "BucketAlreadyExists":
            raise ValueError(f"bucket name {bucket!r} is taken by another account: choose another") from None
        if code != "BucketAlreadyOwnedByYou":  # a concurrent init created it: its lock is checked next
            raise


def _get_config(call, bucket: str) -> dict:
    """A bucket Get* answer, or ``{}`` when that configuration was never set."""
    from botocore.exceptions import ClientError

    try:
        return call(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in _NOT_CONFIGURED:
            return {}
        raise


def _read_policy(s3, bucket: str) -> dict | None:
    text = _get_config(s3.get_bucket_policy, bucket).get("Policy")
    return json.loads(text) if text else None


def _partition(s3) -> str:
    region = s3.meta.region_name or ""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _s3_client():
    try:
        import boto3
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError("the raw-zone bucket needs boto3: pip install 'riskpipe[aws]'") from err
    # credentials and AWS_ENDPOINT_URL come from boto3's chain; AWS_REGION is not read by botocore
    return boto3.client("s3", region_name=os.environ.get("AWS_REGION") or None)
