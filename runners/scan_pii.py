"""Scan pipeline outputs and logs for raw personal data (``riskpipe scan-pii PATH...``).

Why: riskpipe promises that raw PII never leaves the restricted zones. Tests and CI run this scanner on
every file the demo writes (lake Parquet, warehouse DuckDB, JSON lines, Avro, logs) so that a leak fails
the build instead of shipping. It is a *detector of mistakes*, not a DLP product: it looks for the
shapes our raw inputs have, with safeguards that keep it quiet on what the pipeline legitimately writes
(tokens, HMAC fingerprints, CIDR prefixes, timestamps, scores).

Detectors (a hit names one of them):

``pan``
    13–19 digits, optionally in groups split by one kind of separator (space or dash; first group 4–6
    digits, the others 3–6), IIN starting with 3, 4, 5 or 6, Luhn-valid. The digits must not touch a
    letter or another digit (so hex digests and longer digit runs never match) and must not be either
    side of a decimal point (so ``0.5488135039273248`` scores are not cards). A single group of 13–19
    digits inside a dashed/spaced run (``order-4111111111111111``) is checked on its own too.
``ipv4``
    Dotted quads, octets 0–255 without leading zeros, not part of a longer dotted or alphanumeric run
    (``1.2.3.4.5``, ``v1.2.3.4``), not followed by ``/<len>`` (a CIDR prefix is a deliberate
    generalisation). ``127.0.0.1`` and ``0.0.0.0`` are not reported; every other address is, including
    netmasks and documentation ranges.
``ipv6``
    Candidates with at least two colons, validated by :mod:`ipaddress`; they must contain ``::`` or a hex
    letter and at least four hex digits (so ``10:15:00`` and ``a::b`` are not addresses), must not be
    followed by ``/<len>`` and must not be ``::`` or ``::1``. A key glued to the address
    (``ip:2001:db8::1``) is stripped before validation.
``dob``
    ``YYYY-MM-DD`` dates that are valid and plausible birth dates (year 1900 .. this year − 16), either in
    a column/key whose own name (last path segment) says so (``dob``, ``*birth*``, ``born``; camelCase
    too) or with the word dob/birth/born in the 20 characters before the date in any text. Event
    timestamps are therefore never flagged.
``email``
    RFC 5322-ish ``local@domain.tld`` (ASCII, dotted domain, alphabetic TLD).
``known``
    Exact, case-sensitive substring match against a list of known raw values (the generator's card
    fingerprints, names, IPs …); values shorter than 6 characters are ignored as too noisy.

Evidence is always redacted: the first two characters, an ellipsis and the length (``41…(16)``); a
``known`` hit also names the value's 1-based position in the list (``#3 Al…(12)``), which is its line
number in the ``--known-values`` file. Paths, locations and evidence are printed with non-printable
characters escaped, and JSON keys that are themselves PII are reported and shown as ``<redacted-key>``.

Files (chosen by extension, else by magic bytes; directories are walked recursively, symlinked
directories are not followed):

* Parquet: string/binary columns value by value, nested columns (struct/list/map) leaf by leaf with
  their field path, date/timestamp columns only when their name says birth date. Streamed by batches.
  Location ``column.path:row``.
* JSON lines (``.jsonl``/``.ndjson``/``.json``): each line that parses as JSON is walked (strings and
  integers); other lines are scanned as text. A ``.json`` file up to 32 MiB is first tried as one
  document. Location ``line:key.path`` (``key.path`` for a whole document).
* Avro: every record's string/bytes leaves (and birth-named dates) with field path. Location
  ``field.path:record``.
* DuckDB: opened read-only with external access off; every base table of every schema, every column
  that is not numeric/boolean/UUID/time (dates only when birth-named) cast to VARCHAR, streamed in
  Arrow batches. Location ``schema.table.column:rowid``.
* Everything else that is text (``.log``, ``.txt``, ``.csv``, gzip/bzip2/xz-compressed text …): line by
  line; lines longer than 1 Mi characters are scanned in overlapping chunks. Location ``line``.
* Other binary files are skipped with a note, as are files that cannot be read (also with a note).

Numbers in typed formats (Parquet/Avro/DuckDB integer columns) are not scanned: ids and epoch values
there would drown the report. Integers in JSON are scanned, because there the number/string choice is
incidental.

Options: ``--allow DETECTOR:COLUMN_GLOB`` accepts a detector's hits (``*`` = any detector) in columns
whose path matches (``column.path`` without list indices, ``schema.table.column`` for DuckDB, the
empty string for text lines); ``--exclude PATH_GLOB`` skips files, directories and DuckDB tables
(``schema.table``); the ``--known-values`` file itself is never scanned. Exit status: 0 clean, 1 hits,
2 usage error (one line on stderr). Unreadable files are notes, not errors.

Limits: CSV is scanned as text (no header, so the ``dob`` column rule does not apply there); values in
DuckDB views are not scanned (their base tables are); overlapping known values report one of them.

Library use::

    report = scan_paths(["out/"], known_values=raw_values, allow=["ipv4:quarantine.*"])
    assert not report.hits
"""

from __future__ import annotations

import argparse
import bz2
import datetime as dt
import fnmatch
import glob
import gzip
import ipaddress
import lzma
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

DETECTORS = ("pan", "ipv4", "ipv6", "dob", "email", "known")

#: Known values shorter than this are ignored (too many accidental matches).
KNOWN_MIN_LEN = 6
#: Rows per Arrow batch read from Parquet / DuckDB: bounds memory per column.
BATCH_ROWS = 8192
#: A text line longer than this (characters) is scanned in overlapping chunks.
_CHUNK_CHARS = 1 << 20
#: Characters a chunk shares with the previous one; a hit up to ~_OVERLAP - _CONTEXT long is never lost.
_OVERLAP = 1024
#: Right-hand context a detector may look at (CIDR suffix, lookaheads); hits ending closer than this to a
#: chunk end are left to the next chunk.
_CONTEXT = 64
#: A .json file up to this size is first parsed as a single document.
_JSON_DOC_MAX_BYTES = 32 << 20
#: Memory cap for DuckDB while scanning a warehouse file.
_DUCKDB_MEMORY_LIMIT = "256MB"

# --------------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------------

_HAS_DIGIT = re.compile(r"[0-9]")

# A run of digits with optional single space/dash separators, not preceded by a letter/digit nor by
# "<digit>." (the fractional part of a decimal). What follows the run is checked in Python. Patterns
# start with a character class and check what precedes with a lookbehind *after* it, so that the regex
# engine can skip ahead to candidate characters instead of trying a match at every position.
_PAN_RUN = re.compile(r"[0-9](?<![0-9A-Za-z][0-9])(?<![0-9]\.[0-9])(?:[ -]?[0-9]){12,}")
_PAN_SEP = re.compile(r"[ -]")
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

_IPV4_HINT = re.compile(r"\.[0-9]{1,3}\.[0-9]")
_IPV4 = re.compile(
    r"[0-9](?<![0-9A-Za-z][0-9])(?<![0-9]\.[0-9])[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
    r"(?![0-9A-Za-z]|\.[0-9]|/[0-9])"
)
_IPV4_IGNORED = frozenset({"127.0.0.1", "0.0.0.0"})  # noqa: S104 - values we skip, not a bind address

# Every address _ipv6_ok accepts has "::" or a group with a hex letter next to a colon; this cheap test
# (it starts with a literal) spares the token regex on the many texts with colons (times, JSON, URLs).
_IPV6_HINT = re.compile(
    r":(?::|[0-9]{0,3}[A-Fa-f]|(?<=[A-Fa-f]:)|(?<=[A-Fa-f][0-9]:)|(?<=[A-Fa-f][0-9]{2}:)|(?<=[A-Fa-f][0-9]{3}:))"
)
# A token that contains a colon: an optional key glued in front ("ip:") is stripped later.
_IPV6_TOKEN = re.compile(r"(?<![0-9A-Za-z_:.])[0-9A-Za-z_.]*:[0-9A-Za-z_.:]*")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_HEX_LETTER = re.compile(r"[A-Fa-f]")
_IPV6_IGNORED = frozenset({ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")})

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9_][A-Za-z0-9._%+-]*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)

_DATE = re.compile(r"(?<![0-9])(19[0-9]{2}|20[0-9]{2})-([01][0-9])-([0-3][0-9])(?![0-9])")
_BIRTH_WORD = re.compile(r"[dDbB](?:[oO][bB]|[iI][rR][tT][hH]|[oO][rR][nN])")  # dob|birth|born, any case
_BIRTH_WINDOW = 20
# Column/key names that hold a birth date: dob, customer.dob, dob_raw, userDob, DOB, date_of_birth,
# birthDate, born_on. Not: adobe_id, doberman.
_BIRTH_COLUMN = re.compile(
    r"(?<![A-Za-z])dob(?![a-z])|(?<![A-Z])D(?:ob|OB)(?![a-z])|birth|Birth|BIRTH"
    r"|(?<![A-Za-z])born(?![a-z])|(?<![A-Z])B(?:orn|ORN)(?![a-z])"
)

# (detector, evidence, start, end) - start/end index the scanned text.
_Match = tuple[str, str, int, int]


def _redact(value: str) -> str:
    """First two characters, an ellipsis and the length: enough to find the value, never the value."""
    if len(value) <= 4:
        return f"…({len(value)})"
    return f"{value[:2]}…({len(value)})"


def _luhn_ok(digits: str) -> bool:
    total = 0
    double = False
    for ch in reversed(digits):
        n = ord(ch) - 48
        total += _LUHN_DOUBLE[n] if double else n
        double = not double
    return total % 10 == 0


def _pan_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] in "3456" and _luhn_ok(digits)


def _find_pan(text: str, out: list[_Match]) -> None:
    n = len(text)
    for m in _PAN_RUN.finditer(text):
        start, end = m.span()
        # Does the run end inside a word (hex digest) or as the integer part of a decimal?
        glued = end < n and (
            text[end].isalpha() or (text[end] == "." and end + 1 < n and text[end + 1].isdigit())
        )
        run = m.group()
        if " " not in run and "-" not in run:
            if not glued and _pan_ok(run):
                out.append(("pan", _redact(run), start, end))
            continue
        # Grouped digits: (offset in run, group) pairs, then windows of whole groups.
        groups: list[tuple[int, str]] = []
        seps: list[str] = []
        pos = 0
        for sep in _PAN_SEP.finditer(run):
            groups.append((pos, run[pos : sep.start()]))
            seps.append(sep.group())
            pos = sep.end()
        if not glued:  # a glued last group belongs to the word, the groups before it may be a card
            groups.append((pos, run[pos:]))
        i = 0
        while i < len(groups):
            found = _pan_window(groups, seps, i)
            if found is not None:
                j = found
                s = start + groups[i][0]
                e = start + groups[j][0] + len(groups[j][1])
                out.append(("pan", _redact(text[s:e]), s, e))
                i = j + 1
            else:
                i += 1


def _pan_window(groups: list[tuple[int, str]], seps: list[str], i: int) -> int | None:
    """Index of the last group of a card number starting at group ``i``, or None."""
    first = groups[i][1]
    if 13 <= len(first) <= 19:
        return i if _pan_ok(first) else None
    if not 4 <= len(first) <= 6:
        return None
    digits = first
    for j in range(i + 1, len(groups)):
        group = groups[j][1]
        if not 3 <= len(group) <= 6 or seps[j - 1] != seps[i]:
            return None
        digits += group
        if len(digits) > 19:
            return None
        if len(digits) >= 13 and _pan_ok(digits):
            return j
    return None


def _find_ipv4(text: str, out: list[_Match]) -> None:
    for m in _IPV4.finditer(text):
        value = m.group()
        if value in _IPV4_IGNORED:
            continue
        if any((len(o) > 1 and o[0] == "0") or int(o) > 255 for o in value.split(".")):
            continue
        out.append(("ipv4", _redact(value), m.start(), m.end()))


def _ipv6_ok(candidate: str) -> bool:
    if not _IPV6_CHARS.fullmatch(candidate):
        return False
    if "::" not in candidate and not _HEX_LETTER.search(candidate):
        return False  # 10:15:00, 1:2:3:4:5:6:7:8 - times and counters, not addresses
    if "." not in candidate and len(candidate) - candidate.count(":") < 4:
        return False  # a::b, 1::2 - too short to be anything but a coincidence
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return address not in _IPV6_IGNORED


def _find_ipv6(text: str, out: list[_Match]) -> None:
    n = len(text)
    for m in _IPV6_TOKEN.finditer(text):
        end = m.end()
        if end + 1 < n and text[end] == "/" and text[end + 1].isdigit():
            continue  # 2001:db8::/48 - a CIDR prefix
        token = m.group().rstrip(".")
        if token.endswith(":") and not token.endswith("::"):
            token = token[:-1]
        start = m.start()
        for _ in range(3):  # "ip:2001:db8::1", "client_ip:addr:..." - drop glued key names
            if token.count(":") < 2:
                break
            if _ipv6_ok(token):
                out.append(("ipv6", _redact(token), start, start + len(token)))
                break
            head, _, rest = token.partition(":")
            if not head or head.isdigit():
                break
            start += len(head) + 1
            token = rest


def _find_email(text: str, out: list[_Match]) -> None:
    for m in _EMAIL.finditer(text):
        out.append(("email", _redact(m.group()), m.start(), m.end()))


def _find_dob(text: str, birth_column: bool, max_year: int, out: list[_Match]) -> None:
    for m in _DATE.finditer(text):
        year, month, day = (int(g) for g in m.groups())
        if not 1900 <= year <= max_year:
            continue
        start = m.start()
        if not birth_column and not _BIRTH_WORD.search(text, max(0, start - _BIRTH_WINDOW), start):
            continue
        try:
            dt.date(year, month, day)
        except ValueError:
            continue
        out.append(("dob", _redact(m.group()), start, m.end()))


def _max_birth_year() -> int:
    return dt.date.today().year - 16


class KnownValues:
    """Known raw values compiled for fast exact substring search (one regex over a trie of the values).

    ``values`` is the list as given (e.g. the lines of ``--known-values``); a hit reports the 1-based
    position of the value in it. Values shorter than :data:`KNOWN_MIN_LEN` are ignored; surrounding
    whitespace is kept (the match is exact).
    """

    _TRIE_MAX_LEN = 200  # longer values are searched with str.find (keeps the regex shallow)

    def __init__(self, values: Iterable[str]) -> None:
        self._position: dict[str, int] = {}
        for number, value in enumerate(values, start=1):
            if len(value) >= KNOWN_MIN_LEN and value.strip() and value not in self._position:
                self._position[value] = number
        short = [v for v in self._position if len(v) <= self._TRIE_MAX_LEN]
        self._long = [v for v in self._position if len(v) > self._TRIE_MAX_LEN]
        self._regex: re.Pattern[str] | None = None
        if short:
            try:
                self._regex = re.compile(_trie_pattern(short))
            except (RecursionError, re.error, OverflowError):
                self._long.extend(short)  # pathological sets: fall back to plain substring search

    def __len__(self) -> int:
        return len(self._position)

    def find(self, text: str, out: list[_Match]) -> None:
        if self._regex is not None:
            for m in self._regex.finditer(text):
                value = m.group()
                out.append(("known", f"#{self._position[value]} {_redact(value)}", m.start(), m.end()))
        for value in self._long:
            at = text.find(value)
            while at >= 0:
                out.append(("known", f"#{self._position[value]} {_redact(value)}", at, at + len(value)))
                at = text.find(value, at + len(value))


def _trie_pattern(words: Sequence[str]) -> str:
    """A regex matching exactly ``words``, shaped as a trie so matching is not O(len(words)) per char."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # end-of-word marker

    def build(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        if len(branches) == 1 and not ends:
            return branches[0]
        body = "(?:" + "|".join(branches) + ")"
        return body + "?" if ends else body  # greedy: the longest known value wins

    return build(root)


def _as_known(known: KnownValues | Iterable[str] | None) -> KnownValues | None:
    if known is None or isinstance(known, KnownValues):
        return known or None
    compiled = KnownValues(known)
    return compiled or None


def _find_all(text: str, birth_column: bool, known: KnownValues | None, max_year: int) -> list[_Match]:
    """Every detector over one text value. Cheap pre-filters first: most values match nothing."""
    out: list[_Match] = []
    if len(text) < KNOWN_MIN_LEN:
        return out
    if _HAS_DIGIT.search(text):
        _find_pan(text, out)
        if "." in text and _IPV4_HINT.search(text):
            _find_ipv4(text, out)
        if "-" in text and (birth_column or _BIRTH_WORD.search(text)):
            _find_dob(text, birth_column, max_year, out)
    if text.count(":") >= 2 and _IPV6_HINT.search(text):
        before = len(out)
        _find_ipv6(text, out)
        if len(out) > before and "." in text:  # ::ffff:203.0.113.5 is one ipv6 hit, not two hits
            spans = [(m[2], m[3]) for m in out[before:]]
            out[:] = [m for m in out if m[0] != "ipv4" or not any(s <= m[2] and m[3] <= e for s, e in spans)]
    if "@" in text:
        _find_email(text, out)
    if known is not None:
        known.find(text, out)
    return out


def is_birth_column(name: str | None) -> bool:
    """Does a column/key name say it holds a birth date (dob, date_of_birth, userDob, born_on …)?

    Only the last segment of a dotted path counts: ``customer.dob`` does, ``dob_check.verified_at``
    does not.
    """
    return bool(name) and _BIRTH_COLUMN.search(name.rpartition(".")[2]) is not None


def scan_text(
    text: str, column: str | None = None, known: KnownValues | Iterable[str] | None = None
) -> list[tuple[str, str]]:
    """Detect raw PII in one value; returns ``(detector, redacted evidence)`` pairs in text order.

    ``column`` is the column/key the value comes from (enables the ``dob`` column rule). ``known`` is a
    :class:`KnownValues` (compile once when scanning many values) or a plain list of values.
    """
    matches = _find_all(text, is_birth_column(column), _as_known(known), _max_birth_year())
    matches.sort(key=lambda m: (m[2], m[3]))
    return [(detector, evidence) for detector, evidence, _, _ in matches]


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One raw value found: where it is and which detector saw it (evidence is redacted)."""

    path: str
    location: str
    detector: str
    evidence: str


@dataclass
class ScanReport:
    """What a scan looked at and found. ``hits`` holds at most ``max_hits``; ``total_hits`` counts all."""

    files: int = 0
    values: int = 0
    hits: list[Hit] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    total_hits: int = 0


_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".avro": "avro",
    ".duckdb": "duckdb",
    ".log": "text",
    ".txt": "text",
    ".csv": "text",
    ".tsv": "text",
}
_COMPRESSED: dict[str, Callable[..., IO[str]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_NOT_JSON = object()


def _printable(text: str) -> str:
    """Escape control characters so data cannot rewrite the terminal or forge extra output lines."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _location(row: str, path: str, row_first: bool) -> str:
    if not path:
        return row or "$"
    if not row:
        return path
    return f"{row}:{path}" if row_first else f"{path}:{row}"


def _ddb_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_DDB_NOT_TEXT = re.compile(
    r"(?:BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT"
    r"|FLOAT|DOUBLE|DECIMAL\(.*\)|UUID|TIME|TIME WITH TIME ZONE|TIME_NS|INTERVAL|BIT|VARINT|BIGNUM)"
)
_DDB_DATE = re.compile(r"DATE|TIMESTAMP.*")


class _Scanner:
    """One scan: options, caches and the report being built."""

    _CACHE_MAX = 100_000

    def __init__(
        self,
        known: KnownValues | None,
        allow: Sequence[tuple[str, str]],
        exclude: Sequence[str],
        max_hits: int | None,
    ) -> None:
        self.known = known
        self.allow = list(allow)
        self.exclude = list(exclude)
        self.max_hits = max_hits
        self.max_year = _max_birth_year()
        self.report = ScanReport()
        self._birth: dict[str, bool] = {}
        self._allowed: dict[tuple[str, str], bool] = {}
        self._keys: dict[str, tuple[str, list[_Match]]] = {}

    # -- bookkeeping ----------------------------------------------------------------------------------

    def is_birth(self, column: str) -> bool:
        cached = self._birth.get(column)
        if cached is None:
            if len(self._birth) >= self._CACHE_MAX:  # JSON with data-driven keys: keep memory bounded
                self._birth.clear()
            cached = self._birth[column] = is_birth_column(column)
        return cached

    def allowed(self, detector: str, column: str) -> bool:
        key = (detector, column)
        cached = self._allowed.get(key)
        if cached is None:
            if len(self._allowed) >= self._CACHE_MAX:
                self._allowed.clear()
            cached = any(
                (d == "*" or d == detector) and fnmatch.fnmatchcase(column, g) for d, g in self.allow
            )
            self._allowed[key] = cached
        return cached

    def record(self, path: str, location: str, column: str, matches: list[_Match]) -> None:
        report = self.report
        if len(matches) > 1:
            matches = sorted(matches, key=lambda m: (m[2], m[3]))
        for detector, evidence, _, _ in matches:
            if self.allow and self.allowed(detector, column):
                continue
            report.total_hits += 1
            if self.max_hits is None or len(report.hits) < self.max_hits:
                report.hits.append(Hit(path, location, detector, evidence))

    def check(self, path: str, text: str, birth: bool, column: str, location: Callable[[], str]) -> None:
        self.report.values += 1
        matches = _find_all(text, birth, self.known, self.max_year)
        if matches:
            self.record(path, location(), column, matches)

    def excluded(self, *names: str) -> bool:
        return any(fnmatch.fnmatchcase(name, g) for g in self.exclude for name in names)

    def skip(self, display: str, reason: str) -> None:
        self.report.skipped.append(f"{display}: {reason}")

    # -- walking --------------------------------------------------------------------------------------

    def scan(self, roots: Sequence[Path]) -> ScanReport:
        for root in roots:
            if root.is_dir():
                self._scan_dir(root)
            else:
                self._scan_file(root)
        return self.report

    def _scan_dir(self, root: Path) -> None:
        def unreadable(err: OSError) -> None:
            self.skip(Path(err.filename or root).as_posix(), f"unreadable ({err.strerror})")

        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
            here = Path(dirpath)
            kept = []
            for name in sorted(dirnames):
                sub = here / name
                if self.excluded(sub.as_posix(), _absolute(sub)):
                    self.skip(sub.as_posix(), "excluded")
                else:
                    kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                self._scan_file(here / name)

    def _scan_file(self, file: Path) -> None:
        display = file.as_posix()
        if self.excluded(display, _absolute(file)):
            self.skip(display, "excluded")
            return
        try:
            kind, opener = _file_kind(file)
            if kind is None:
                self.skip(display, "binary file of unknown type")
                return
            if kind == "parquet":
                self._scan_parquet(file, display)
            elif kind == "avro":
                self._scan_avro(file, display)
            elif kind == "duckdb":
                self._scan_duckdb(file, display)
            elif kind == "json" and opener is None and file.stat().st_size <= _JSON_DOC_MAX_BYTES:
                self._scan_json_document(file, display)
            else:
                with _open_text(file, opener) as stream:
                    self._scan_lines(stream, display, json_lines=kind in ("json", "jsonl"))
            self.report.files += 1
        except Exception as err:  # noqa: BLE001 - one unreadable file must not stop the scan; it is noted
            self.skip(display, f"unreadable ({type(err).__name__}: {_first_line(str(err))})")

    # -- formats --------------------------------------------------------------------------------------

    def _scan_lines(self, stream: IO[str], display: str, json_lines: bool) -> None:
        lineno = 0
        carry: str | None = None  # tail of the previous chunk while inside an over-long line
        while True:
            chunk = stream.readline(_CHUNK_CHARS)
            if carry is None:
                if not chunk:
                    return
                lineno += 1
                if chunk.endswith("\n") or len(chunk) < _CHUNK_CHARS:
                    self._scan_line(display, lineno, chunk.rstrip("\r\n"), json_lines)
                    continue
                self.report.values += 1  # an over-long line counts once, whatever its chunks
                carry = ""
            final = not chunk or chunk.endswith("\n") or len(chunk) < _CHUNK_CHARS
            text = carry + chunk
            if final:
                text = text.rstrip("\r\n")
            # Hits are split between chunks by where they end: the previous chunk took those ending
            # before its last _CONTEXT characters, this one takes the rest (and leaves its own tail).
            lo = len(carry) - _CONTEXT if carry else -1
            hi = len(text) if final else len(text) - _CONTEXT
            matches = [m for m in _find_all(text, False, self.known, self.max_year) if lo < m[3] <= hi]
            if matches:
                self.record(display, str(lineno), "", matches)
            carry = None if final else text[-_OVERLAP:]
            if not chunk:
                return

    def _scan_line(self, display: str, lineno: int, line: str, json_lines: bool) -> None:
        if json_lines and line.lstrip()[:1] in ("{", "["):
            obj = _loads(line)
            if obj is not _NOT_JSON:
                self._walk(display, obj, str(lineno), row_first=True, numbers=True)
                return
        self.check(display, line, False, "", lambda: str(lineno))

    def _scan_json_document(self, file: Path, display: str) -> None:
        obj = _loads(file.read_bytes())
        if obj is _NOT_JSON:  # JSON lines (or not JSON at all) behind a .json name
            with _open_text(file, None) as stream:
                self._scan_lines(stream, display, json_lines=True)
            return
        self._walk(display, obj, "", row_first=True, numbers=True)

    def _scan_avro(self, file: Path, display: str) -> None:
        import fastavro

        with file.open("rb") as fo:
            for index, record in enumerate(fastavro.reader(fo)):
                self._walk(display, record, str(index), row_first=False, numbers=False)

    def _scan_parquet(self, file: Path, display: str) -> None:
        import pyarrow.parquet as pq

        with pq.ParquetFile(file) as pf:
            plan = {}
            for arrow_field in pf.schema_arrow:
                kind = _arrow_kind(arrow_field.type)
                if kind == "date" and not self.is_birth(arrow_field.name):
                    continue
                if kind is not None:
                    plan[arrow_field.name] = kind
            if not plan:
                return
            row0 = 0
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=list(plan)):
                for name, column in zip(batch.schema.names, batch.columns, strict=True):
                    kind = plan[name]
                    if kind == "nested":
                        values = column.to_pylist(maps_as_pydicts="lossy")
                        for i, value in enumerate(values):
                            if value is not None:
                                self._walk(display, value, str(row0 + i), False, False, name, name)
                    else:
                        self._scan_column(display, name, column.to_pylist(), row0, kind == "date")
                row0 += batch.num_rows

    def _scan_column(self, display: str, name: str, values: list[Any], row0: int, dates: bool) -> None:
        """A flat column: the hot loop, kept free of per-value allocations on clean values."""
        birth = self.is_birth(name)
        known, max_year, report = self.known, self.max_year, self.report
        for i, value in enumerate(values):
            if value is None:
                continue
            if type(value) is not str:
                value = value.isoformat() if dates else bytes(value).decode("utf-8", "replace")
            report.values += 1
            matches = _find_all(value, birth, known, max_year)
            if matches:
                self.record(display, f"{name}:{row0 + i}", name, matches)

    def _scan_duckdb(self, file: Path, display: str) -> None:
        import duckdb

        config = {
            "memory_limit": _DUCKDB_MEMORY_LIMIT,
            "threads": 1,
            "enable_external_access": False,  # views or macros in an untrusted file cannot read elsewhere
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
        con = duckdb.connect(str(file), read_only=True, config=config)
        try:
            tables = con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND NOT internal ORDER BY 1, 2"
            ).fetchall()
            for schema, table in tables:
                qualified = f"{schema}.{table}"
                if self.excluded(qualified, f"{display}:{qualified}"):
                    self.skip(f"{display}:{qualified}", "excluded")
                    continue
                columns = con.execute(
                    "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
                    "current_database() AND schema_name = ? AND table_name = ? ORDER BY column_index",
                    [schema, table],
                ).fetchall()
                self._scan_duckdb_table(con, display, schema, table, columns)
        finally:
            con.close()

    def _scan_duckdb_table(
        self, con: Any, display: str, schema: str, table: str, columns: list[tuple[str, str]]
    ) -> None:
        chosen = []
        for name, data_type in columns:
            if _DDB_DATE.fullmatch(data_type):
                if self.is_birth(name):
                    chosen.append(name)
            elif not _DDB_NOT_TEXT.fullmatch(data_type):
                chosen.append(name)
        if not chosen:
            return
        select = ", ".join(f"CAST({_ddb_ident(c)} AS VARCHAR)" for c in chosen)
        query = f"SELECT rowid, {select} FROM {_ddb_ident(schema)}.{_ddb_ident(table)}"  # noqa: S608 - quoted identifiers from the catalog
        prefix = f"{schema}.{table}."
        for batch in con.sql(query).to_arrow_reader(BATCH_ROWS):
            rowids = batch.column(0).to_pylist()
            for index, name in enumerate(chosen, start=1):
                column = prefix + name
                birth = self.is_birth(name)
                for rowid, value in zip(rowids, batch.column(index).to_pylist(), strict=True):
                    if value is not None:
                        self.check(display, value, birth, column, lambda c=column, r=rowid: f"{c}:{r}")

    def _walk(
        self,
        display: str,
        obj: Any,
        row: str,
        row_first: bool,
        numbers: bool,
        path0: str = "",
        rule0: str = "",
    ) -> None:
        """Scan the leaves of a JSON/Avro/Arrow value. ``path`` has list indices, ``rule`` does not."""
        stack: list[tuple[Any, str, str]] = [(obj, path0, rule0)]
        while stack:
            value, path, rule = stack.pop()
            if isinstance(value, str):
                text = value
            elif isinstance(value, dict):
                for key, child in reversed(list(value.items())):
                    label = self._key_label(display, key, row, row_first, path, rule)
                    stack.append((child, _join(path, label), _join(rule, label)))
                continue
            elif isinstance(value, (list, tuple)):
                for i in range(len(value) - 1, -1, -1):
                    stack.append((value[i], f"{path}[{i}]", rule))
                continue
            elif isinstance(value, (bytes, bytearray, memoryview)):
                text = bytes(value).decode("utf-8", "replace")
            elif isinstance(value, bool) or value is None:
                continue
            elif isinstance(value, int):
                if not numbers:
                    continue
                text = str(value)
            elif isinstance(value, dt.date):  # datetime too
                if not self.is_birth(rule):
                    continue
                text = value.isoformat()
            else:
                continue  # floats, decimals, times: no PII shape fits them
            self.check(display, text, self.is_birth(rule), rule, lambda p=path: _location(row, p, row_first))

    def _key_label(self, display: str, key: Any, row: str, row_first: bool, path: str, rule: str) -> str:
        """The key as shown in locations; a key that is itself PII is reported and shown redacted."""
        name = key if isinstance(key, str) else str(key)
        cached = self._keys.get(name)
        if cached is None:
            matches = _find_all(name, False, self.known, self.max_year)
            cached = ("<redacted-key>" if matches else name, matches)
            if len(self._keys) >= self._CACHE_MAX:
                self._keys.clear()
            self._keys[name] = cached
        label, matches = cached
        if matches:
            self.record(display, _location(row, _join(path, label), row_first), _join(rule, label), matches)
        return label


def _absolute(path: Path) -> str:
    return Path(os.path.abspath(path)).as_posix()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _loads(data: str | bytes) -> Any:
    import orjson

    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _arrow_kind(arrow_type: Any) -> str | None:
    """How to scan an Arrow column: "text", "nested", "date" (birth-named only) or None (skip)."""
    import pyarrow as pa

    t = arrow_type
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    types = pa.types
    if (
        types.is_string(t)
        or types.is_large_string(t)
        or types.is_string_view(t)
        or types.is_binary(t)
        or types.is_large_binary(t)
        or types.is_binary_view(t)
        or types.is_fixed_size_binary(t)
    ):
        return "text"
    if types.is_nested(t):
        return "nested"
    if types.is_date(t) or types.is_timestamp(t):
        return "date"
    return None


def _file_kind(file: Path) -> tuple[str | None, Callable[..., IO[str]] | None]:
    """(kind, decompressing opener or None) by extension, else by magic bytes; (None, None) = binary."""
    suffix = file.suffix.lower()
    opener = _COMPRESSED.get(suffix)
    if opener is not None:
        inner = Path(file.stem).suffix.lower()
        kind = _EXTENSIONS.get(inner, "text")
        return (kind, opener) if kind in ("json", "jsonl", "text") else (None, None)
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix], None
    with file.open("rb") as fo:
        head = fo.read(8192)
    if head.startswith(b"PAR1"):
        return "parquet", None
    if head.startswith(b"Obj\x01"):
        return "avro", None
    if head[8:12] == b"DUCK":
        return "duckdb", None
    if head.startswith(b"\x1f\x8b"):
        return "text", gzip.open
    if head.startswith(b"BZh"):
        return "text", bz2.open
    if head.startswith(b"\xfd7zXZ\x00"):
        return "text", lzma.open
    if b"\x00" in head:
        return None, None
    return "text", None


def _open_text(file: Path, opener: Callable[..., IO[str]] | None) -> IO[str]:
    if opener is None:
        return file.open("r", encoding="utf-8", errors="replace")
    return opener(file, "rt", encoding="utf-8", errors="replace")


def parse_allow(rules: Iterable[str]) -> list[tuple[str, str]]:
    """``DETECTOR:COLUMN_GLOB`` strings → (detector, glob) pairs; ValueError says what is wrong."""
    parsed = []
    for rule in rules:
        detector, sep, pattern = rule.partition(":")
        if not sep or not pattern:
            raise ValueError(f"--allow {rule!r}: expected DETECTOR:COLUMN_GLOB, e.g. ipv4:quarantine.*")
        if detector != "*" and detector not in DETECTORS:
            raise ValueError(
                f"--allow {rule!r}: unknown detector {detector!r}; one of {', '.join(DETECTORS)}, *"
            )
        parsed.append((detector, pattern))
    return parsed


def scan_paths(
    paths: list[str],
    known_values: list[str] | KnownValues | None = None,
    allow: list[str] | None = None,
    exclude: list[str] | None = None,
    max_hits: int | None = None,
) -> ScanReport:
    """Scan files and directories (recursively) for raw PII.

    ``allow`` holds ``DETECTOR:COLUMN_GLOB`` rules (detector may be ``*``); the glob is matched against
    the hit's column: ``column.path`` (Parquet/Avro/JSON, list indices dropped),
    ``schema.table.column`` (DuckDB) or the empty string (text lines: only ``*`` matches).
    ``exclude`` globs skip files/directories (matched against the path as walked and the absolute path)
    and DuckDB tables (``schema.table`` or ``file:schema.table``). ``max_hits`` caps the hits kept in
    the report (all are counted in ``total_hits``). Missing paths raise FileNotFoundError and bad
    ``allow`` rules ValueError, before anything is scanned.
    """
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such file or directory: {root}")
    scanner = _Scanner(_as_known(known_values), parse_allow(allow or []), list(exclude or []), max_hits)
    return scanner.scan(roots)


def read_known_values(path: str) -> list[str]:
    """One value per line (UTF-8, line ending stripped); the list index + 1 is the line number."""
    with open(path, encoding="utf-8-sig") as fo:
        return [line.rstrip("\r\n") for line in fo]


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line on stderr, not argparse's usage dump + exit
        raise _UsageError(message)


def build_parser(prog: str = "riskpipe scan-pii") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Look for raw personal data (card numbers, IPs, birth dates, emails, known raw "
        "values) in pipeline outputs and logs. Exit 0: clean, 1: hits, 2: usage error.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories (walked recursively)")
    parser.add_argument("--known-values", metavar="FILE", help="raw values to look for, one per line (UTF-8)")
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="DETECTOR:COLUMN_GLOB",
        help="accept a detector's hits in matching columns, e.g. ipv4:quarantine.* (repeatable)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATH_GLOB",
        help="skip files, directories or DuckDB tables (schema.table) matching the glob (repeatable)",
    )
    parser.add_argument(
        "--max-hits", type=int, default=50, metavar="N", help="print at most N hits (default 50)"
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``riskpipe scan-pii``: prints hits and a summary, returns the exit code."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")  # "…" on an ASCII console must not crash the scan
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(f"scan-pii: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0
    try:
        if args.max_hits < 0:
            raise _UsageError("--max-hits must be >= 0")
        exclude = list(args.exclude)
        known = None
        if args.known_values:
            try:
                known = read_known_values(args.known_values)
            except (OSError, UnicodeDecodeError) as err:
                raise _UsageError(f"cannot read --known-values {args.known_values}: {err}") from None
            # The list of raw values is itself raw PII: never report it against itself.
            exclude.append(glob.escape(_absolute(Path(args.known_values))))
        report = scan_paths(args.paths, known, args.allow, exclude, max_hits=args.max_hits)
    except (_UsageError, ValueError, FileNotFoundError) as err:
        print(f"scan-pii: error: {_printable(str(err))}", file=sys.stderr)
        return 2
    for note in report.skipped:
        print(f"scan-pii: skipped {_printable(note)}", file=sys.stderr)
    for hit in report.hits:
        print(f"{_printable(hit.path)}:{_printable(hit.location)} {hit.detector} {_printable(hit.evidence)}")
    if report.total_hits > len(report.hits):
        print(f"... {report.total_hits - len(report.hits)} more hits not shown (--max-hits {args.max_hits})")
    print(f"scan-pii: {report.files} files, {report.values} values scanned, {report.total_hits} hits")
    return 1 if report.total_hits else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
