"""Raw zone on the embedded default (a local directory): landing, replay, conflicts, crypto-shredding.

The same code runs against S3 in tests/integration (moto server).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib

import fastavro
import pytest

from io_connectors.keys import LocalKeyProvider
from io_connectors.raw_zone import LocalStore, SubjectKeys
from io_connectors.tables import DERIVED_TABLES
from io_connectors.warehouse import table_digest
from runners.cli import main as cli_main
from runners.summary import counters
from runners.synthetic import generate

DERIVED = DERIVED_TABLES


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    base = tmp_path_factory.mktemp("raw")
    generate(str(base / "in"), events=250, seed=3)
    args = _common(base)
    assert (
        cli_main(
            [
                "run",
                "all",
                "--mode=batch",
                f"--input={base / 'in'}",
                f"--lake={base / 'lake'}",
                f"--warehouse={base / 'wh.duckdb'}",
                *args,
            ]
        )
        == 0
    )
    return base


def _common(base: pathlib.Path) -> list[str]:
    return [f"--raw={base / 'raw'}", f"--local_key_file={base / 'keys.json'}"]


def _objects(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.avro"))
    }


def test_layout_metadata_and_no_raw_pii_in_clear_fields(landed):
    raw = landed / "raw"
    names = list(_objects(raw))
    assert any(n.startswith("payment_event/dt=2026-11-02/hour=") for n in names)
    assert any(
        n.startswith("_quarantine/payment_event/") for n in names
    )  # malformed input, restricted prefix
    record = next(fastavro.reader(io.BytesIO(next((raw / "payment_event").rglob("*.avro")).read_bytes())))
    assert record["source"].startswith("file:payment_event/") and record["position"].isdigit()
    assert record["ingested_at"].endswith("Z") and record["subject_ref"]
    clear = record["clear"]
    assert "card_fingerprint" not in clear and "ip_address" not in clear and "event_id" in clear
    assert b"cf_" not in record["sealed"]
    key_files = list((landed / "raw-keys").rglob("*.key"))
    assert key_files and all(os.stat(k).st_mode & 0o077 == 0 for k in key_files)


def test_relanding_writes_identical_objects_and_refuses_different_content(landed, tmp_path):
    before = _objects(landed / "raw")
    result_args = ["run", "land", f"--input={landed / 'in'}", *_common(landed)]
    assert cli_main(result_args) == 0
    assert _objects(landed / "raw") == before
    # the same file name with other content: detected and refused, never overwritten
    copy = tmp_path / "in"
    (copy / "payment_event").mkdir(parents=True)
    source = next((landed / "in" / "payment_event").glob("part-00000.jsonl"))
    lines = source.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"amount":', b'"amount":1', 1)
    target = copy / "payment_event" / source.name
    target.write_bytes(b"".join(lines))
    stat = source.stat()
    os.utime(target, (stat.st_atime, stat.st_mtime))
    from pipelines import land

    result = land.run([f"--input={copy}", *_common(landed)])
    assert counters(result).get("riskpipe.raw/payment_event.conflicts", 0) >= 1
    assert _objects(landed / "raw") == before


def test_replay_from_raw_reproduces_every_derived_table(landed, tmp_path):
    replay_wh = tmp_path / "replay.duckdb"
    args = [
        "run",
        "backfill",
        "--from=2026-11-01T00:00:00Z",
        "--to=2026-12-01T00:00:00Z",
        f"--lake={tmp_path / 'lake'}",
        f"--warehouse={replay_wh}",
        *_common(landed),
    ]
    assert cli_main(args) == 0
    for table in DERIVED:
        assert table_digest(str(replay_wh), table, exclude=("ingested_at", "computed_at")) == table_digest(
            str(landed / "wh.duckdb"), table, exclude=("ingested_at", "computed_at")
        ), table


def test_reading_raw_is_refused_in_nonprod(landed, tmp_path, capsys):
    args = [
        "run",
        "backfill",
        "--from=2026-11-02T00:00:00Z",
        "--to=2026-11-03T00:00:00Z",
        f"--warehouse={tmp_path / 'w.duckdb'}",
        f"--raw={landed / 'raw'}",
        "--env=nonprod",
    ]
    assert cli_main(args) == 2
    assert "reading the raw zone is refused in nonprod" in capsys.readouterr().err


def test_erasing_one_subject_shreds_only_that_subject(landed, tmp_path, capsys):
    # pick a KYC user that has records
    first = next((landed / "in" / "kyc_profile").glob("*.jsonl")).read_bytes().splitlines()[0]
    user = json.loads(first)["user_id"]
    assert cli_main(["erase-keys", "--subject", user, "--dataset", "kyc_profile", *_common(landed)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["destroyed"][0]["key_versions_destroyed"] == 1
    assert report["destroyed"][0]["erased_at"].endswith("Z")
    assert report["affected_objects"]["kyc_profile"]
    assert user not in json.dumps(report)  # the report names the pseudonymous ref, not the id
    keys = SubjectKeys(str(landed / "raw-keys"), LocalKeyProvider(str(landed / "keys.json")).resolver())
    ref = report["subject_refs"][0]["subject_ref"]
    assert keys.key_by_ref("kyc_profile", ref) is None
    # replay: the erased user's records are unreadable, everyone else's still replay
    from pipelines import backfill

    result = backfill.run(
        [
            "--from=2026-11-01T00:00:00Z",
            "--to=2026-12-01T00:00:00Z",
            f"--warehouse={tmp_path / 'w.duckdb'}",
            *_common(landed),
        ]
    )
    values = counters(result)
    assert values["riskpipe.raw/kyc_profile.shredded_skipped"] >= 1
    assert values["riskpipe.raw/kyc_profile.records_replayed"] > 0
    # landing the same user again never creates a new key
    from pipelines import land

    again = land.run([f"--input={landed / 'in'}", *_common(landed)])
    assert counters(again)["riskpipe.raw/kyc_profile.erased_subject_refused"] >= 1
    assert keys.key_by_ref("kyc_profile", ref) is None


def test_local_store_put_if_absent(tmp_path):
    store = LocalStore(str(tmp_path))
    assert store.put_if_absent("a/b.avro", b"1") == "written"
    assert store.put_if_absent("a/b.avro", b"1") == "unchanged"
    assert store.put_if_absent("a/b.avro", b"2") == "conflict"
    assert store.get("a/b.avro") == b"1"
