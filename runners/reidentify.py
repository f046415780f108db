"""Re-identification for compliance: turn curated tokens back into raw values, audited.

What: ``Reidentifier`` reverses the reversible tokens of a curated dataset (AES-SIV
``cryptoDeterministicConfig`` and FF3-1 ``cryptoReplaceFfxFpeConfig`` columns of the dataset's
de-identify template) for a principal holding ``COMPLIANCE_OFFICER``, and ``main`` is the
``riskpipe reidentify`` command around it.

Why it is this strict (ARCHITECTURE §6–7): re-identification undoes the protection the whole
platform exists for, so

* it never runs outside prod: the constructor refuses any other env, and a key provider of another
  env, before any key is unwrapped (non-prod has no raw data to reveal, and its tokens must never
  be turned into prod values);
* it needs the ``COMPLIANCE_OFFICER`` role, a written purpose (at least 10 characters) and only
  columns whose policy handling is ``tokenize`` with a reversible primitive — a masked, hashed or
  generalized column (``billing_postal_masked``, ``ip_prefix``) has nothing to reverse;
* every attempt is audited, refusals included, and an allowed request's record is appended BEFORE
  any token is decrypted: if the audit log cannot record it, nothing is decrypted or returned
  (fail closed). Records hold names, counts, purpose and ticket, never a value or a token.

The principal is what the caller asserts. In prod the real gate is IAM: only the compliance role may
call KMS Decrypt on the key store's wrapping key, so a caller without it never gets a resolver; the
role check here makes the decision explicit and audited. Error messages never contain row values.

CLI (one clear line on stderr and exit 2 on refusals and usage errors, exit 1 when the audit log,
the key store or KMS fails; re-identified rows go to stdout as JSON lines)::

    riskpipe reidentify --dataset payment_event --env prod --key_store s3://bucket/keys.json \\
        --audit-log /var/log/riskpipe/audit.jsonl --actor j.doe --role COMPLIANCE_OFFICER \\
        --purpose "SAR filing for case 2026-114" --ticket COMP-114 \\
        --field card_token --field ip_token --input rows.jsonl

KMS region and endpoint come from the standard AWS environment (``AWS_REGION``, ...).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import dlp_configs
from io_connectors.audit import AuditLog, AuditRecord, JsonlAuditLog, utc_now
from io_connectors.keys import KmsKeyProvider
from transforms.deid import LocalDeidEngine

__all__ = [
    "MIN_PURPOSE_CHARS",
    "ROLE",
    "AuditFailed",
    "Principal",
    "ReidentificationDenied",
    "Reidentifier",
    "main",
]

ROLE = "COMPLIANCE_OFFICER"
ACTION = "reidentify"
PROD = "prod"
MIN_PURPOSE_CHARS = 10
REVERSIBLE_PRIMITIVES = frozenset({"cryptoDeterministicConfig", "cryptoReplaceFfxFpeConfig"})


class ReidentificationDenied(PermissionError):
    """The request is not allowed (env, role); it has been audited as denied."""


class AuditFailed(RuntimeError):
    """The audit log could not record the request, so nothing was re-identified."""


@dataclass(frozen=True)
class Principal:
    """Who asks: a person or service account name and the roles it holds."""

    name: str
    roles: frozenset[str]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("Principal.name must be a non-empty string")
        if not isinstance(self.roles, frozenset) or not all(isinstance(r, str) for r in self.roles):
            raise ValueError("Principal.roles must be a frozenset of role names")


def _roles_text(principal: Principal | None) -> str:
    if principal is None:
        return "unknown"
    return ",".join(sorted(principal.roles)) or "(none)"


def _reversible_columns(dataset: str, template: dict) -> frozenset[str]:
    """Curated columns of ``dataset`` that are tokenized by a reversible template primitive."""
    primitives: dict[str, str] = {}
    for ft in template["recordTransformations"]["fieldTransformations"]:
        (kind,) = ft["primitiveTransformation"]
        for field in ft["fields"]:
            primitives[field["name"]] = kind
    columns = set()
    for fpol in dlp_configs.load_policy().dataset(dataset).fields.values():
        for out in fpol.curated:
            if out.handling == "tokenize" and out.builtin is None:
                if primitives.get(out.column) in REVERSIBLE_PRIMITIVES:
                    columns.add(out.column)
    return frozenset(columns)


class Reidentifier:
    """Audited re-identification of one curated dataset in prod (see the module docstring).

    ``principal`` (optional) names the caller in the audit record of a refused construction.
    One instance may serve many requests; requests are serialized (the engine is not thread-safe).
    """

    def __init__(
        self,
        dataset: str,
        env: str,
        key_provider,
        audit: AuditLog,
        *,
        principal: Principal | None = None,
    ):
        self._dataset = dataset
        self._env = env
        self._audit = audit
        self._lock = threading.Lock()
        self.last_failures: dict[str, int] = {}

        def refuse(error: Exception) -> NoReturn:
            self._deny(principal, (), 0, "", None, error)

        if env != PROD:
            refuse(ReidentificationDenied(f"re-identification never runs in {env}"))
        key_env = getattr(key_provider, "env", None)
        if key_env != PROD:
            refuse(ReidentificationDenied(f"re-identification needs prod keys, not keys of env {key_env!r}"))
        templates = dlp_configs.load_templates()
        if dataset not in templates:
            refuse(ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(sorted(templates))}"))
        self._reversible = _reversible_columns(dataset, templates[dataset])
        self._engine = LocalDeidEngine(templates[dataset], key_provider.resolver())

    @property
    def reversible_fields(self) -> frozenset[str]:
        """The columns this dataset allows to re-identify."""
        return self._reversible

    def reidentify(
        self,
        rows: list[dict],
        fields: list[str],
        principal: Principal,
        purpose: str,
        ticket: str | None = None,
    ) -> list[dict]:
        """Copies of ``rows`` with ``fields`` turned back into raw text, after an "allowed" audit record.

        A token that does not decrypt becomes ``None``; ``last_failures`` counts them per field.
        Raises ``ReidentificationDenied`` (role), ``ValueError`` (purpose, fields), ``TypeError``
        (rows) — each audited as denied — or ``AuditFailed`` when the audit log fails.
        """
        if not isinstance(principal, Principal):
            raise TypeError("principal must be a Principal")
        names = tuple(str(f) for f in fields) if isinstance(fields, (list, tuple)) else ()
        count = len(rows) if isinstance(rows, list) else 0
        purpose_text = purpose.strip() if isinstance(purpose, str) else ""
        ticket_text = (ticket.strip() or None) if isinstance(ticket, str) else None

        def deny(error: Exception) -> NoReturn:
            self._deny(principal, names, count, purpose_text, ticket_text, error)

        if ROLE not in principal.roles:
            deny(ReidentificationDenied(f"principal {principal.name!r} does not hold the {ROLE} role"))
        if ticket is not None and not isinstance(ticket, str):
            deny(ValueError("ticket must be a string or None"))
        if len(purpose_text) < MIN_PURPOSE_CHARS:
            deny(
                ValueError(f"purpose must state the justification (at least {MIN_PURPOSE_CHARS} characters)")
            )
        if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
            deny(TypeError("fields must be a list of column names"))
        if not fields:
            deny(ValueError("name at least one field to re-identify"))
        for name in names:
            if name not in self._reversible:
                deny(
                    ValueError(
                        f"field {name!r} cannot be re-identified in {self._dataset}: only curated columns "
                        f"tokenized reversibly can ({', '.join(sorted(self._reversible))})"
                    )
                )
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            deny(TypeError("rows must be a list of dicts"))
        unique = tuple(dict.fromkeys(names))
        record = self._record(principal, ROLE, unique, count, purpose_text, ticket_text, "allowed", None)
        try:
            self._audit.append(record)
        except Exception as err:  # any sink failure (OSError, S3, ...) must stop the request
            raise AuditFailed(
                f"the audit log could not record this re-identification ({type(err).__name__}); "
                "nothing was re-identified"
            ) from err
        with self._lock:
            before = dict(self._engine.failures)
            out = self._engine.reidentify(copy.deepcopy(rows), list(unique))
            self.last_failures = {
                name: self._engine.failures[name] - before.get(name, 0)
                for name in unique
                if self._engine.failures[name] - before.get(name, 0)
            }
        return out

    def _record(
        self,
        principal: Principal | None,
        role: str,
        fields: tuple[str, ...],
        count: int,
        purpose: str,
        ticket: str | None,
        outcome: str,
        reason: str | None,
    ) -> AuditRecord:
        return AuditRecord(
            actor=principal.name if principal is not None else "unknown",
            role=role,
            action=ACTION,
            dataset=str(self._dataset),
            fields=fields,
            row_count=count,
            purpose=purpose,
            ticket=ticket,
            env=str(self._env),
            at=utc_now(),
            outcome=outcome,
            reason=reason,
        )

    def _deny(
        self,
        principal: Principal | None,
        fields: tuple[str, ...],
        count: int,
        purpose: str,
        ticket: str | None,
        error: Exception,
    ) -> NoReturn:
        """Audit the refusal, then raise ``error`` (with the audit failure as its cause if any)."""
        record = self._record(
            principal, _roles_text(principal), fields, count, purpose, ticket, "denied", str(error)
        )
        try:
            self._audit.append(record)
        except Exception as err:  # the request is refused either way; keep the audit error visible
            raise error from err
        raise error


# --------------------------------------------------------------------------------------------------
# CLI


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="riskpipe reidentify",
        description="Re-identify tokenized columns of curated rows (prod only, COMPLIANCE_OFFICER, audited).",
    )
    parser.add_argument("--dataset", required=True, help="curated dataset the rows come from")
    parser.add_argument("--env", required=True, help="must be prod; any other env is refused (and audited)")
    parser.add_argument(
        "--key_store",
        "--key-store",
        dest="key_store",
        required=True,
        help="KMS-wrapped key store (s3:// or path)",
    )
    parser.add_argument(
        "--audit-log",
        "--audit_log",
        dest="audit_log",
        required=True,
        help="hash-chained JSON lines audit log",
    )
    parser.add_argument("--actor", required=True, help="the person or service account asking")
    parser.add_argument("--role", action="append", required=True, help="a role the actor holds (repeatable)")
    parser.add_argument(
        "--purpose", required=True, help=f"justification, at least {MIN_PURPOSE_CHARS} characters"
    )
    parser.add_argument("--ticket", default=None, help="case or ticket reference")
    parser.add_argument(
        "--field", action="extend", nargs="+", required=True, help="column to re-identify (repeatable)"
    )
    parser.add_argument("--input", required=True, help="curated rows as JSON lines ('-' for stdin)")
    return parser


def _read_rows(path: str) -> list[dict]:
    try:
        handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # closed below
    except OSError as err:
        raise _UsageError(f"cannot read --input {path}: {err.strerror}") from None
    try:
        rows = []
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise _UsageError(f"--input line {number} is not JSON") from None
            if not isinstance(row, dict):
                raise _UsageError(f"--input line {number} is not a JSON object")
            rows.append(row)
        return rows
    finally:
        if handle is not sys.stdin:
            handle.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``riskpipe reidentify ...``: 0 done, 2 refused or usage error, 1 audit/key/KMS failure."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except _UsageError as err:
        print(f"riskpipe reidentify: error: {err}", file=sys.stderr)
        return 2
    try:
        principal = Principal(args.actor, frozenset(args.role))
        reidentifier = Reidentifier(
            args.dataset,
            args.env,
            KmsKeyProvider(args.key_store, env=args.env),
            JsonlAuditLog(args.audit_log),
            principal=principal,
        )
        rows = _read_rows(args.input)  # after the env check, so a nonprod attempt is always audited
        out = reidentifier.reidentify(rows, args.field, principal, args.purpose, args.ticket)
    except _UsageError as err:
        print(f"riskpipe reidentify: error: {err}", file=sys.stderr)
        return 2
    except (ReidentificationDenied, ValueError, TypeError) as err:
        print(f"riskpipe reidentify: refused: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # one line, no traceback; messages here carry no row values
        if os.environ.get("RISKPIPE_DEBUG"):
            raise
        print(f"riskpipe reidentify: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    for row in out:
        sys.stdout.write(json.dumps(row, ensure_ascii=True) + "\n")
    sys.stdout.flush()
    for name, failed in sorted(reidentifier.last_failures.items()):
        print(
            f"riskpipe reidentify: {failed} value(s) of {name} did not re-identify (left empty)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
