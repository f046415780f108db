"""The `all` job end to end on embedded defaults: tables, parity, idempotence, no raw PII.

Runs real pipelines on the direct runner over generated data (small sizes so
the unit tier stays fast); the warehouse is DuckDB and the lake Parquet, both
embedded, so no service is needed.
"""

from __future__ import annotations

import hashlib
import pathlib

import duckdb
import pytest

from io_connectors.tables import TABLES
from io_connectors.warehouse import table_digest
from pipelines import all as all_job
from runners import scan_pii
from runners.cli import main as cli_main
from runners.cli import scan_pii_allow_args
from runners.summary import counters
from runners.synthetic import GeneratorRates, generate

EVENTS = 400


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("input") / "in"
    generate(str(out), events=EVENTS, seed=11, rates=GeneratorRates(malformed_rate=0.01))
    return out


def _run(input_dir, work: pathlib.Path, *extra: str):
    args = [
        f"--input={input_dir}",
        f"--lake={work / 'lake'}",
        f"--warehouse={work / 'wh.duckdb'}",
        f"--local_key_file={work.parent / 'keys-dev.json'}",
        *extra,
    ]
    return all_job.run(args)


def _digests(warehouse: pathlib.Path, ignore_processing_time: bool) -> dict[str, tuple[int, str]]:
    return {
        name: table_digest(
            str(warehouse), name, exclude=spec.processing_time_columns if ignore_processing_time else ()
        )
        for name, spec in TABLES.items()
    }


def _lake_bytes(lake: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(lake.rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def batch_run(generated, tmp_path_factory):
    work = tmp_path_factory.mktemp("keys") / "batch"
    result = _run(generated, work, "--mode=batch")
    return work, counters(result)


def test_every_contract_table_exists_with_contract_columns(batch_run):
    work, _ = batch_run
    con = duckdb.connect(str(work / "wh.duckdb"), read_only=True)
    try:
        for name, spec in TABLES.items():
            columns = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
            assert columns == list(spec.column_names), name
        assert con.execute("SELECT count(*) FROM curated.payment_event").fetchone()[0] == EVENTS
        assert con.execute("SELECT count(*) FROM analytics.fraud_features").fetchone()[0] == EVENTS
        assert con.execute("SELECT count(*) FROM quarantine.payment_event").fetchone()[0] > 0
        # KYC: latest version per user only
        dupes = con.execute("SELECT count(*) - count(DISTINCT user_id) FROM curated.kyc_profile").fetchone()[
            0
        ]
        assert dupes == 0
    finally:
        con.close()
    for table in (
        "curated.payment_event",
        "curated.chargeback",
        "analytics.fraud_features",
        "analytics.finance_hourly",
    ):
        zone, name = table.split(".")
        assert list((work / "lake" / zone / name).rglob("*.parquet")), table


def test_outputs_hold_no_raw_personal_data(batch_run, generated, tmp_path):
    work, _ = batch_run
    known = set()
    for line in (generated / "payment_event").glob("*.jsonl"):
        for raw in line.read_bytes().splitlines():
            for marker in (b'"card_fingerprint":"', b'"ip_address":"'):
                if marker in raw:
                    known.add(raw.split(marker, 1)[1].split(b'"', 1)[0].decode("utf-8", "replace"))
    known_file = tmp_path / "known.txt"
    known_file.write_text("\n".join(sorted(known)), encoding="utf-8")
    code = scan_pii.main(
        [
            str(work / "lake"),
            str(work / "wh.duckdb"),
            "--known-values",
            str(known_file),
            *scan_pii_allow_args(),
        ]
    )
    assert code == 0


def test_unclassified_field_is_dropped_and_counted(batch_run):
    work, values = batch_run
    assert values.get("riskpipe.protect/payment_event.unclassified.wallet_type", 0) > 0
    con = duckdb.connect(str(work / "wh.duckdb"), read_only=True)
    try:
        columns = {r[0] for r in con.execute("DESCRIBE curated.payment_event").fetchall()}
    finally:
        con.close()
    assert "wallet_type" not in columns


def test_running_twice_changes_nothing(generated, tmp_path):
    work = tmp_path / "twice"
    _run(generated, work, "--mode=batch")
    first, first_lake = _digests(work / "wh.duckdb", False), _lake_bytes(work / "lake")
    _run(generated, work, "--mode=batch")
    assert _digests(work / "wh.duckdb", False) == first
    assert _lake_bytes(work / "lake") == first_lake


def test_stream_and_batch_give_the_same_tables(generated, batch_run, tmp_path):
    work_batch, _ = batch_run
    work = batch_run[0].parent / "stream"
    _run(generated, work, "--mode=stream", "--idle-timeout=2", "--poll_interval=0.5")
    assert _digests(work / "wh.duckdb", True) == _digests(work_batch / "wh.duckdb", True)


def test_cli_reports_bad_arguments_in_one_line(capsys, tmp_path):
    assert cli_main(["run", "all", "--mode=batch"]) == 2
    assert capsys.readouterr().err.strip() == (
        "riskpipe: error: --input is required: the directory with payment_event/, chargeback/, kyc_profile/"
    )
    assert cli_main(["run", "all", "--input=x", "--warehouse=w.duckdb", "--no_such_flag=1"]) == 2
    assert "unknown option(s) --no_such_flag=1" in capsys.readouterr().err
    assert cli_main(["run", "nope"]) == 2
    assert "unknown job 'nope'" in capsys.readouterr().err
    args = ["run", "all", f"--input={tmp_path}", f"--warehouse={tmp_path / 'w.duckdb'}", "--env=prod"]
    assert cli_main(args) == 2
    assert "--env prod needs --key_store" in capsys.readouterr().err
    assert cli_main([*args[:-1], "--dedup_ttl_hours=12"]) == 2
    assert "must exceed" in capsys.readouterr().err


def _run_job(job: str, input_dir, work: pathlib.Path, *extra: str) -> int:
    return cli_main(
        [
            "run",
            job,
            f"--input={input_dir}",
            f"--lake={work / 'lake'}",
            f"--warehouse={work / 'wh.duckdb'}",
            f"--local_key_file={work.parent / 'keys-dev.json'}",
            *extra,
        ]
    )


def test_backfill_over_a_processed_range_changes_nothing_and_restores_lost_rows(generated, batch_run):
    work_batch, _ = batch_run
    work = work_batch.parent / "backfill"
    assert _run_job("all", generated, work, "--mode=batch") == 0
    full = _digests(work / "wh.duckdb", True)
    day = ["--from=2026-11-02T00:00:00Z", "--to=2026-11-03T00:00:00Z"]
    assert _run_job("backfill", generated, work, *day) == 0
    assert _digests(work / "wh.duckdb", True) == full
    # lose a day of derived and curated rows (as if they had arrived too late), then backfill it
    con = duckdb.connect(str(work / "wh.duckdb"))
    try:
        lost = con.execute("DELETE FROM analytics.fraud_features WHERE created_at < '2026-11-03'").fetchone()[
            0
        ]
        con.execute("DELETE FROM curated.payment_event WHERE created_at < '2026-11-03'")
        con.execute("UPDATE analytics.finance_hourly SET payment_count = 0 WHERE hour < '2026-11-03'")
        con.execute("DELETE FROM curated.chargeback WHERE received_at < '2026-11-03'")
    finally:
        con.close()
    assert lost > 0
    assert _run_job("backfill", generated, work, *day) == 0
    assert _digests(work / "wh.duckdb", True) == full


def test_each_job_writes_its_tables(generated, tmp_path):
    for job, tables in {
        "curate": ("curated.payment_event", "curated.chargeback", "curated.kyc_profile"),
        "fraud-features": ("analytics.fraud_features",),
        "finance-hourly": ("analytics.finance_hourly", "curated.chargeback"),
    }.items():
        work = tmp_path / job
        assert _run_job(job, generated, work, "--mode=batch") == 0
        con = duckdb.connect(str(work / "wh.duckdb"), read_only=True)
        try:
            for table in tables:
                assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, (job, table)
        finally:
            con.close()


def test_backfill_needs_whole_hour_range(generated, tmp_path, capsys):
    assert (
        _run_job(
            "backfill", generated, tmp_path / "b", "--from=2026-11-02T00:30:00Z", "--to=2026-11-03T00:00:00Z"
        )
        == 2
    )
    assert "whole hours" in capsys.readouterr().err
