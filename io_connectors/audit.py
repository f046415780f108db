"""The audit log: who re-identified what, why, and whether they were allowed.

What: ``AuditRecord`` (one access decision), the ``AuditLog`` interface every audit sink
implements, and ``JsonlAuditLog``, a local append-only JSON Lines file whose entries form a SHA-256
hash chain. The audit zone (S3 Object Lock) implements the same interface later.

Why: re-identification turns tokens back into personal data, so every attempt — allowed or denied —
leaves a record before any value is handed out (ARCHITECTURE §6–7). A record names the actor, role,
dataset, field NAMES, row count, purpose and ticket; it never holds a data value or a token, so the
audit log itself is not personal data and can be kept for years.

Chain format (one JSON object per line, canonical JSON: sorted keys, no whitespace, ASCII only)::

    {"hash": "<sha256 hex>", "prev": "<hash of the previous line, or 64 zeros>", "record": {...}}

``hash`` is SHA-256 over the canonical JSON of ``{"prev": ..., "record": ...}``. ``verify()``
recomputes the chain and raises ``AuditChainError`` naming the first bad line, so an edited line,
a removed line and reordered lines are all detected. What a hash chain alone cannot detect is
truncation at the end (dropping the newest lines, or the whole file): keep a hash
``append`` returned somewhere else and pass it to ``verify(expected_head=...)`` to check that too;
the audit zone closes this gap for good with Object Lock.

Concurrency: ``append`` holds an exclusive ``flock`` while it reads the previous hash and writes its
line with ``O_APPEND``, so writers on one host never interleave or fork the chain (``flock`` is
advisory and host-local; NFS and other hosts are out of scope). Each line is fsynced before
``append`` returns: a caller that hands out data after ``append`` knows the record is on disk. The
file is created with mode 0600; an existing log readable by group/others, or a symlink, is refused.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Protocol

from transforms.timeutil import format_micros, now_micros

__all__ = ["GENESIS", "AuditChainError", "AuditLog", "AuditRecord", "JsonlAuditLog", "utc_now"]

GENESIS = "0" * 64
OUTCOMES = ("allowed", "denied")
_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_HASH = re.compile(r"[0-9a-f]{64}")
_LINE_KEYS = {"prev", "record", "hash"}
_TAIL_CHUNK = 4096


class AuditChainError(Exception):
    """The audit log was modified, truncated or reordered (or is not an audit log)."""


def utc_now() -> str:
    """The canonical UTC text of now, as ``AuditRecord.at`` wants it."""
    return format_micros(now_micros())


@dataclass(frozen=True)
class AuditRecord:
    """One access decision. Names and counts only: never a data value or a token."""

    actor: str
    role: str
    action: str
    dataset: str
    fields: tuple[str, ...]
    row_count: int
    purpose: str
    ticket: str | None
    env: str
    at: str
    outcome: str
    reason: str | None

    def __post_init__(self):
        for name in ("actor", "role", "action", "dataset", "purpose", "env"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"AuditRecord.{name} must be a string")
        for name in ("ticket", "reason"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"AuditRecord.{name} must be a string or None")
        if not self.action:
            raise ValueError("AuditRecord.action must not be empty")
        if not isinstance(self.fields, tuple) or not all(isinstance(f, str) for f in self.fields):
            raise ValueError("AuditRecord.fields must be a tuple of field names")
        if isinstance(self.row_count, bool) or not isinstance(self.row_count, int) or self.row_count < 0:
            raise ValueError("AuditRecord.row_count must be an int >= 0")
        if not isinstance(self.at, str) or not _AT.fullmatch(self.at):
            raise ValueError("AuditRecord.at must be canonical UTC text YYYY-MM-DDTHH:MM:SS.ffffffZ")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"AuditRecord.outcome must be one of {OUTCOMES}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["fields"] = list(self.fields)
        return out

    @classmethod
    def from_dict(cls, data: object) -> AuditRecord:
        if not isinstance(data, dict):
            raise ValueError("an audit record must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) != names:
            raise ValueError(f"an audit record has exactly the keys {sorted(names)}")
        fields = data["fields"]
        if not isinstance(fields, list):
            raise ValueError("AuditRecord.fields must be a list")
        return cls(**{**data, "fields": tuple(fields)})


class AuditLog(Protocol):
    """Where access decisions go. ``append`` must be durable before it returns."""

    def append(self, record: AuditRecord) -> str:
        """Store ``record``; return the entry's hash. Raises (never swallows) when it cannot."""
        ...

    def verify(self) -> int:
        """The number of entries; ``AuditChainError`` if the log was tampered with."""
        ...


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _entry_hash(prev: str, record: dict) -> str:
    return hashlib.sha256(_canonical({"prev": prev, "record": record})).hexdigest()


def _line(prev: str, record: dict) -> tuple[str, bytes]:
    digest = _entry_hash(prev, record)
    return digest, _canonical({"prev": prev, "record": record, "hash": digest}) + b"\n"


def _check_line(raw: bytes, where: str) -> tuple[str, str]:
    """(prev, hash) of one line (without its newline) after checking it is intact on its own."""
    try:
        entry = json.loads(raw)
    except ValueError:
        raise AuditChainError(f"{where} is not JSON") from None
    if not isinstance(entry, dict) or set(entry) != _LINE_KEYS:
        raise AuditChainError(f"{where} is not an audit entry (keys {sorted(_LINE_KEYS)})")
    prev, record, digest = entry["prev"], entry["record"], entry["hash"]
    if not isinstance(prev, str) or not _HASH.fullmatch(prev):
        raise AuditChainError(f"{where}: 'prev' is not a SHA-256 hex digest")
    try:
        AuditRecord.from_dict(record)
    except (TypeError, ValueError) as err:
        raise AuditChainError(f"{where}: the record is invalid ({err})") from None
    if digest != _entry_hash(prev, record):
        raise AuditChainError(f"{where} was modified (its hash does not match its content)")
    if raw != _canonical(entry):
        raise AuditChainError(f"{where} was modified (it is not in canonical form)")
    return prev, digest


class JsonlAuditLog:
    """An append-only, hash-chained JSON Lines audit log on the local filesystem (see module docs)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        if not self.path:
            raise ValueError("the audit log needs a path")

    def __repr__(self) -> str:
        return f"JsonlAuditLog({self.path!r})"

    def _open(self, flags: int) -> int:
        fd = os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise AuditChainError(f"audit log {self.path} is not a regular file")
            if info.st_mode & 0o077:
                raise PermissionError(
                    f"audit log {self.path} is accessible to group/others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def append(self, record: AuditRecord) -> str:
        if not isinstance(record, AuditRecord):
            raise TypeError("append takes an AuditRecord")
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        fd = self._open(os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close()
            digest, line = _line(self._head(fd), record.to_dict())
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:  # O_APPEND: every write lands at the end; the lock keeps others out
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            except OSError:
                # leave no half line behind (it would block every later append); the caller fails closed
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                raise
            return digest
        finally:
            os.close(fd)

    def _head(self, fd: int) -> str:
        """Hash of the last entry (GENESIS when empty), read under the caller's lock."""
        size = os.fstat(fd).st_size
        if size == 0:
            return GENESIS
        pos = max(0, size - _TAIL_CHUNK)
        tail = os.pread(fd, size - pos, pos)
        if not tail.endswith(b"\n"):
            raise AuditChainError(f"audit log {self.path}: the last line is incomplete; run verify")
        while pos > 0 and b"\n" not in tail[:-1]:
            start = max(0, pos - _TAIL_CHUNK)
            tail = os.pread(fd, pos - start, start) + tail
            pos = start
        last = tail[:-1].rsplit(b"\n", 1)[-1]
        _, digest = _check_line(last, f"audit log {self.path}: the last line")
        return digest

    def verify(self, expected_head: str | None = None) -> int:
        """Recompute the chain; return the number of entries or raise ``AuditChainError``.

        ``expected_head`` (a hash ``append`` returned earlier, kept elsewhere) also proves the log
        was not cut back to before that entry: the entry must still be in the chain. A missing
        file counts as an empty log.
        """
        try:
            fd = self._open(os.O_RDONLY)
        except FileNotFoundError:
            count, seen = 0, False
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # no half-written line from a concurrent append
                with os.fdopen(os.dup(fd), "rb") as handle:
                    count, seen = self._walk(handle, expected_head)
            finally:
                os.close(fd)
        if expected_head is not None and not seen:
            raise AuditChainError(
                f"audit log {self.path}: the entry {expected_head} is missing "
                f"(entries were removed from the end, or the log was replaced)"
            )
        return count

    def _walk(self, handle, expected_head: str | None) -> tuple[int, bool]:
        """(entries, whether ``expected_head`` is among them)."""
        prev = GENESIS
        number = 0
        seen = False
        for number, raw in enumerate(handle, start=1):
            where = f"audit log {self.path}: line {number}"
            if not raw.endswith(b"\n"):
                raise AuditChainError(f"{where} is incomplete (no newline)")
            line_prev, digest = _check_line(raw[:-1], where)
            if line_prev != prev:
                raise AuditChainError(
                    f"{where} does not follow line {number - 1} "
                    f"(a line was removed, reordered or altered before it)"
                    if number > 1
                    else f"{where} is not the first entry (lines were removed or reordered)"
                )
            prev = digest
            seen = seen or digest == expected_head
        return number, seen
