"""Quarantine rows: failed or too-late records, encrypted, with reason and source position.

Payloads hold personal data, so they are encrypted before they are written:
AES-SIV under a sub-key derived (HKDF-SHA256, info ``riskpipe/quarantine``)
from the current ``riskpipe-pii`` data key, with the dataset, source and
position as associated data (a payload cannot be swapped between rows
unnoticed). AES-SIV is deterministic, so replaying the same input writes the
same rows (idempotent sinks), at the cost of revealing that two quarantined
payloads at the same position are equal — which is the point of a replay.
Only the restricted path (``decrypt_payload`` with the key resolver) reads
them back.
"""

from __future__ import annotations

import base64

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transforms.records import business_fields

KEY_FAMILY = "riskpipe-pii"


def _subkey(key: bytes) -> AESSIV:
    derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"riskpipe/quarantine").derive(key)
    return AESSIV(derived)


def _aad(dataset: str, source: str, position: str) -> bytes:
    return f"{dataset}\x1f{source}\x1f{position}".encode()


def decrypt_payload(resolver, dataset: str, row: dict) -> bytes:
    """The restricted read path: the original payload of a quarantine row."""
    key = resolver.version(KEY_FAMILY, int(row["key_version"]))
    blob = base64.b64decode(row["payload_encrypted"])
    return _subkey(key).decrypt(blob, [_aad(dataset, row["source"], row["position"])])


class _EncryptQuarantineFn(beam.DoFn):
    def __init__(self, key_provider):
        self._key_provider = key_provider

    def setup(self):
        version, key = self._key_provider.resolver().current(KEY_FAMILY)
        self._version = version
        self._cipher = _subkey(key)

    def process(self, element):
        dataset, kind, item = element
        if kind == "too_late":
            payload = orjson.dumps(business_fields(item), option=orjson.OPT_SORT_KEYS)
            row = {
                "source": item.get("_source", ""),
                "position": item.get("_position", ""),
                "reason": "too_late",
                "schema_version": item.get("schema_version"),
                "ingested_at": item.get("ingested_at"),
            }
        else:
            payload = item["payload"]
            row = {k: item.get(k) for k in ("source", "position", "reason", "schema_version", "ingested_at")}
        blob = self._cipher.encrypt(payload, [_aad(dataset, row["source"], row["position"])])
        row["payload_encrypted"] = base64.b64encode(blob).decode("ascii")
        row["key_version"] = self._version
        Metrics.counter("riskpipe.quarantine", f"{dataset}.{row['reason'].split(':', 1)[0]}").inc()
        yield f"quarantine.{dataset}", row


class EncryptQuarantine(beam.PTransform):
    """``(dataset, "quarantine"|"too_late", item)`` → ``("quarantine.<dataset>", encrypted row)``."""

    def __init__(self, key_provider):
        super().__init__()
        self._key_provider = key_provider

    def expand(self, pcoll):
        return pcoll | "Encrypt" >> beam.ParDo(_EncryptQuarantineFn(self._key_provider))
