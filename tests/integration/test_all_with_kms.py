"""The `all` job in prod mode: KMS-wrapped keys from a key store on S3 (moto), outputs scanned for raw PII."""

from __future__ import annotations

from io_connectors.keys import KmsKeyProvider
from io_connectors.warehouse import table_row_counts
from runners import scan_pii
from runners.cli import main as cli_main
from runners.cli import scan_pii_allow_args
from runners.synthetic import generate


def test_all_job_with_kms_keys_in_prod(kms_key, bucket, tmp_path, capsys):
    store = f"s3://{bucket}/keys/prod.json"
    KmsKeyProvider(store, env="prod").init(kms_key)
    generate(str(tmp_path / "in"), events=300, seed=5)
    code = cli_main(
        [
            "run",
            "all",
            "--mode=batch",
            f"--input={tmp_path / 'in'}",
            f"--lake={tmp_path / 'lake'}",
            f"--warehouse={tmp_path / 'wh.duckdb'}",
            "--env=prod",
            f"--key_store={store}",
        ]
    )
    assert code == 0
    counts = {row["table"]: row["rows"] for row in table_row_counts(str(tmp_path / "wh.duckdb"))}
    assert counts["curated.payment_event"] == 300
    assert counts["analytics.fraud_features"] == 300
    assert not (tmp_path / ".riskpipe-keys-prod.json").exists()  # no local key file in prod
    assert scan_pii.main([str(tmp_path / "lake"), str(tmp_path / "wh.duckdb"), *scan_pii_allow_args()]) == 0


def test_prod_job_fails_before_launch_when_keys_cannot_be_loaded(bucket, tmp_path, capsys):
    code = cli_main(
        [
            "run",
            "all",
            f"--input={tmp_path}",
            f"--warehouse={tmp_path / 'wh.duckdb'}",
            "--env=prod",
            f"--key_store=s3://{bucket}/keys/missing.json",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "riskpipe: error: cannot load tokenization keys for env 'prod'"
    )
