"""scan-pii: every detector (hits, near misses, tokens), every file type, the CLI contract."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import random
import time

import duckdb
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runners import scan_pii
from runners.scan_pii import KnownValues, main, scan_paths, scan_text


def _detectors(text: str, column: str | None = None, known=None) -> list[str]:
    return [detector for detector, _ in scan_text(text, column=column, known=known)]


def _token(rng: random.Random) -> str:
    return "TOKEN(44):1." + base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")


# --------------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "card=378282246310005;",  # Amex, 15 digits
        "pan: 6011111111111117 end",
        "3056 930902 5904",  # Diners, 4-6-4 grouping
        "order-4111111111111111",
        "ref 12 4111 1111 1111 1111",  # a short number in front is not part of the card
        "4111 1111 1111 1111 2024abc",  # nor a group glued to a word after it
        '{"pan": 5555555555554444}',
    ],
)
def test_pan_found(text):
    assert _detectors(text) == ["pan"]


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "1234567812345670",  # Luhn passes, but no card network starts with 1
        "04111111111111111000",  # a valid card inside a longer digit run
        "ab4111111111111111cd",  # inside a hex digest
        "cf_4111111111111111e",
        "0.4111111111111111",  # a score's fractional digits
        "5.488135039273248e-05",
        "4111111111111111.25",
        "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6",
        "epoch_us=1732540800000000",
        "4111 11 1111 1111 1111",  # not a card grouping
        "+1 415 555 2671",
    ],
)
def test_pan_near_misses(text):
    assert _detectors(text) == []


@pytest.mark.parametrize(
    "text",
    ["client 203.0.113.7 connected", "ip=198.51.100.23:8443", "10.0.0.1", "from 192.0.2.1."],
)
def test_ipv4_found(text):
    assert _detectors(text) == ["ipv4"]


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3.4.5",  # a version/OID, not an address
        "v1.2.3.4",
        "203.0.113.0/24",  # a deliberately generalised prefix
        "ip_prefix=203.0.113.0/24,",
        "127.0.0.1",
        "0.0.0.0",
        "999.1.1.1",
        "01.02.03.04",
        "3.14159",
    ],
)
def test_ipv4_near_misses(text):
    assert _detectors(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "2001:db8::1",
        "ip:2001:db8::1",
        '"ip_address": "2001:0db8:0000:0000:0000:0000:0000:0001"',
        "[fe80::1ff:fe23:4567:890a]:443",
        "dead:beef::cafe",
        "mapped ::ffff:203.0.113.5 here",  # one ipv6 hit, not an extra ipv4 hit
    ],
)
def test_ipv6_found(text):
    assert _detectors(text) == ["ipv6"]


@pytest.mark.parametrize(
    "text",
    [
        "10:15:00",
        "2026-11-02T10:15:00.5+02:00",
        "at 10:15:00.123 done",
        "2001:db8::/48",
        "::1",
        "::",
        "std::vector",
        "a::b",
        "00:1a:2b:3c:4d:5e",  # a MAC address
        "TOKEN(44):1.AbC TOKEN(44):1.dEf",
    ],
)
def test_ipv6_near_misses(text):
    assert _detectors(text) == []


def test_random_base64url_tokens_are_clean():
    rng = random.Random(20261102)
    tokens = [_token(rng) for _ in range(500)]
    for token in tokens:
        assert scan_text(token) == [], token
    assert scan_text(" ".join(tokens[:100])) == []
    assert scan_text(json.dumps({"card_token": tokens[0], "ip_token": tokens[1], "n": tokens[2]})) == []


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=8, max_size=64), prefix=st.sampled_from(["TOKEN(44):1.", "tok_", ""]))
def test_hypothesis_tokens_are_clean(raw, prefix):
    assert scan_text(prefix + base64.urlsafe_b64encode(raw).decode().rstrip("=")) == []


def test_fingerprints_and_scores_are_clean():
    rng = random.Random(7)
    for i in range(500):
        assert scan_text("cf_" + hashlib.sha256(str(i).encode()).hexdigest()) == []
        assert scan_text(repr(rng.random())) == []
        assert scan_text(repr(rng.random() * 1e-5)) == []


@pytest.mark.parametrize(
    "column", ["dob", "DOB", "date_of_birth", "customer.birthDate", "userDob", "born_on"]
)
def test_dob_in_birth_column(column):
    assert _detectors("1980-05-17", column=column) == ["dob"]
    assert _detectors("1980-05-17T00:00:00", column=column) == ["dob"]


@pytest.mark.parametrize("column", [None, "created_at", "event_date", "adobe_id", "dob_check.verified_at"])
def test_dates_elsewhere_are_not_dob(column):
    assert _detectors("1980-05-17", column=column) == []
    assert _detectors("2001-03-04T10:00:00Z", column=column) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("customer dob: 1980-05-17", True),
        ('{"date_of_birth": "1975-12-31"}', True),
        ("Birth 1999-01-01 recorded", True),
        ("event at 1980-05-17", False),
        ("dob 2020-01-01", False),  # too young to be a customer
        ("dob 1850-01-01", False),
        ("dob 1980-02-30", False),  # not a date
        ("dob_year=1980 created 1990-01-01", False),  # keyword more than 20 characters before
        ("dob 1980-05", False),  # generalised to the month
    ],
)
def test_dob_in_free_text(text, found):
    assert _detectors(text) == (["dob"] if found else [])


@pytest.mark.parametrize(
    "text",
    ["alice@example.com", "contact alice.smith+tag@example.co.uk now", "email=bob_1@mail.example.org."],
)
def test_email_found(text):
    assert _detectors(text) == ["email"]


@pytest.mark.parametrize("text", ["foo@bar", "@handle", "user@localhost", "pkg@1.2.3", "a @ b.com"])
def test_email_near_misses(text):
    assert _detectors(text) == []


def test_known_values():
    known = KnownValues(["short", "Alice Example", "", "203.0.113.99-raw"])
    assert scan_text("hi Alice Example!", known=known) == [("known", "#2 Al…(13)")]
    assert scan_text("hi alice example!", known=known) == []  # case-sensitive
    assert scan_text("short short", known=known) == []  # under 6 characters: ignored
    assert scan_text("x203.0.113.99-rawx", known=known) == [("known", "#4 20…(16)")]
    assert _detectors("Alice Example", known=["Alice Example"]) == ["known"]  # a plain list works too


def test_known_values_many_and_prefixes():
    values = [f"Name{i:05d} Surname" for i in range(5000)] + ["Name00001 Surname Jr"]
    known = KnownValues(values)
    assert scan_text("a Name04999 Surname b", known=known) == [("known", "#5000 Na…(17)")]
    assert scan_text("Name00001 Surname Jr", known=known) == [("known", "#5001 Na…(20)")]  # longest wins
    long_value = "L" * 300
    assert _detectors(f"<{long_value}>", known=[long_value]) == ["known"]


RAW_VALUES = [
    "4111 1111 1111 1111",
    "203.0.113.7",
    "2001:db8::1",
    "1980-05-17",
    "alice.smith@example.com",
]


def test_evidence_is_redacted():
    for raw in RAW_VALUES:
        hits = scan_text(f"dob {raw} ;")
        assert hits, raw
        for _, evidence in hits:
            assert raw not in evidence
            assert evidence == f"{raw[:2]}…({len(raw)})"


def test_printable_escapes_control_characters():
    assert scan_pii._printable("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert scan_pii._printable("plain – text") == "plain – text"


# --------------------------------------------------------------------------------------------------
# File types
# --------------------------------------------------------------------------------------------------


def _found(report) -> set[tuple[str, str]]:
    return {(hit.location, hit.detector) for hit in report.hits}


def _write_parquet(path):
    rng = random.Random(1)
    customer = pa.array(
        [
            {"name_token": _token(rng), "dob": None, "birth_year": 1980},
            {"name_token": _token(rng), "dob": dt.date(1980, 5, 17), "birth_year": 1980},  # planted
            {"name_token": _token(rng), "dob": None, "birth_year": 1991},
            None,
            {"name_token": _token(rng), "dob": None, "birth_year": None},
        ],
        type=pa.struct([("name_token", pa.string()), ("dob", pa.date32()), ("birth_year", pa.int32())]),
    )
    table = pa.table(
        {
            "event_id": [f"pe_{i}" for i in range(5)],
            "ip_address": ["203.0.113.0/24", None, "198.51.100.0/24", "198.51.100.23", "2001:db8::/48"],
            "customer": customer,
            "tags": [["a", "b"], [], None, ["score 0.5488135039273248"], ["x"]],
            "payload": pa.array([b"\x00\x01", b"ok", None, b"", b"TOKEN"], type=pa.binary()),
            "created_at": pa.array([dt.datetime(1990, 1, 1)] * 5, type=pa.timestamp("us")),
            "amount": [4111111111111111] * 5,  # numbers in typed columns are not scanned
        }
    )
    pq.write_table(table, path, row_group_size=2)


def test_parquet(tmp_path):
    path = tmp_path / "payments.parquet"
    _write_parquet(path)
    report = scan_paths([str(path)])
    assert _found(report) == {("ip_address:3", "ipv4"), ("customer.dob:1", "dob")}
    assert report.files == 1 and report.skipped == []
    assert {hit.path for hit in report.hits} == {path.as_posix()}


def test_parquet_without_extension_is_sniffed(tmp_path):
    _write_parquet(tmp_path / "payments-00000-of-00001")
    report = scan_paths([str(tmp_path)])
    assert _found(report) == {("ip_address:3", "ipv4"), ("customer.dob:1", "dob")}


def _jsonl_lines() -> list[str]:
    return [
        json.dumps({"event_id": "pe_1", "ip_prefix": "203.0.113.0/24", "created_at": "1990-01-01T00:00:00Z"}),
        json.dumps(
            {"event_id": "pe_2", "customer": {"contacts": [{"kind": "x"}, {"email": "alice@example.com"}]}}
        ),
        "not json: token TOKEN(44):1.AbC and 10:15:00",
        "",
    ]


def test_jsonl(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(_jsonl_lines()) + "\n")
    report = scan_paths([str(path)])
    assert _found(report) == {("2:customer.contacts[1].email", "email")}
    assert report.values == 3 + 3 + 1 + 1  # lines 1 and 2: three strings each; lines 3 and 4: text


def test_jsonl_gzip_and_json_document(tmp_path):
    with gzip.open(tmp_path / "events.jsonl.gz", "wt") as fo:
        fo.write("\n".join(_jsonl_lines()) + "\n")
    doc = {"items": [{"ip": "203.0.113.0/24"}, {"ip": "198.51.100.23"}]}
    (tmp_path / "doc.json").write_text(json.dumps(doc, indent=2))
    found = {
        (hit.path.rsplit("/", 1)[-1], hit.location, hit.detector) for hit in scan_paths([str(tmp_path)]).hits
    }
    assert found == {
        ("events.jsonl.gz", "2:customer.contacts[1].email", "email"),
        ("doc.json", "items[1].ip", "ipv4"),
    }


def test_json_key_that_is_pii_is_reported_redacted(tmp_path):
    path = tmp_path / "by_user.jsonl"
    path.write_text(json.dumps({"users": {"alice@example.com": {"ip": "203.0.113.0/24"}}}) + "\n")
    report = scan_paths([str(path)])
    assert _found(report) == {("1:users.<redacted-key>", "email")}


def test_avro(tmp_path):
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "Payment",
            "fields": [
                {"name": "event_id", "type": "string"},
                {
                    "name": "card",
                    "type": {
                        "type": "record",
                        "name": "Card",
                        "fields": [
                            {"name": "token", "type": "string"},
                            {"name": "number", "type": ["null", "string"], "default": None},
                        ],
                    },
                },
                {"name": "amount", "type": "long"},
            ],
        }
    )
    records = [
        {
            "event_id": "pe_0",
            "card": {"token": "TOKEN(44):1.AbC", "number": None},
            "amount": 4111111111111111,
        },
        {
            "event_id": "pe_1",
            "card": {"token": "TOKEN(44):1.dEf", "number": "4111 1111 1111 1111"},
            "amount": 1,
        },
    ]
    path = tmp_path / "payments.avro"
    with path.open("wb") as fo:
        fastavro.writer(fo, schema, records)
    report = scan_paths([str(path)])
    assert _found(report) == {("card.number:1", "pan")}


def _write_duckdb(path):
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA quarantine")
    con.execute(
        "CREATE TABLE main.users (id INTEGER, email_token VARCHAR, profile STRUCT(dob DATE, city VARCHAR),"
        " created_at TIMESTAMP, tags VARCHAR[])"
    )
    con.execute(
        "INSERT INTO main.users VALUES"
        " (1, 'TOKEN(44):1.AbC', {'dob': NULL, 'city': 'Paris'}, TIMESTAMP '1990-01-01 10:15:00', ['a']),"
        " (2, 'TOKEN(44):1.dEf', {'dob': DATE '1980-05-17', 'city': 'Lyon'}, TIMESTAMP '1991-02-03', NULL)"
    )
    con.execute("CREATE TABLE quarantine.raw (reason VARCHAR, payload VARCHAR)")
    con.execute(
        "INSERT INTO quarantine.raw VALUES ('bad_value:ip', 'client 2001:db8::7 failed'),"
        " ('bad_value:ip', '203.0.113.0/24')"
    )
    con.close()


def test_duckdb(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    _write_duckdb(path)
    report = scan_paths([str(path)])
    assert _found(report) == {("main.users.profile:1", "dob"), ("quarantine.raw.payload:0", "ipv6")}
    assert report.values == 2 + 2 + 1 + 2 + 2  # email_token, profile, tags (one NULL), reason, payload


def test_typed_dates_are_scanned_only_in_birth_columns(tmp_path):
    day = dt.date(1980, 5, 17)
    pq.write_table(pa.table({"date_of_birth": [None, day], "event_date": [day, day]}), tmp_path / "p.parquet")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE TABLE kyc (dob DATE, created_at DATE, seen TIMESTAMP)")
    con.execute(
        "INSERT INTO kyc VALUES (NULL, DATE '1980-05-17', TIMESTAMP '1980-05-17 10:00:00'),"
        " (DATE '1980-05-17', NULL, NULL)"
    )
    con.close()
    found = {
        (hit.path.rsplit("/", 1)[-1], hit.location, hit.detector) for hit in scan_paths([str(tmp_path)]).hits
    }
    assert found == {("p.parquet", "date_of_birth:1", "dob"), ("w.duckdb", "main.kyc.dob:1", "dob")}


def test_unreadable_files_are_noted(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "broken.duckdb").write_bytes(b"nope")
    report = scan_paths([str(tmp_path)])
    assert report.total_hits == 0
    assert sorted(s.split(": ", 1)[1].split(" ", 1)[0] for s in report.skipped) == [
        "unreadable",
        "unreadable",
    ]


def test_log_and_binary(tmp_path):
    (tmp_path / "job.log").write_text(
        "2026-11-02 10:15:00 INFO parse started\n"
        "2026-11-02 10:15:01 INFO token=TOKEN(44):1.AbC prefix=203.0.113.0/24\n"
        "2026-11-02 10:15:02 WARN mail from alice@example.com bounced\n"
    )
    (tmp_path / "image.bin").write_bytes(b"\x89PNG\x00\x00alice@example.com")
    report = scan_paths([str(tmp_path)])
    assert _found(report) == {("3", "email")}
    assert report.files == 1
    assert report.skipped == [f"{(tmp_path / 'image.bin').as_posix()}: binary file of unknown type"]


def test_long_lines_are_chunked_without_losing_or_doubling_hits(tmp_path, monkeypatch):
    monkeypatch.setattr(scan_pii, "_CHUNK_CHARS", 100)
    monkeypatch.setattr(scan_pii, "_OVERLAP", 40)
    monkeypatch.setattr(scan_pii, "_CONTEXT", 10)
    parts = []
    for pad in range(60):
        parts.append("z" * pad + " 4111 1111 1111 1111 ")
        parts.append("y" * (pad % 7) + " 203.0.113.0/24 ")  # CIDR suffix may land in the next chunk
    line = "".join(parts)
    assert len(line) > 20 * 100
    path = tmp_path / "big.log"
    path.write_text("short line 198.51.100.23\n" + line + "\n" + line + "\nlast alice@example.com")
    report = scan_paths([str(path)])
    counts: dict[tuple[str, str], int] = {}
    for hit in report.hits:
        counts[(hit.location, hit.detector)] = counts.get((hit.location, hit.detector), 0) + 1
    assert counts == {("1", "ipv4"): 1, ("2", "pan"): 60, ("3", "pan"): 60, ("4", "email"): 1}
    assert report.values == 4


def test_allow_and_exclude(tmp_path):
    (tmp_path / "lake" / "curated").mkdir(parents=True)
    (tmp_path / "lake" / "quarantine").mkdir(parents=True)
    _write_parquet(tmp_path / "lake" / "curated" / "payments.parquet")
    _write_parquet(tmp_path / "lake" / "quarantine" / "payments.parquet")
    _write_duckdb(tmp_path / "warehouse.duckdb")
    root = str(tmp_path)

    everything = scan_paths([root])
    assert everything.total_hits == 2 + 2 + 2

    report = scan_paths([root], allow=["ipv4:ip_address", "*:quarantine.*"])
    assert {(h.path.rsplit("/", 2)[-2], h.location) for h in report.hits} == {
        ("curated", "customer.dob:1"),
        ("quarantine", "customer.dob:1"),
        (tmp_path.name, "main.users.profile:1"),
    }

    report = scan_paths([root], exclude=["*/quarantine/*", "quarantine.*"])
    assert report.total_hits == 2 + 1
    assert any(s.endswith("warehouse.duckdb:quarantine.raw: excluded") for s in report.skipped)

    report = scan_paths([root], exclude=["*/lake"])  # a directory is pruned as a whole
    assert report.total_hits == 2 and report.files == 1

    with pytest.raises(ValueError, match="unknown detector"):
        scan_paths([root], allow=["phone:*"])
    with pytest.raises(FileNotFoundError):
        scan_paths([str(tmp_path / "missing")])


def test_max_hits_keeps_counting(tmp_path):
    (tmp_path / "many.log").write_text("".join(f"user{i}@example.com\n" for i in range(30)))
    report = scan_paths([str(tmp_path)], max_hits=5)
    assert len(report.hits) == 5 and report.total_hits == 30


def test_throughput(tmp_path):
    rng = random.Random(3)
    n = 200_000
    table = pa.table(
        {
            "card_token": [_token(rng) for _ in range(n // 4)] * 4,
            "created_at": [f"2026-11-02T10:{i % 60:02d}:00.5+02:00" for i in range(n)],
            "ip_prefix": [f"203.0.{i % 256}.0/24" for i in range(n)],
        }
    )
    pq.write_table(table, tmp_path / "big.parquet")
    started = time.perf_counter()
    report = scan_paths([str(tmp_path)])
    elapsed = time.perf_counter() - started
    assert report.values == 3 * n and report.total_hits == 0
    assert report.values / elapsed > 30_000, f"{report.values / elapsed:,.0f} values/s"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _all_files(tmp_path):
    _write_parquet(tmp_path / "payments.parquet")
    _write_duckdb(tmp_path / "warehouse.duckdb")
    (tmp_path / "events.jsonl").write_text("\n".join(_jsonl_lines()) + "\n")
    (tmp_path / "job.log").write_text("ok\nraw 4111 1111 1111 1111 and 2001:db8::1 and Alice Example\n")


def test_cli_clean_is_0(tmp_path, capsys):
    (tmp_path / "clean.log").write_text("nothing to see 203.0.113.0/24 10:15:00\n")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["scan-pii: 1 files, 1 values scanned, 0 hits"]


def test_cli_hits_are_1_and_redacted(tmp_path, capsys):
    _all_files(tmp_path)
    known = tmp_path / "known.txt"  # inside the scanned tree: must not be reported against itself
    known.write_text("abc\nAlice Example\n4111 1111 1111 1111\n")
    assert main([str(tmp_path), "--known-values", str(known)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    log = (tmp_path / "job.log").as_posix()
    assert f"{log}:2 pan 41…(19)" in lines
    assert f"{log}:2 ipv6 20…(11)" in lines
    assert f"{log}:2 known #2 Al…(13)" in lines
    assert f"{log}:2 known #3 41…(19)" in lines
    assert f"{(tmp_path / 'warehouse.duckdb').as_posix()}:quarantine.raw.payload:0 ipv6 20…(11)" in lines
    # values: parquet 22 (5 + 4 + 5 in the struct + 4 list items + 4 blobs), duckdb 9, jsonl 8, log 2
    assert lines[-1] == "scan-pii: 4 files, 41 values scanned, 9 hits"
    assert "known.txt: excluded" in captured.err
    everything = captured.out + captured.err
    for raw in [*RAW_VALUES, "4111111111111111", "Alice Example", "198.51.100.23", "alice@example.com"]:
        assert raw not in everything


def test_cli_max_hits_allow_exclude(tmp_path, capsys):
    _all_files(tmp_path)
    assert main([str(tmp_path), "--max-hits", "1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("... 6 more hits") and lines[2].endswith("7 hits")

    args = [str(tmp_path), "--allow", "*:quarantine.*", "--allow", "ipv4:ip_address", "--exclude", "*.log"]
    assert main([*args, "--allow", "dob:customer.*", "--allow", "dob:main.users.profile"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{(tmp_path / 'events.jsonl').as_posix()}:2:customer.contacts[1].email email al…(17)",
        lines[-1],
    ]

    assert main([*args, "--allow", "dob:*", "--allow", "email:customer.contacts.email"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "scan-pii: 3 files, 39 values scanned, 0 hits"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/no/such/path"], "scan-pii: error: no such file or directory: /no/such/path"),
        ([], "scan-pii: error: the following arguments are required: PATH"),
        (["--allow", "ipv4", "."], "scan-pii: error: --allow 'ipv4': expected DETECTOR:COLUMN_GLOB"),
        (["--allow", "phone:*", "."], "scan-pii: error: --allow 'phone:*': unknown detector 'phone'"),
        (["--max-hits", "x", "."], "scan-pii: error: argument --max-hits: invalid int value: 'x'"),
        (
            ["--known-values", "/no/such/file", "."],
            "scan-pii: error: cannot read --known-values /no/such/file",
        ),
    ],
)
def test_cli_usage_errors_are_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith(message)
    assert "Traceback" not in captured.err


def test_cli_help_is_0(capsys):
    assert main(["--help"]) == 0
    assert "DETECTOR:COLUMN_GLOB" in capsys.readouterr().out
