"""Re-identification: prod + COMPLIANCE_OFFICER only, audited first, fail closed; the audit chain holds.

The rows are tokenized with the real ``payment_event`` template and ``LocalDeidEngine``; keys are
random per test, served by a tiny prod key provider (``LocalKeyProvider`` refuses prod, and the
test must not need KMS).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import secrets
import stat

import pytest

import dlp_configs
from io_connectors.audit import GENESIS, AuditChainError, AuditRecord, JsonlAuditLog, utc_now
from runners import reidentify as reid_cli
from runners.reidentify import (
    ROLE,
    AuditFailed,
    Principal,
    ReidentificationDenied,
    Reidentifier,
)
from transforms.deid import LocalDeidEngine, StaticKeyResolver

DATASET = "payment_event"
PURPOSE = "SAR filing for case 2026-114, requested by the MLRO"
OFFICER = Principal("c.officer", frozenset({ROLE}))
ANALYST = Principal("f.analyst", frozenset({"FRAUD_ANALYST"}))
REVERSIBLE = ["card_token", "ip_token", "device_token"]
RAW = [
    {
        "event_id": "evt-1",
        "card_token": "4111111111111111",
        "ip_token": "203.0.113.77",
        "device_token": "dev8f3k2m9x1q",
        "billing_postal_masked": "SW1A 1AA",
        "ip_prefix": "203.0.113.0/24",
    },
    {
        "event_id": "evt-2",
        "card_token": "5500005555555559",
        "ip_token": "2001:db8::1f",
        "device_token": "DEVICE77aa01",
        "billing_postal_masked": "10115",
        "ip_prefix": "2001:db8::/48",
    },
]


class ProdTestKeys:
    """Stands in for ``KmsKeyProvider`` in prod: random in-memory keys, no KMS."""

    env = "prod"

    def __init__(self):
        keys = {name: {1: secrets.token_bytes(64)} for name in ("riskpipe-pii", "riskpipe-pci")}
        self._resolver = StaticKeyResolver(keys, {name: 1 for name in keys})
        self.calls = 0

    def resolver(self) -> StaticKeyResolver:
        self.calls += 1
        return self._resolver


class BrokenAudit:
    """An audit sink that accepts nothing."""

    def __init__(self):
        self.attempts = 0

    def append(self, record: AuditRecord) -> str:
        self.attempts += 1
        raise OSError(28, "No space left on device")

    def verify(self) -> int:
        return 0


@pytest.fixture
def keys() -> ProdTestKeys:
    return ProdTestKeys()


@pytest.fixture
def tokenized(keys) -> list[dict]:
    engine = LocalDeidEngine(dlp_configs.load_templates()[DATASET], keys.resolver())
    rows = engine.deidentify([dict(row) for row in RAW])
    assert not engine.failures
    for raw, row in zip(RAW, rows, strict=True):
        for name in REVERSIBLE:
            assert row[name] != raw[name]
    return rows


@pytest.fixture
def audit_path(tmp_path) -> str:
    return str(tmp_path / "audit" / "audit.jsonl")


def entries(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["record"] for line in handle]


def assert_no_values(path: str, tokenized_rows: list[dict]) -> None:
    text = open(path, encoding="utf-8").read()
    secrets_seen = [row[name] for rows in (RAW, tokenized_rows) for row in rows for name in REVERSIBLE]
    secrets_seen += [row["billing_postal_masked"] for row in RAW + tokenized_rows]
    for value in secrets_seen:
        assert value not in text
    # tokens are base64url / FPE text; also check a distinctive slice of each SIV token body
    for row in tokenized_rows:
        for name in ("card_token", "ip_token"):
            assert row[name].split(".", 1)[1][:16] not in text


# --- the compliance API ---------------------------------------------------------------------------


def test_officer_gets_raw_values_and_one_allowed_record(keys, tokenized, audit_path):
    reidentifier = Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    before = [dict(row) for row in tokenized]

    out = reidentifier.reidentify(tokenized, REVERSIBLE, OFFICER, PURPOSE, ticket="COMP-114")

    for raw, row, token_row in zip(RAW, out, tokenized, strict=True):
        for name in REVERSIBLE:
            assert row[name] == raw[name]
        assert row["billing_postal_masked"] == token_row["billing_postal_masked"]  # untouched
        assert row["event_id"] == raw["event_id"]
    assert tokenized == before  # copies: the caller's rows keep their tokens
    assert reidentifier.last_failures == {}

    (record,) = entries(audit_path)
    assert record["outcome"] == "allowed"
    assert record["reason"] is None
    assert (record["actor"], record["role"], record["action"]) == ("c.officer", ROLE, "reidentify")
    assert (record["dataset"], record["env"]) == (DATASET, "prod")
    assert record["fields"] == REVERSIBLE
    assert record["row_count"] == 2
    assert record["purpose"] == PURPOSE
    assert record["ticket"] == "COMP-114"
    assert AuditRecord.from_dict(record).at == record["at"]
    assert_no_values(audit_path, tokenized)
    assert JsonlAuditLog(audit_path).verify() == 1


def test_audit_is_written_before_any_token_is_decrypted(keys, tokenized, audit_path):
    """The record is on disk by the time the engine runs (not merely before the function returns)."""
    log = JsonlAuditLog(audit_path)
    reidentifier = Reidentifier(DATASET, "prod", keys, log)
    seen = []
    real = reidentifier._engine.reidentify

    def spy(rows, fields):
        seen.append(log.verify())
        return real(rows, fields)

    reidentifier._engine.reidentify = spy
    reidentifier.reidentify(tokenized, ["card_token"], OFFICER, PURPOSE)
    assert seen == [1]


def test_bad_token_becomes_none_and_is_counted(keys, tokenized, audit_path):
    reidentifier = Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    rows = [dict(tokenized[0], card_token="SURROGATE(CARD):1.AAAAAAAAAAAAAAAAAAAAAAAA")]
    out = reidentifier.reidentify(rows, ["card_token"], OFFICER, PURPOSE)
    assert out[0]["card_token"] is None
    assert reidentifier.last_failures == {"card_token": 1}


def test_analyst_is_denied_and_audited(keys, tokenized, audit_path):
    reidentifier = Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    with pytest.raises(ReidentificationDenied, match="COMPLIANCE_OFFICER"):
        reidentifier.reidentify(tokenized, ["card_token"], ANALYST, PURPOSE)
    (record,) = entries(audit_path)
    assert record["outcome"] == "denied"
    assert (record["actor"], record["role"]) == ("f.analyst", "FRAUD_ANALYST")
    assert record["fields"] == ["card_token"]
    assert record["row_count"] == 2
    assert "COMPLIANCE_OFFICER" in record["reason"]
    assert_no_values(audit_path, tokenized)


@pytest.mark.parametrize("env", ["nonprod", "dev"])
def test_non_prod_is_refused_at_construction_and_audited(keys, audit_path, env):
    with pytest.raises(ReidentificationDenied, match=f"^re-identification never runs in {env}$"):
        Reidentifier(DATASET, env, keys, JsonlAuditLog(audit_path), principal=OFFICER)
    (record,) = entries(audit_path)
    assert (record["outcome"], record["env"], record["actor"]) == ("denied", env, "c.officer")
    assert record["reason"] == f"re-identification never runs in {env}"
    assert keys.calls == 0  # no key was unwrapped


def test_key_provider_of_another_env_is_refused(audit_path):
    class NonprodKeys(ProdTestKeys):
        env = "nonprod"

    keys = NonprodKeys()
    with pytest.raises(ReidentificationDenied, match="prod keys"):
        Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    assert [r["outcome"] for r in entries(audit_path)] == ["denied"]
    assert keys.calls == 0


@pytest.mark.parametrize("field", ["billing_postal_masked", "ip_prefix", "event_id", "card_fingerprint"])
def test_non_reversible_fields_are_refused(keys, tokenized, audit_path, field):
    reidentifier = Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    with pytest.raises(ValueError, match=f"field {field!r}"):
        reidentifier.reidentify(tokenized, ["card_token", field], OFFICER, PURPOSE)
    (record,) = entries(audit_path)
    assert record["outcome"] == "denied"


def test_reversible_fields_come_from_policy_and_template(keys, audit_path):
    reidentifier = Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    assert reidentifier.reversible_fields == frozenset(REVERSIBLE)


@pytest.mark.parametrize("purpose", ["", "   ", "audit", "  because  "])
def test_empty_or_short_purpose_is_refused(keys, tokenized, audit_path, purpose):
    reidentifier = Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    with pytest.raises(ValueError, match="purpose"):
        reidentifier.reidentify(tokenized, ["card_token"], OFFICER, purpose)
    assert [r["outcome"] for r in entries(audit_path)] == ["denied"]


def test_no_fields_is_refused(keys, tokenized, audit_path):
    reidentifier = Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    with pytest.raises(ValueError, match="at least one field"):
        reidentifier.reidentify(tokenized, [], OFFICER, PURPOSE)


def test_audit_failure_returns_nothing(keys, tokenized):
    audit = BrokenAudit()
    reidentifier = Reidentifier(DATASET, "prod", keys, audit)
    calls = []
    reidentifier._engine.reidentify = lambda *a: calls.append(a) or []
    result = None
    with pytest.raises(AuditFailed, match="nothing was re-identified") as caught:
        result = reidentifier.reidentify(tokenized, REVERSIBLE, OFFICER, PURPOSE)
    assert result is None
    assert calls == []  # no token was even decrypted
    assert isinstance(caught.value.__cause__, OSError)
    assert audit.attempts == 1


def test_denial_still_raises_when_audit_fails(keys, tokenized):
    reidentifier = Reidentifier(DATASET, "prod", keys, BrokenAudit())
    with pytest.raises(ReidentificationDenied) as caught:
        reidentifier.reidentify(tokenized, ["card_token"], ANALYST, PURPOSE)
    assert isinstance(caught.value.__cause__, OSError)


def test_exception_messages_carry_no_values(keys, tokenized, audit_path):
    reidentifier = Reidentifier(DATASET, "prod", keys, JsonlAuditLog(audit_path))
    for call in (
        lambda: reidentifier.reidentify(tokenized, ["card_token"], ANALYST, PURPOSE),
        lambda: reidentifier.reidentify(tokenized, ["ip_prefix"], OFFICER, PURPOSE),
    ):
        with pytest.raises(Exception) as caught:
            call()
        for row in RAW + tokenized:
            for name in REVERSIBLE:
                assert row[name] not in str(caught.value)


# --- the audit log --------------------------------------------------------------------------------


def record(n: int, outcome: str = "allowed") -> AuditRecord:
    return AuditRecord(
        actor=f"actor-{n}",
        role=ROLE,
        action="reidentify",
        dataset=DATASET,
        fields=("card_token",),
        row_count=n,
        purpose=PURPOSE,
        ticket=None,
        env="prod",
        at=utc_now(),
        outcome=outcome,
        reason=None,
    )


@pytest.fixture
def chain(audit_path) -> tuple[JsonlAuditLog, list[str]]:
    log = JsonlAuditLog(audit_path)
    hashes = [log.append(record(n)) for n in range(4)]
    return log, hashes


def lines(log: JsonlAuditLog) -> list[str]:
    with open(log.path, encoding="utf-8") as handle:
        return handle.readlines()


def rewrite(log: JsonlAuditLog, new_lines: list[str]) -> None:
    with open(log.path, "w", encoding="utf-8") as handle:
        handle.writelines(new_lines)


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(prev: str, rec: dict) -> str:
    return hashlib.sha256(canonical({"prev": prev, "record": rec}).encode()).hexdigest()


def test_chain_links_and_file_mode(chain):
    log, hashes = chain
    assert log.verify() == 4
    assert log.verify(expected_head=hashes[-1]) == 4
    parsed = [json.loads(line) for line in lines(log)]
    assert [spec_hash(p["prev"], p["record"]) for p in parsed] == hashes
    assert parsed[0]["prev"] == GENESIS
    assert [p["prev"] for p in parsed[1:]] == hashes[:-1]
    assert [p["hash"] for p in parsed] == hashes
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600


def test_verify_detects_an_edited_line(chain):
    log, _ = chain
    content = lines(log)
    content[1] = content[1].replace('"row_count":1', '"row_count":9')
    rewrite(log, content)
    with pytest.raises(AuditChainError, match="line 2 was modified"):
        log.verify()


def test_verify_detects_an_edited_line_with_a_recomputed_hash(chain):
    """A forger who re-hashes the edited line breaks the link to the next one."""
    log, _ = chain
    content = lines(log)
    entry = json.loads(content[1])
    entry["record"]["actor"] = "someone-else"
    entry["hash"] = spec_hash(entry["prev"], entry["record"])
    content[1] = canonical(entry) + "\n"
    rewrite(log, content)
    with pytest.raises(AuditChainError, match="line 3 does not follow line 2"):
        log.verify()


def test_verify_detects_a_deleted_line(chain):
    log, _ = chain
    content = lines(log)
    del content[2]
    rewrite(log, content)
    with pytest.raises(AuditChainError, match="line 3 does not follow line 2"):
        log.verify()


def test_verify_detects_a_deleted_first_line(chain):
    log, _ = chain
    rewrite(log, lines(log)[1:])
    with pytest.raises(AuditChainError, match="line 1 is not the first entry"):
        log.verify()


def test_verify_detects_reordering(chain):
    log, _ = chain
    content = lines(log)
    content[1], content[2] = content[2], content[1]
    rewrite(log, content)
    with pytest.raises(AuditChainError, match="line 2 does not follow line 1"):
        log.verify()


def test_verify_with_anchor_detects_truncation(chain):
    log, hashes = chain
    rewrite(log, lines(log)[:-1])
    assert log.verify() == 3  # a chain alone cannot see a cut tail ...
    assert log.verify(expected_head=hashes[1]) == 3  # an older anchor is still in the chain
    with pytest.raises(AuditChainError, match="is missing"):
        log.verify(expected_head=hashes[-1])  # ... an anchor can


def test_append_refuses_to_extend_a_broken_tail(chain):
    log, _ = chain
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"hash":"x"')  # torn write
    with pytest.raises(AuditChainError, match="incomplete"):
        log.append(record(9))
    with pytest.raises(AuditChainError, match="line 5 is incomplete"):
        log.verify()


def test_append_refuses_a_world_readable_log(audit_path):
    log = JsonlAuditLog(audit_path)
    log.append(record(0))
    os.chmod(audit_path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        log.append(record(1))


def test_audit_record_refuses_bad_values():
    with pytest.raises(ValueError, match="outcome"):
        record(0, outcome="maybe")
    with pytest.raises(ValueError, match="at must be canonical"):
        AuditRecord(**{**record(0).__dict__, "at": "2026-01-01T00:00:00Z"})


# --- the CLI --------------------------------------------------------------------------------------


def cli_args(tmp_path, audit_path, tokenized, role: str = ROLE, env: str = "prod") -> list[str]:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in tokenized), encoding="utf-8")
    return [
        "--dataset", DATASET, "--env", env, "--key_store", str(tmp_path / "keys.json"),
        "--audit-log", audit_path, "--actor", "c.officer", "--role", role, "--purpose", PURPOSE,
        "--ticket", "COMP-114", "--field", "card_token", "ip_token", "--field", "device_token",
        "--input", str(rows),
    ]  # fmt: skip


@pytest.fixture
def cli_keys(monkeypatch, keys):
    monkeypatch.setattr(reid_cli, "KmsKeyProvider", lambda store, env: keys)
    return keys


def test_cli_officer_prints_raw_rows(cli_keys, tokenized, tmp_path, audit_path, capsys):
    assert reid_cli.main(cli_args(tmp_path, audit_path, tokenized)) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [{k: r[k] for k in REVERSIBLE} for r in rows] == [{k: r[k] for k in REVERSIBLE} for r in RAW]
    assert err == ""
    (entry,) = entries(audit_path)
    assert (entry["outcome"], entry["fields"]) == ("allowed", REVERSIBLE)


def test_cli_denied_role_exits_2_with_one_line(cli_keys, tokenized, tmp_path, audit_path, capsys):
    code = reid_cli.main(cli_args(tmp_path, audit_path, tokenized, role="FRAUD_ANALYST"))
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "COMPLIANCE_OFFICER" in err
    assert "Traceback" not in err
    assert [r["outcome"] for r in entries(audit_path)] == ["denied"]


def test_cli_nonprod_exits_2(cli_keys, tokenized, tmp_path, audit_path, capsys):
    assert reid_cli.main(cli_args(tmp_path, audit_path, tokenized, env="dev")) == 2
    _, err = capsys.readouterr()
    assert err.strip().endswith("re-identification never runs in dev")
    assert [(r["outcome"], r["actor"]) for r in entries(audit_path)] == [("denied", "c.officer")]


def test_cli_usage_error_is_one_line(capsys):
    assert reid_cli.main(["--dataset", DATASET]) == 2
    _, err = capsys.readouterr()
    assert len(err.splitlines()) == 1
    assert "required" in err


def test_cli_audit_failure_exits_1_and_prints_nothing(cli_keys, tokenized, tmp_path, audit_path, capsys):
    os.makedirs(os.path.dirname(audit_path))
    os.close(os.open(audit_path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(audit_path, 0o644)  # the log refuses to write: fail closed
    assert reid_cli.main(cli_args(tmp_path, audit_path, tokenized)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "nothing was re-identified" in err


def _append_many(path: str, start: int, count: int) -> None:
    log = JsonlAuditLog(path)
    for n in range(start, start + count):
        log.append(record(n))


def test_concurrent_writers_keep_one_chain(audit_path):
    """Two processes appending at once: every line whole, one unbroken chain."""
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(audit_path, i * 100, 40)) for i in range(2)]
    for worker in workers:
        worker.start()
    _append_many(audit_path, 1000, 40)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert JsonlAuditLog(audit_path).verify() == 120
