"""Tests for runners.synthetic: the generator must be deterministic and produce exactly the
input contract (ARCHITECTURE.md section 3), including every awkward case it promises.

The checks here re-derive everything from the written bytes with an independent
validator (`_classify`) instead of trusting the generator's own labels, so a
bug in the generator cannot hide behind its own bookkeeping.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import fastavro.validation
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runners.synthetic import (
    DATASETS,
    MALFORMED_KINDS,
    MANIFEST,
    GenerationReport,
    GeneratorRates,
    SyntheticMessage,
    generate,
    iter_messages,
)
from schemas import load_schema, raw_schema

START = datetime(2026, 11, 2, tzinfo=timezone.utc)
EVENTS = 3000
SEED = 11
RECORDS_PER_FILE = 700
KEY_FIELD = {"payment_event": "event_id", "chargeback": "charge_id", "kyc_profile": "user_id"}
TIME_FIELD = {"payment_event": "created_at", "chargeback": "received_at", "kyc_profile": "updated_at"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


# --------------------------------------------------------------------------- independent validator


def _parse_ts(text: str) -> datetime | None:
    """Strict RFC 3339 (offset required); None when invalid."""
    if not isinstance(text, str) or not RFC3339.match(text):
        return None
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _conforms(value: Any, avro_type: Any) -> bool:
    if isinstance(avro_type, list):
        return any(_conforms(value, branch) for branch in avro_type)
    if isinstance(avro_type, dict):
        if avro_type["type"] == "record":
            return isinstance(value, dict) and not _field_errors(value, avro_type["fields"], allow=())
        return _conforms(value, avro_type["type"])
    if avro_type == "null":
        return value is None
    if avro_type == "string":
        return isinstance(value, str)
    if avro_type in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    raise AssertionError(f"test validator does not know Avro type {avro_type!r}")


def _field_errors(record: dict[str, Any], fields: list[dict[str, Any]], allow: tuple[str, ...]) -> list[str]:
    errors = []
    for f in fields:
        if f["name"] not in record:
            if "default" not in f:
                errors.append(f"missing:{f['name']}")
        elif not _conforms(record[f["name"]], f["type"]):
            errors.append(f"type:{f['name']}")
    known = {f["name"] for f in fields} | set(allow)
    errors += [f"extra:{name}" for name in record if name not in known]
    return errors


def _classify(payload: bytes, dataset: str, version: int, allow: tuple[str, ...] = ()) -> str | None:
    """What a strict parser would quarantine this payload for; None when it is valid."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        obj = json.loads(text)
    except ValueError:
        return "invalid_json"
    if not isinstance(obj, dict):
        return "not_an_object"
    errors = _field_errors(obj, raw_schema(dataset, version)["fields"], allow)
    if any(e.startswith("missing:") for e in errors):
        return "missing_field"
    if any(e.startswith("type:") for e in errors):
        return "bad_type"
    if errors:
        return "extra_field"  # never expected: the generator only adds the unclassified field
    if _parse_ts(obj[TIME_FIELD[dataset]]) is None:
        return "bad_timestamp"
    return None


def _allowed_extra(msg: SyntheticMessage, unclassified: str = "wallet_type") -> tuple[str, ...]:
    return (unclassified,) if msg.dataset == "payment_event" and msg.schema_version == 3 else ()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def messages() -> list[SyntheticMessage]:
    return list(iter_messages(EVENTS, seed=SEED))


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationReport]:
    root = tmp_path_factory.mktemp("jsonl") / "out"
    return root, generate(str(root), EVENTS, seed=SEED, records_per_file=RECORDS_PER_FILE)


def _by_dataset(messages: list[SyntheticMessage]) -> dict[str, list[SyntheticMessage]]:
    grouped: dict[str, list[SyntheticMessage]] = {name: [] for name in DATASETS}
    for msg in messages:
        grouped[msg.dataset].append(msg)
    return grouped


def _json(msg: SyntheticMessage) -> dict[str, Any]:
    return json.loads(msg.payload)


def _good(messages: list[SyntheticMessage], dataset: str) -> list[SyntheticMessage]:
    return [m for m in messages if m.dataset == dataset and not m.kind.startswith("malformed:")]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- determinism and files


def test_same_seed_gives_byte_identical_output_and_other_seed_differs(tmp_path: Path) -> None:
    first = generate(str(tmp_path / "a"), 1200, seed=3, records_per_file=500)
    generate(str(tmp_path / "b"), 1200, seed=3, records_per_file=500)
    generate(str(tmp_path / "c"), 1200, seed=4, records_per_file=500)
    a, b, c = (_tree(tmp_path / name) for name in "abc")
    assert a == b
    assert set(a) == {MANIFEST, *(p for paths in first.files.values() for p in paths)}
    assert [p for p in a if p != MANIFEST and a[p] == c.get(p)] == []
    assert list(iter_messages(300, seed=5)) == list(iter_messages(300, seed=5))


def test_output_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    # Sets and fastavro's schema parsing iterate in hash order; none of that may reach the bytes.
    script = (
        "import sys; from runners.synthetic import generate; "
        "generate(sys.argv[1], 400, seed=9, fmt=sys.argv[2], records_per_file=150)"
    )
    repo = Path(__file__).resolve().parents[2]
    for fmt in ("jsonl", "avro"):
        for hash_seed in ("1", "2"):
            env = {**os.environ, "PYTHONHASHSEED": hash_seed}
            out = str(tmp_path / f"{fmt}-{hash_seed}")
            subprocess.run([sys.executable, "-c", script, out, fmt], cwd=repo, env=env, check=True)
        assert _tree(tmp_path / f"{fmt}-1") == _tree(tmp_path / f"{fmt}-2")


def test_files_hold_the_messages_in_arrival_order(
    jsonl_run: tuple[Path, GenerationReport], messages: list[SyntheticMessage]
) -> None:
    root, report = jsonl_run
    arrivals = [m.arrival_time for m in messages]
    assert arrivals == sorted(arrivals)
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in arrivals)
    for dataset, stream in _by_dataset(messages).items():
        paths = report.files[dataset]
        assert paths == [f"{dataset}/part-{i:05d}.jsonl" for i in range(len(paths))]
        lines: list[bytes] = []
        for rel in paths:
            chunk = (root / rel).read_bytes().split(b"\n")
            assert chunk[-1] == b""  # every record ends with a newline, none contains one
            assert 0 < len(chunk) - 1 <= RECORDS_PER_FILE
            lines += chunk[:-1]
        assert lines == [m.payload for m in stream]


def test_report_counts_match_what_is_in_the_files(
    jsonl_run: tuple[Path, GenerationReport], messages: list[SyntheticMessage]
) -> None:
    root, report = jsonl_run
    assert (root / MANIFEST).read_text(encoding="utf-8") == report.to_json()
    assert GenerationReport.load(root).to_json() == report.to_json()
    for dataset, stream in _by_dataset(messages).items():
        lines = [line for rel in report.files[dataset] for line in (root / rel).read_bytes().splitlines()]
        seen: set[Any] = set()
        counted = Counter()
        kinds = Counter()
        for line, msg in zip(lines, stream, strict=True):
            reason = _classify(line, dataset, msg.schema_version, _allowed_extra(msg))
            if reason is not None:
                counted["malformed"] += 1
                kinds[reason] += 1
                continue
            obj = json.loads(line)
            natural = {
                "payment_event": lambda o: o["event_id"],
                "chargeback": lambda o: (o["charge_id"], _parse_ts(o["received_at"])),
                "kyc_profile": lambda o: (o["user_id"], o["version"]),
            }[dataset](obj)
            counted["duplicates" if natural in seen else "unique"] += 1
            seen.add(natural)
        too_late = sum(m.kind == "too_late" for m in stream)
        assert report.counts[dataset] == {
            "records": len(lines),
            "unique": counted["unique"],
            "duplicates": counted["duplicates"],
            "malformed": counted["malformed"],
            "too_late": too_late,
        }
        assert report.malformed_by_kind[dataset] == dict(kinds)
    assert report.counts["payment_event"]["unique"] == EVENTS
    assert report.counts["payment_event"]["duplicates"] == round(EVENTS * 0.02)


# --------------------------------------------------------------------------- record contents


def test_every_record_matches_its_declared_kind_and_schema(messages: list[SyntheticMessage]) -> None:
    for msg in messages:
        assert b"\n" not in msg.payload and b"\r" not in msg.payload
        reason = _classify(msg.payload, msg.dataset, msg.schema_version, _allowed_extra(msg))
        if msg.kind.startswith("malformed:"):
            assert reason == msg.kind.partition(":")[2], msg
            assert msg.key is None
        else:
            assert reason is None, (reason, msg)
            assert _json(msg)[KEY_FIELD[msg.dataset]] == msg.key
    for dataset in DATASETS:
        kinds = Counter(m.kind for m in messages if m.dataset == dataset and m.kind.startswith("malformed:"))
        assert set(kinds) == {f"malformed:{k}" for k in MALFORMED_KINDS}  # events >= 1000: every kind


def test_payment_versions_have_exactly_their_fields(messages: list[SyntheticMessage]) -> None:
    payments = _good(messages, "payment_event")
    v1_fields = {f["name"] for f in raw_schema("payment_event", 1)["fields"]}
    by_version = Counter(m.schema_version for m in payments)
    assert set(by_version) == {1, 2, 3}
    for version, share in zip((1, 2, 3), GeneratorRates().schema_mix, strict=True):
        assert abs(by_version[version] / len(payments) - share) < 0.05
    device_shapes, user_shapes, postal_shapes = Counter(), Counter(), Counter()
    for msg in payments:
        obj = _json(msg)
        if msg.schema_version == 1:
            assert set(obj) == v1_fields
        else:
            device_shapes["absent" if "device_id" not in obj else type(obj["device_id"]).__name__] += 1
            user_shapes["absent" if "user_id" not in obj else type(obj["user_id"]).__name__] += 1
        if msg.schema_version < 3:
            assert isinstance(obj["billing_postal"], str)
        else:
            postal_shapes[type(obj["billing_postal"]).__name__] += 1
    assert set(device_shapes) == {"absent", "NoneType", "str"}
    assert 0.6 < user_shapes["str"] / sum(user_shapes.values()) < 0.8
    assert postal_shapes["dict"] > postal_shapes["str"] > 0


def test_payments_look_like_real_traffic(messages: list[SyntheticMessage]) -> None:
    payments = [m for m in _good(messages, "payment_event") if m.kind == "ok"]
    objs = [_json(m) for m in payments]
    assert all(re.fullmatch(r"pe_[0-9a-f]{16}", o["event_id"]) for o in objs)
    assert all(re.fullmatch(r"m_\d{4}", o["merchant_id"]) for o in objs)
    assert all(re.fullmatch(r"cf_[0-9a-f]{24}", o["card_fingerprint"]) for o in objs)
    assert all(o["amount"] > 0 for o in objs)
    assert len({o["currency"] for o in objs}) >= 5

    # Time: 48 h window, arrival 0-20 s after created_at, ~3 % 30 s - 3 min late.
    delays = []
    for msg, obj in zip(payments, objs, strict=True):
        created = _parse_ts(obj["created_at"])
        assert START <= created < START + timedelta(hours=48)
        delays.append((msg.arrival_time - created).total_seconds())
    assert all(0 <= d <= 180 for d in delays)
    late = sum(d > 20 for d in delays)
    assert all(d >= 30 for d in delays if d > 20)
    assert 0.01 < late / len(delays) < 0.06

    # Timestamps in many offsets, with and without fractions.
    stamps = [o["created_at"] for o in objs]
    suffixes = Counter(s[-1] if s.endswith("Z") else s[-6:] for s in stamps)
    assert {"Z", "+00:00", "-05:00", "+05:30"} <= set(suffixes)
    assert any("." in s for s in stamps) and any("." not in s for s in stamps)

    # IPs: v4 public-looking, v6 in the documentation range, both present.
    ips = [ipaddress.ip_address(o["ip_address"]) for o in objs]
    v6 = [ip for ip in ips if ip.version == 6]
    assert 0.15 < len(v6) / len(ips) < 0.35
    assert all(ip in ipaddress.ip_network("2001:db8::/32") for ip in v6)
    assert not [ip for ip in ips if ip.version == 4 and (ip.is_private or ip.is_loopback)]

    # Skewed merchants, reused cards whose IP repeats, and card-testing bursts.
    merchants = Counter(o["merchant_id"] for o in objs)
    assert merchants.most_common(1)[0][1] > 5 * len(objs) / len(merchants)
    by_card: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    for o in objs:
        by_card[o["card_fingerprint"]].append((_parse_ts(o["created_at"]), o["merchant_id"], o["ip_address"]))
    assert len(by_card) < len(objs) * 0.6
    repeat_ip_cards = sum(1 for uses in by_card.values() if len(uses) > len({ip for _, _, ip in uses}))
    assert repeat_ip_cards > 0.3 * sum(1 for uses in by_card.values() if len(uses) > 1)
    bursts = 0
    for uses in by_card.values():
        times = sorted(t for t, _, _ in uses)
        if any(times[i + 4] - times[i] <= timedelta(minutes=5) for i in range(len(times) - 4)):
            bursts += 1
    assert bursts >= 1


def test_unclassified_field_only_on_some_v3_records(messages: list[SyntheticMessage]) -> None:
    carriers = Counter()
    for msg in _good(messages, "payment_event"):
        obj = _json(msg)
        if "wallet_type" in obj:
            assert msg.schema_version == 3 and isinstance(obj["wallet_type"], str)
        if msg.schema_version == 3:
            carriers["wallet_type" in obj] += 1
    assert 0.2 < carriers[True] / (carriers[True] + carriers[False]) < 0.4
    renamed = [m for m in iter_messages(200, seed=1, unclassified_field="bnpl_plan") if m.kind == "ok"]
    assert any(b'"bnpl_plan"' in m.payload for m in renamed)
    assert not any(b'"wallet_type"' in m.payload for m in renamed)


def test_payment_retries_share_event_id_but_not_bytes(messages: list[SyntheticMessage]) -> None:
    originals: dict[str, SyntheticMessage] = {}
    gaps = []
    for msg in _good(messages, "payment_event"):
        if msg.kind == "ok":
            assert msg.key not in originals
            originals[msg.key] = msg
            continue
        assert msg.kind == "duplicate"
        first = originals[msg.key]  # the original always arrives first
        assert msg.payload != first.payload
        assert msg.schema_version == first.schema_version
        a, b = _json(first), _json(msg)
        assert a.pop("created_at") != b["created_at"]
        assert _parse_ts(b.pop("created_at")) == _parse_ts(_json(first)["created_at"])
        assert a == b  # same business content
        gaps.append(msg.arrival_time - first.arrival_time)
    assert len(gaps) == round(EVENTS * 0.02)
    assert all(timedelta(seconds=1) <= g <= timedelta(hours=36) for g in gaps)
    assert any(g > timedelta(hours=30) for g in gaps)


def test_chargebacks_reference_payments_and_respect_lateness(messages: list[SyntheticMessage]) -> None:
    created = {m.key: _parse_ts(_json(m)["created_at"]) for m in _good(messages, "payment_event")}
    seen: set[tuple[str, datetime]] = set()
    kinds = Counter()
    for msg in _good(messages, "chargeback"):
        obj = _json(msg)
        received = _parse_ts(obj["received_at"])
        assert obj["charge_id"] in created
        assert timedelta(hours=1) <= received - created[obj["charge_id"]] <= timedelta(days=20)
        lag = msg.arrival_time - received
        if msg.kind == "too_late":
            assert timedelta(hours=24) < lag <= timedelta(hours=48)
        else:
            assert timedelta(0) <= lag <= timedelta(hours=24)
        natural = (obj["charge_id"], received)
        assert (natural in seen) == (msg.kind == "duplicate")
        seen.add(natural)
        kinds[msg.kind] += 1
    assert kinds["ok"] + kinds["too_late"] == round(EVENTS * 0.01)
    assert kinds["too_late"] >= 1 and kinds["duplicate"] >= 1


def test_kyc_versions_are_monotonic_and_some_arrive_out_of_order(messages: list[SyntheticMessage]) -> None:
    users: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for msg in _good(messages, "kyc_profile"):
        users[msg.key].append(_json(msg))  # in arrival order
    assert len(users) == EVENTS // 20
    out_of_order = 0
    shapes, statuses_change, names = Counter(), 0, set()
    for user_id, updates in users.items():
        assert re.fullmatch(r"u_[0-9a-f]{12}", user_id)
        versions = [u["version"] for u in updates]
        assert sorted(versions) == list(range(1, len(versions) + 1))
        out_of_order += versions != sorted(versions)
        by_version = sorted(updates, key=lambda u: u["version"])
        stamps = [_parse_ts(u["updated_at"]) for u in by_version]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        statuses_change += len({u["verification_status"] for u in updates}) > 1
        for u in updates:
            born = date.fromisoformat(u["dob"])
            assert 18 <= (START.date() - born).days / 365.25 <= 90
            assert u["document_type"] in {"passport", "driving_licence", "national_id"}
            assert u["verification_status"] in {"pending", "verified", "rejected", "review"}
            shapes[type(u["address"]).__name__] += 1
            names.add(u["legal_name"])
    assert out_of_order == round(0.2 * len(users))
    assert statuses_change > 0
    assert shapes["str"] > 0 and shapes["dict"] > 0
    assert any(not name.isascii() for name in names)
    paying_users = {_json(m).get("user_id") for m in _good(messages, "payment_event")} - {None}
    assert paying_users and paying_users <= set(users)


# --------------------------------------------------------------------------- avro mode


def test_avro_mode_is_readable_deterministic_and_matches_json(tmp_path: Path) -> None:
    events, per_file = 1500, 800
    report = generate(str(tmp_path / "a"), events, seed=SEED, fmt="avro", records_per_file=per_file)
    generate(str(tmp_path / "b"), events, seed=SEED, fmt="avro", records_per_file=per_file)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    root = tmp_path / "a"
    streams = _by_dataset(list(iter_messages(events, seed=SEED)))
    for dataset, stream in streams.items():
        written = 0
        for chunk_index, first in enumerate(range(0, len(stream), per_file)):
            chunk = stream[first : first + per_file]
            for version in sorted({m.schema_version for m in chunk if not m.kind.startswith("malformed:")}):
                path = root / dataset / f"part-{chunk_index:05d}-v{version}.avro"
                assert f"{dataset}/{path.name}" in report.files[dataset]
                with path.open("rb") as fh:
                    reader = fastavro.reader(fh)
                    assert reader.codec == "deflate"
                    assert reader.writer_schema["name"] == load_schema(dataset, version)["name"]
                    got = list(reader)
                names = [f["name"] for f in raw_schema(dataset, version)["fields"]]
                expected = [
                    {n: _json(m).get(n) for n in names}
                    for m in chunk
                    if m.schema_version == version and not m.kind.startswith("malformed:")
                ]
                assert got == expected
                assert all(fastavro.validation.validate(r, load_schema(dataset, version)) for r in got)
                assert all("wallet_type" not in r for r in got)
                written += len(got)
            bad = [m.payload for m in chunk if m.kind.startswith("malformed:")]
            sidecar = root / dataset / f"part-{chunk_index:05d}-malformed.jsonl"
            assert (sidecar.read_bytes().splitlines() if bad else None) == (bad or None)
            written += len(bad)
        assert written == report.counts[dataset]["records"] == len(stream)


# --------------------------------------------------------------------------- output directory safety


def test_refuses_non_empty_directory_without_manifest(tmp_path: Path) -> None:
    precious = tmp_path / "customer_export.csv"
    precious.write_text("real data\n")
    with pytest.raises(FileExistsError, match="refusing"):
        generate(str(tmp_path), 50)
    assert precious.read_text() == "real data\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customer_export.csv"]


def test_regeneration_replaces_previous_files_only(tmp_path: Path) -> None:
    generate(str(tmp_path), 400, seed=1, records_per_file=60)
    assert (tmp_path / "payment_event" / "part-00005.jsonl").exists()
    notes = tmp_path / "NOTES.md"
    notes.write_text("kept\n")
    report = generate(
        str(tmp_path), 400, seed=1, records_per_file=10_000, rates=GeneratorRates(chargeback_rate=0)
    )
    listed = {p for paths in report.files.values() for p in paths}
    on_disk = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == listed | {MANIFEST, "NOTES.md"}
    assert report.files["chargeback"] == [] and not (tmp_path / "chargeback").exists()
    assert report.counts["chargeback"]["records"] == 0


def test_stages_are_independent_of_other_rates() -> None:
    # Fixtures stay stable when an unrelated knob moves: original payments and
    # KYC do not change with the retry, chargeback or malformed rates.
    def stable(rates: GeneratorRates) -> list[bytes]:
        msgs = iter_messages(500, seed=2, rates=rates)
        return [m.payload for m in msgs if m.kind == "ok" and m.dataset != "chargeback"]

    changed = GeneratorRates(chargeback_rate=0.2, duplicate_rate=0.3, malformed_rate=0.1)
    assert stable(GeneratorRates()) == stable(changed)


# --------------------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fmt": "csv"},
        {"events": 0},
        {"events": -5},
        {"events": 10.0},
        {"records_per_file": 0},
        {"start": "not a time"},
        {"start": "2026-11-02T00:00:00"},  # no offset: ambiguous instant
        {"unclassified_field": "amount"},  # a real schema field tests nothing
        {"unclassified_field": "has space"},
    ],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate(str(tmp_path / "out"), **{"events": 10, **kwargs})
    assert not (tmp_path / "out").exists()  # validated before touching the disk


def test_iter_messages_validates_eagerly() -> None:
    with pytest.raises(ValueError, match="events"):
        iter_messages(0)


SHARE_FIELDS = [
    "duplicate_rate",
    "chargeback_rate",
    "chargeback_too_late_rate",
    "malformed_rate",
    "ipv6_rate",
    "burst_card_rate",
    "unclassified_field_rate",
]


@pytest.mark.parametrize("name", SHARE_FIELDS)
@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan, "0.5", True])
def test_rates_reject_shares_outside_0_1(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        GeneratorRates(**{name: value})


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"schema_mix": (0.5, 0.5, 0.5)}, "schema_mix"),
        ({"schema_mix": (0.5, 0.5)}, "schema_mix"),
        ({"schema_mix": (-0.1, 0.6, 0.5)}, "schema_mix"),
        ({"kyc_users": 0}, "kyc_users"),
        ({"kyc_users": True}, "kyc_users"),
    ],
)
def test_rates_reject_bad_mix_and_users(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GeneratorRates(**kwargs)


def test_rates_accept_edges() -> None:
    rates = GeneratorRates(duplicate_rate=0, malformed_rate=1.0, schema_mix=[0, 0, 1], kyc_users=5)
    assert rates.schema_mix == (0.0, 0.0, 1.0)
    msgs = list(iter_messages(50, seed=0, rates=rates))
    assert {m.schema_version for m in msgs if m.dataset == "payment_event"} == {3}
    assert not any(m.kind == "duplicate" and m.dataset == "payment_event" for m in msgs)


# --------------------------------------------------------------------------- properties over small inputs


@settings(max_examples=25, deadline=None)
@given(
    events=st.integers(min_value=1, max_value=400),
    seed=st.integers(min_value=0, max_value=2**63),
    duplicate_rate=st.floats(min_value=0, max_value=1),
    chargeback_rate=st.floats(min_value=0, max_value=1),
    malformed_rate=st.floats(min_value=0, max_value=0.2),
)
@example(events=1, seed=0, duplicate_rate=1.0, chargeback_rate=1.0, malformed_rate=0.2)
def test_invariants_hold_for_any_small_generation(
    events: int, seed: int, duplicate_rate: float, chargeback_rate: float, malformed_rate: float
) -> None:
    rates = GeneratorRates(
        duplicate_rate=duplicate_rate, chargeback_rate=chargeback_rate, malformed_rate=malformed_rate
    )
    msgs = list(iter_messages(events, seed=seed, rates=rates))
    assert [m.arrival_time for m in msgs] == sorted(m.arrival_time for m in msgs)
    payment_ids: set[str] = set()
    for msg in msgs:
        assert b"\n" not in msg.payload
        reason = _classify(msg.payload, msg.dataset, msg.schema_version, _allowed_extra(msg))
        assert reason == (msg.kind.partition(":")[2] if msg.kind.startswith("malformed:") else None)
        if msg.dataset == "payment_event" and msg.kind == "ok":
            assert msg.key not in payment_ids
            payment_ids.add(msg.key)
        elif msg.dataset == "payment_event" and msg.kind == "duplicate":
            assert msg.key in payment_ids
    assert len(payment_ids) == events
    assert {m.key for m in msgs if m.dataset == "chargeback" and m.key} <= payment_ids
