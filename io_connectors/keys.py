"""Key providers: where tokenization and raw-zone data keys come from.

Data keys are 64-byte AES-SIV keys, one family per purpose
(``riskpipe-pii``, ``riskpipe-pci``), each with numbered versions. A key
store document lists, per environment, every version WRAPPED by a KMS key:

    {"env": "prod", "kms_key_id": "alias/riskpipe-tokenization",
     "keys": {"riskpipe-pii": {"current": 2, "versions": {"1": "<b64>", "2": "<b64>"}}}}

The wrapped keys are useless without KMS Decrypt on that key, with the
encryption context ``{riskpipe:env, riskpipe:key, riskpipe:version}`` — so a
nonprod job cannot unwrap prod keys even with a copy of the document, and
tokens never link across environments.

Workers unwrap every version once in ``setup()`` (``resolver()``) and hold the
plain keys in memory only. ``LocalKeyProvider`` keeps unwrapped keys in a local
file for the embedded default and is refused for ``prod``.

Rotation policy (see README "Keys and rotation"): ``rotate`` adds version n+1
and makes it current. New tokens use the current version; a token carries its
version, so old tokens still re-identify. Tokens of the same value under two
versions differ, so joins across a rotation need the curated tables
re-tokenized (the backfill job does this) — rotate on a schedule that matches
the re-tokenization window, not on every deploy.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass

from transforms.deid import StaticKeyResolver

KEY_FAMILIES = ("riskpipe-pii", "riskpipe-pci")
KEY_BYTES = 64


def _context(env: str, name: str, version: int) -> dict[str, str]:
    return {"riskpipe:env": env, "riskpipe:key": name, "riskpipe:version": str(version)}


def _read_document(uri: str, s3_client=None) -> dict:
    if uri.startswith("s3://"):
        bucket, key = uri[5:].split("/", 1)
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return json.loads(body)
    with open(uri, encoding="utf-8") as handle:
        return json.load(handle)


def _write_document(uri: str, doc: dict, s3_client=None, kms_key_id: str | None = None) -> None:
    body = json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")
    if uri.startswith("s3://"):
        bucket, key = uri[5:].split("/", 1)
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
        return
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    fd = os.open(uri, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(body)


def _aws_client(service: str, region: str | None, endpoint_url: str | None):
    from io_connectors.aws import client

    return client(service, region, endpoint_url)


@dataclass(frozen=True)
class LocalKeyProvider:
    """Unwrapped keys in a local 0600 file: the embedded default for dev/nonprod laptops only."""

    path: str
    env: str = "dev"

    def __post_init__(self):
        if self.env == "prod":
            raise ValueError(
                "the local key file provider is refused for --env prod: use the KMS key store "
                "(--key_store s3://... with --kms_key_id)"
            )

    def ensure(self) -> None:
        """Create the key file with fresh random keys if it does not exist (never overwrite)."""
        if os.path.exists(self.path):
            return
        doc = {
            "env": self.env,
            "keys": {
                name: {
                    "current": 1,
                    "versions": {"1": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()},
                }
                for name in KEY_FAMILIES
            },
        }
        _write_document(self.path, doc)

    def resolver(self) -> StaticKeyResolver:
        self.ensure()
        doc = _read_document(self.path)
        if doc.get("env") != self.env:
            raise ValueError(f"key file {self.path} belongs to env {doc.get('env')!r}, not {self.env!r}")
        return _resolver_from(doc, lambda name, version, material: base64.b64decode(material))


@dataclass(frozen=True)
class KmsKeyProvider:
    """Data keys wrapped by AWS KMS in a key store document (S3 or a local path)."""

    store_uri: str
    env: str
    region: str | None = None
    endpoint_url: str | None = None

    def resolver(self) -> StaticKeyResolver:
        s3 = _aws_client("s3", self.region, self.endpoint_url) if self.store_uri.startswith("s3://") else None
        kms = _aws_client("kms", self.region, self.endpoint_url)
        doc = _read_document(self.store_uri, s3)
        if doc.get("env") != self.env:
            raise ValueError(
                f"key store {self.store_uri} belongs to env {doc.get('env')!r}, not {self.env!r}"
            )

        def unwrap(name: str, version: int, material: str) -> bytes:
            response = kms.decrypt(
                CiphertextBlob=base64.b64decode(material),
                EncryptionContext=_context(self.env, name, version),
            )
            return response["Plaintext"]

        return _resolver_from(doc, unwrap)

    def init(self, kms_key_id: str, rotate: bool = False) -> dict:
        """Create the key store (idempotent), or add a new current version to every family (``rotate``)."""
        s3 = _aws_client("s3", self.region, self.endpoint_url) if self.store_uri.startswith("s3://") else None
        kms = _aws_client("kms", self.region, self.endpoint_url)
        try:
            doc = _read_document(self.store_uri, s3)
        except (FileNotFoundError, KeyError):
            doc = None
        except Exception as err:
            if "NoSuchKey" not in str(err):
                raise
            doc = None
        if doc is None:
            doc = {"env": self.env, "kms_key_id": kms_key_id, "keys": {}}
        elif doc.get("env") != self.env:
            raise ValueError(
                f"key store {self.store_uri} belongs to env {doc.get('env')!r}, not {self.env!r}"
            )
        changed = False
        for name in KEY_FAMILIES:
            family = doc["keys"].get(name)
            if family is not None and not rotate:
                continue
            version = 1 if family is None else max(int(v) for v in family["versions"]) + 1
            wrapped = kms.generate_data_key_without_plaintext(
                KeyId=kms_key_id, NumberOfBytes=KEY_BYTES, EncryptionContext=_context(self.env, name, version)
            )["CiphertextBlob"]
            family = family or {"current": version, "versions": {}}
            family["versions"][str(version)] = base64.b64encode(wrapped).decode()
            family["current"] = version
            doc["keys"][name] = family
            changed = True
        if changed:
            _write_document(self.store_uri, doc, s3, kms_key_id)
        return {
            name: {"current": fam["current"], "versions": sorted(fam["versions"])}
            for name, fam in doc["keys"].items()
        }


def _resolver_from(doc: dict, unwrap) -> StaticKeyResolver:
    keys: dict[str, dict[int, bytes]] = {}
    current: dict[str, int] = {}
    for name, family in doc["keys"].items():
        keys[name] = {int(v): unwrap(name, int(v), material) for v, material in family["versions"].items()}
        current[name] = int(family["current"])
    return StaticKeyResolver(keys, current)
