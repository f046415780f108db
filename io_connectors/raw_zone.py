"""The raw zone: every record as received, immutable, replayable, crypto-shreddable.

Layout (the same on a local directory and on S3)::

    RAW/<dataset>/dt=YYYY-MM-DD/hour=HH/<source>.avro      landed records (Avro container files)
    RAW/_quarantine/<dataset>/dt=…/hour=…/<source>.avro     records that could not be attributed
    KEYS/<dataset>/<subject_ref>.key                        per-subject data keys (wrapped)
    KEYS/<dataset>/<subject_ref>.erased                     tombstones of erased subjects

Each landed record keeps its source coordinates (source, position, ingest time,
schema version), its event time, a ``clear`` JSON of the fields the policy
marks ``raw: keep`` (readable for investigations; a map of JSON-encoded values) and ``sealed``: the ORIGINAL
payload bytes encrypted with AES-SIV under the data key of the record's data
subject (policy ``subject``: card fingerprint, charge id, KYC user id), with
the dataset, source and position as associated data. Replays decrypt
``sealed`` and feed the exact original bytes through the same graph.

Crypto-shredding: erasing a subject deletes its key (every version of the key
object) and leaves a tombstone. Its raw payloads stay in place — the raw zone
is immutable under Object Lock — but can no longer be decrypted, and landing
the same subject again is refused by the tombstone (its records go to the
restricted quarantine prefix instead of creating a fresh key). Subject keys are
wrapped with a key-encryption key derived from the KMS-protected
``riskpipe-pii`` family, so the key store itself holds no usable key material.
The key store must NOT live in the Object Lock bucket (locked keys could not
be shredded).

Determinism: AES-SIV is deterministic, object names derive from the source
(file name or topic-partition-offset range) and the event-time hour, file
sources use the file's modification time as ingest time, and Avro files use a
sync marker derived from the object name — so re-landing the same input
writes byte-identical objects. Writing different bytes over an existing
object is refused and counted (``riskpipe.raw/<dataset>.conflicts``), never
silent.

Limits (also in the README): shredding does not reach copies outside this
system — Kafka topic retention (keep it ≤ 7 days), S3 backups/replicas made
outside riskpipe, or data already exported; the clear part remains by design
(non-personal fields only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import re
from dataclasses import dataclass

import apache_beam as beam
import fastavro
import orjson
from apache_beam.metrics import Metrics
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import dlp_configs
from transforms.records import EVENT_TIME_FIELD, SourceRecord
from transforms.timeutil import format_micros, now_micros, parse_rfc3339_micros

KEK_FAMILY = "riskpipe-pii"
QUARANTINE_PREFIX = "_quarantine"

RAW_SCHEMA = {
    "type": "record",
    "name": "RawRecord",
    "namespace": "riskpipe.raw",
    "doc": "One source record as received: coordinates, clear non-personal fields, sealed original payload.",
    "fields": [
        {"name": "dataset", "type": "string"},
        {"name": "source", "type": "string"},
        {"name": "position", "type": "string"},
        {"name": "ingested_at", "type": "string"},
        {"name": "schema_version", "type": ["null", "long"], "default": None},
        {"name": "fmt", "type": "string", "doc": "json | avro (schemaless, writer = schema_version)"},
        {"name": "event_time", "type": ["null", "string"], "default": None},
        {"name": "subject_ref", "type": ["null", "string"], "default": None},
        {
            "name": "clear",
            "type": {"type": "map", "values": "string"},
            "doc": "fields classified raw: keep, each value JSON-encoded as received",
        },
        {"name": "sealed", "type": "bytes", "doc": "AES-SIV(subject key | quarantine key, original payload)"},
    ],
}


def _derive(key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=f"riskpipe/{purpose}".encode()).derive(
        key
    )


def _aad(dataset: str, source: str, position: str) -> bytes:
    return f"{dataset}\x1f{source}\x1f{position}".encode()


# --- object stores -----------------------------------------------------------------


class LocalStore:
    """A directory standing in for a bucket (embedded default)."""

    def __init__(self, root: str):
        self.root = root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def get(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def put_if_absent(self, key: str, body: bytes) -> str:
        """``written`` / ``unchanged`` (same bytes already there) / ``conflict`` (different bytes: refused)."""
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return "unchanged" if self.get(key) == body else "conflict"
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        return "written"

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        out = []
        for folder, _, files in os.walk(base):
            for name in files:
                full = os.path.join(folder, name)
                out.append(os.path.relpath(full, self.root).replace(os.sep, "/"))
        return sorted(out)

    def delete(self, key: str) -> int:
        try:
            os.remove(self._path(key))
            return 1
        except FileNotFoundError:
            return 0


class S3Store:
    """A bucket prefix; writes carry SSE-KMS, Content-MD5 and a sha256 to compare replays."""

    def __init__(self, uri: str, kms_key_id: str | None = None, immutable: bool = False):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.bucket, self.prefix, self.kms_key_id = bucket, prefix.strip("/"), kms_key_id
        self.immutable = immutable
        from io_connectors.aws import client

        self._s3 = client("s3")  # standard chain: AWS_REGION, AWS_ENDPOINT_URL, IRSA …

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes | None:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            return None

    def put_if_absent(self, key: str, body: bytes) -> str:
        digest = hashlib.sha256(body).hexdigest()
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as err:
            if "404" not in str(err) and "Not Found" not in str(err):
                raise
            head = None
        if head is not None:
            return "unchanged" if head.get("Metadata", {}).get("sha256") == digest else "conflict"
        if self.immutable:
            # raw objects: COMPLIANCE lock + SSE-KMS requested on the object itself (raw_bucket.put_immutable)
            from io_connectors.raw_bucket import put_immutable

            put_immutable(
                self._s3,
                self.bucket,
                self._key(key),
                body,
                kms_key_id=self.kms_key_id,
                metadata={"sha256": digest},
            )
            return "written"
        extra = {"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": True}
        if self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        self._s3.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=body,
            ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),  # noqa: S324 - required by Object Lock
            Metadata={"sha256": digest},
            **extra,
        )
        return "written"

    def list(self, prefix: str) -> list[str]:
        out = []
        paginator = self._s3.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            out.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(out)

    def delete(self, key: str) -> int:
        """Delete every version (a versioned key store must not keep old copies of a shredded key)."""
        deleted = 0
        versions = self._s3.list_object_versions(Bucket=self.bucket, Prefix=self._key(key))
        for item in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            if item["Key"] == self._key(key):
                self._s3.delete_object(Bucket=self.bucket, Key=item["Key"], VersionId=item["VersionId"])
                deleted += 1
        return deleted


def open_store(uri: str, kms_key_id: str | None = None, immutable: bool = False):
    return S3Store(uri, kms_key_id, immutable) if uri.startswith("s3://") else LocalStore(uri)


# --- per-subject keys ------------------------------------------------------------


class SubjectErased(Exception):
    """The subject was erased: no key may be created for it again."""


class SubjectKeys:
    """Per-subject data keys, wrapped by a KEK derived from the KMS-protected key family."""

    def __init__(self, keys_uri: str, resolver):
        self._store = open_store(keys_uri)
        version, kek = resolver.current(KEK_FAMILY)
        self._kek_version = version
        self._wrap = AESSIV(_derive(kek, "raw-kek"))
        self._resolver = resolver
        # refs must stay stable across KEK rotations: derived from the family's first version
        self._ref_key = _derive(resolver.version(KEK_FAMILY, 1), "raw-subject-ref")
        self._cache: dict[str, bytes] = {}

    def ref(self, dataset: str, subject: str) -> str:
        """A pseudonymous handle for a subject (no raw id in object names or key files)."""
        return hmac.new(self._ref_key, f"{dataset}\x1f{subject}".encode(), hashlib.sha256).hexdigest()[:32]

    def _path(self, dataset: str, ref: str, suffix: str) -> str:
        return f"{dataset}/{ref}.{suffix}"

    def key_for(self, dataset: str, subject: str, create: bool = True) -> tuple[str, bytes | None]:
        ref = self.ref(dataset, subject)
        cached = self._cache.get(ref)
        if cached is not None:
            return ref, cached
        body = self._store.get(self._path(dataset, ref, "key"))
        if body is None:
            if self._store.get(self._path(dataset, ref, "erased")) is not None:
                raise SubjectErased(ref)
            if not create:
                return ref, None
            key = os.urandom(64)
            wrapped = self._wrap.encrypt(key, [ref.encode()])
            doc = json.dumps(
                {"kek_version": self._kek_version, "wrapped": base64.b64encode(wrapped).decode()}
            )
            if self._store.put_if_absent(self._path(dataset, ref, "key"), doc.encode()) == "conflict":
                body = self._store.get(self._path(dataset, ref, "key"))  # another worker won the race
            else:
                self._cache[ref] = key
                return ref, key
        doc = json.loads(body)
        wrap = self._wrap
        if doc["kek_version"] != self._kek_version:
            wrap = AESSIV(_derive(self._resolver.version(KEK_FAMILY, doc["kek_version"]), "raw-kek"))
        key = wrap.decrypt(base64.b64decode(doc["wrapped"]), [ref.encode()])
        self._cache[ref] = key
        return ref, key

    def key_by_ref(self, dataset: str, ref: str) -> bytes | None:
        body = self._store.get(self._path(dataset, ref, "key"))
        if body is None:
            return None
        doc = json.loads(body)
        kek = self._resolver.version(KEK_FAMILY, doc["kek_version"])
        return AESSIV(_derive(kek, "raw-kek")).decrypt(base64.b64decode(doc["wrapped"]), [ref.encode()])

    def erase(self, dataset: str, subject: str) -> dict:
        ref = self.ref(dataset, subject)
        destroyed = self._store.delete(self._path(dataset, ref, "key"))
        erased_at = format_micros(now_micros())
        self._store.put_if_absent(
            self._path(dataset, ref, "erased"), json.dumps({"erased_at": erased_at}).encode()
        )
        self._cache.pop(ref, None)
        return {
            "dataset": dataset,
            "subject_ref": ref,
            "key_versions_destroyed": destroyed,
            "erased_at": erased_at,
        }


# --- landing ------------------------------------------------------------------------


def _subject_and_event(dataset: str, record: SourceRecord, subject_field: str):
    """(parsed object, subject id, event micros) — any of them None if the payload does not say."""
    payload = record.payload
    try:
        obj = payload if isinstance(payload, dict) else orjson.loads(payload)
    except Exception:  # noqa: BLE001 - not JSON: it lands in the restricted quarantine prefix
        return None, None, None
    if not isinstance(obj, dict):
        return None, None, None
    subject = obj.get(subject_field)
    try:
        event_us = parse_rfc3339_micros(obj[EVENT_TIME_FIELD[dataset]])
    except Exception:  # noqa: BLE001 - missing/invalid event time: partition by ingest time
        event_us = None
    return obj, subject if isinstance(subject, str) and subject else None, event_us


def _partition(micros: int) -> str:
    text = format_micros(micros)
    return f"dt={text[:10]}/hour={text[11:13]}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def object_key(dataset: str, partition: str, source: str, quarantine: bool, position: str = "") -> str:
    kind, _, name = source.partition(":")
    if kind == "file":
        stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]  # part-00003.jsonl → part-00003
    elif kind == "kafka":
        stem = f"{name}-p{position.split(':', 1)[0]}"  # one object per topic-partition and hour
    else:
        stem = name or kind
    stem = _UNSAFE.sub("_", stem) or "source"
    prefix = f"{QUARANTINE_PREFIX}/{dataset}" if quarantine else dataset
    return f"{prefix}/{partition}/{stem}.avro"


def avro_bytes(object_name: str, records: list[dict]) -> bytes:
    buf = io.BytesIO()
    marker = hashlib.sha256(object_name.encode()).digest()[:16]
    fastavro.writer(buf, RAW_SCHEMA, records, codec="deflate", sync_marker=marker)
    return buf.getvalue()


@dataclass(frozen=True)
class RawZoneSettings:
    """Picklable: where raw objects and subject keys live, and which key provider wraps them."""

    raw_uri: str
    keys_uri: str
    key_provider: object
    kms_key_id: str | None = None


class _SealFn(beam.DoFn):
    """SourceRecord → ((object key), raw record) with the payload sealed under its subject's key."""

    def __init__(self, dataset: str, settings: RawZoneSettings):
        self._dataset = dataset
        self._settings = settings

    def setup(self):
        policy = dlp_configs.load_policy().dataset(self._dataset)
        self._subject_field = policy.subject
        self._keep = sorted({p.split(".", 1)[0] for p, f in policy.fields.items() if f.raw == "keep"})
        resolver = self._settings.key_provider.resolver()
        self._keys = SubjectKeys(self._settings.keys_uri, resolver)
        _, pii = resolver.current(KEK_FAMILY)
        self._quarantine_cipher = AESSIV(_derive(pii, "raw-quarantine"))
        self._erased = Metrics.counter("riskpipe.raw", f"{self._dataset}.erased_subject_refused")

    def process(self, record: SourceRecord):
        dataset = self._dataset
        obj, subject, event_us = _subject_and_event(dataset, record, self._subject_field)
        payload = record.payload if isinstance(record.payload, bytes) else orjson.dumps(record.payload)
        aad = [_aad(dataset, record.source, record.position)]
        ref, key = None, None
        if subject is not None:
            try:
                ref, key = self._keys.key_for(dataset, subject)
            except SubjectErased:
                self._erased.inc()
        quarantine = key is None
        sealed = (self._quarantine_cipher if quarantine else AESSIV(key)).encrypt(payload, aad)
        clear = {k: obj[k] for k in self._keep if obj is not None and k in obj} if not quarantine else {}
        ingested_us = parse_rfc3339_micros(record.ingested_at) if record.ingested_at else now_micros()
        raw = {
            "dataset": dataset,
            "source": record.source,
            "position": record.position,
            "ingested_at": record.ingested_at or format_micros(ingested_us),
            "schema_version": record.schema_version,
            "fmt": record.fmt if isinstance(record.payload, bytes) else "json",
            "event_time": format_micros(event_us) if event_us is not None else None,
            "subject_ref": ref,
            "clear": {k: orjson.dumps(v).decode() for k, v in sorted(clear.items())},
            "sealed": sealed,
        }
        partition = _partition(event_us if event_us is not None and not quarantine else ingested_us)
        yield object_key(dataset, partition, record.source, quarantine, record.position), raw


class _WriteObjectFn(beam.DoFn):
    def __init__(self, settings: RawZoneSettings):
        self._settings = settings

    def setup(self):
        self._store = open_store(self._settings.raw_uri, self._settings.kms_key_id, immutable=True)

    def process(self, element):
        name, records = element
        dataset = name.split("/", 2)[1] if name.startswith(QUARANTINE_PREFIX) else name.split("/", 1)[0]

        def order(r):
            return (int(r["position"]) if r["position"].isdigit() else 0, r["position"])

        body = avro_bytes(name, sorted(records, key=order))
        outcome = self._store.put_if_absent(name, body)
        Metrics.counter("riskpipe.raw", f"{dataset}.objects_{outcome}").inc()
        Metrics.counter("riskpipe.raw", f"{dataset}.records_landed").inc(len(records))
        if outcome == "conflict":
            # an immutable object with different content: refuse loudly, never overwrite
            Metrics.counter("riskpipe.raw", f"{dataset}.conflicts").inc()
            import logging

            logging.getLogger(__name__).error(
                "raw object %s exists with different content: not overwritten", name
            )
        yield name, outcome


class _WriteBundleObjectsFn(_WriteObjectFn):
    """Stream: one object per (source, hour) per bundle, named by its first position (nothing waits, nothing is dropped)."""

    def start_bundle(self):
        self._groups: dict[str, list[dict]] = {}

    def process(self, element):
        name, raw = element
        self._groups.setdefault(name, []).append(raw)

    def finish_bundle(self):
        for name, records in self._groups.items():
            first = min(records, key=lambda r: (len(r["position"]), r["position"]))["position"]
            suffix = _UNSAFE.sub("_", first.rsplit(":", 1)[-1])  # a Kafka position's offset; a file's line
            list(_WriteObjectFn.process(self, (name.replace(".avro", f"-{suffix}.avro"), records)))
        self._groups = {}


class LandRaw(beam.PTransform):
    """SourceRecords of one dataset → raw zone objects.

    Bounded input: one object per (source, event hour) — re-landing the same input
    writes byte-identical objects. Unbounded input: one object per (source, hour) per
    bundle, named by its first position, so nothing waits for a window and nothing is
    dropped as late.
    """

    def __init__(self, dataset: str, settings: RawZoneSettings):
        super().__init__()
        self._dataset = dataset
        self._settings = settings

    def expand(self, records):
        sealed = records | "Seal" >> beam.ParDo(_SealFn(self._dataset, self._settings))
        if not records.is_bounded:
            return sealed | "WriteObjects" >> beam.ParDo(_WriteBundleObjectsFn(self._settings))
        return (
            sealed
            | "GroupPerObject" >> beam.GroupByKey()
            | "WriteObjects" >> beam.ParDo(_WriteObjectFn(self._settings))
        )


# --- reading back -------------------------------------------------------------------


class _ReadRawFn(beam.DoFn):
    def __init__(self, dataset: str, settings: RawZoneSettings, start_us: int | None, end_us: int | None):
        self._dataset, self._settings = dataset, settings
        self._start, self._end = start_us, end_us

    def setup(self):
        self._store = open_store(self._settings.raw_uri, self._settings.kms_key_id)
        self._keys = SubjectKeys(self._settings.keys_uri, self._settings.key_provider.resolver())
        self._shredded = Metrics.counter("riskpipe.raw", f"{self._dataset}.shredded_skipped")
        self._read = Metrics.counter("riskpipe.raw", f"{self._dataset}.records_replayed")

    def process(self, name):
        body = self._store.get(name)
        if body is None:
            return
        for raw in fastavro.reader(io.BytesIO(body)):
            if raw["event_time"] is not None and self._start is not None:
                event_us = parse_rfc3339_micros(raw["event_time"])
                if not self._start <= event_us < self._end:
                    continue
            key = self._keys.key_by_ref(self._dataset, raw["subject_ref"]) if raw["subject_ref"] else None
            if key is None:
                self._shredded.inc()
                continue
            try:
                payload = AESSIV(key).decrypt(
                    raw["sealed"], [_aad(self._dataset, raw["source"], raw["position"])]
                )
            except InvalidTag:
                self._shredded.inc()
                continue
            self._read.inc()
            yield SourceRecord(
                payload, raw["source"], raw["position"], raw["schema_version"], raw["ingested_at"], raw["fmt"]
            )


def raw_partitions(store, dataset: str, start_us: int | None, end_us: int | None) -> list[str]:
    names = [n for n in store.list(f"{dataset}/") if n.endswith(".avro")]
    if start_us is None:
        return names
    lo, hi = _partition(start_us - 3600 * 1_000_000), _partition(end_us)
    return [n for n in names if lo <= n[len(dataset) + 1 : len(dataset) + 1 + len(lo)] <= hi]


class ReadRawZone(beam.PTransform):
    """Raw objects of one dataset in an event-time range → the original SourceRecords (decrypted)."""

    def __init__(self, dataset: str, settings: RawZoneSettings, start_us=None, end_us=None):
        super().__init__()
        self._dataset, self._settings, self._start, self._end = dataset, settings, start_us, end_us

    def expand(self, pbegin):
        dataset, settings, start, end = self._dataset, self._settings, self._start, self._end

        def list_objects(_):
            return raw_partitions(open_store(settings.raw_uri, settings.kms_key_id), dataset, start, end)

        return (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "ListObjects" >> beam.FlatMap(list_objects)
            | "Spread" >> beam.Reshuffle()
            | "ReadObjects" >> beam.ParDo(_ReadRawFn(dataset, settings, start, end))
        )


def affected_objects(raw_uri: str, dataset: str, subject_ref: str) -> list[str]:
    """Raw objects holding records of a subject (for the erasure report)."""
    store = open_store(raw_uri)
    hits = []
    for name in store.list(f"{dataset}/"):
        if name.endswith(".avro") and any(
            r["subject_ref"] == subject_ref for r in fastavro.reader(io.BytesIO(store.get(name)))
        ):
            hits.append(name)
    return hits
