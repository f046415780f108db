"""Deterministic, realistic synthetic input for riskpipe: payments, chargebacks and KYC profiles.

Why this exists: every pipeline in riskpipe must survive what production sends
(ARCHITECTURE.md section 3): three payment schema versions at once, retries
that are *not* byte-identical, chargebacks that arrive after the 24 h allowed
lateness, KYC updates that arrive out of order, records a producer got wrong,
fields nobody has classified yet. Real data cannot be used outside the
restricted zone, so development, tests, benchmarks and demos run on this
generator instead. It produces the same input contract as production:

* ``generate(out_dir, ...)`` writes a batch input directory,
  ``<out_dir>/<dataset>/part-NNNNN.jsonl`` (or Avro container files, one per
  schema version per chunk, plus a ``-malformed.jsonl`` sidecar because broken
  records cannot be Avro), and ``_manifest.json`` describing what was written
  (counts per kind), so tests can assert exact numbers.
* ``iter_messages(...)`` yields the very same records as messages merged
  across datasets in arrival order, with the schema version a producer would
  put in the Kafka header / Pub/Sub attribute; a streaming harness can replay
  them.

Determinism is a feature: the same arguments give byte-identical files on
any machine. All randomness comes from ``random.Random`` instances derived
from the seed (never ``hash()``, never the clock), and each stage (world,
payments, retries, chargebacks, KYC, malformed records) draws from its own
generator, so turning one knob (say ``chargeback_rate``) does not reshuffle
the payments a test fixture depends on.

Phenomena whose rate is > 0 appear at least once even in tiny fixtures
(except malformed records, see ``GeneratorRates``), so small unit-test inputs
still exercise every code path.

Everything is built in memory and sorted by arrival time before anything is
written; that keeps the output ordered and deterministic and is fine up to a
few million events (about 0.5 KB of memory per record).
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import ipaddress
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from operator import attrgetter
from pathlib import Path
from typing import Any

import fastavro
import orjson

from schemas import all_field_names, load_schema, raw_schema

__all__ = [
    "DATASETS",
    "DEFAULT_START",
    "FORMATS",
    "GENERATOR_VERSION",
    "MALFORMED_KINDS",
    "MANIFEST",
    "GenerationReport",
    "GeneratorRates",
    "SyntheticMessage",
    "generate",
    "iter_messages",
]

DATASETS = ("payment_event", "chargeback", "kyc_profile")
MALFORMED_KINDS = ("invalid_json", "not_an_object", "missing_field", "bad_type", "bad_timestamp", "not_utf8")
FORMATS = ("jsonl", "avro")
MANIFEST = "_manifest.json"
DEFAULT_START = "2026-11-02T00:00:00Z"
# Bump whenever the output for a given seed and arguments changes, so a stored
# fixture can tell which generator produced it.
GENERATOR_VERSION = 1

_PAYMENT, _CHARGEBACK, _KYC = range(3)
_KEY_FIELD = ("event_id", "charge_id", "user_id")
_TIME_FIELD = ("created_at", "received_at", "updated_at")
_PAYMENT_VERSIONS = 3  # the generator knows how to shape v1..v3 payments

_US = 1_000_000
_MINUTE = 60 * _US
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)

_WINDOW = 48 * _HOUR  # payments are spread over this span after `start`
_PAYMENT_JITTER = 20 * _US  # normal producer -> broker delay
_PAYMENT_LATE_SHARE = 0.03  # share of payments delayed 30 s..3 min (out of order)
_KYC_OUT_OF_ORDER_SHARE = 0.2  # share of KYC users whose versions arrive out of order
_CHARGEBACK_LATENESS = 24 * _HOUR  # ARCHITECTURE.md: chargebacks arrive up to 24 h after received_at
_MIN_EVENTS_FOR_EVERY_MALFORMED_KIND = 1000

# The only file names generate() writes, hence the only ones it will delete.
_FILE_NAME = re.compile(
    r"^(payment_event|chargeback|kyc_profile)/part-\d{5}(-v\d+|-malformed)?\.(jsonl|avro)$"
)


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class GeneratorRates:
    """Shares (0..1) of the phenomena the generator injects.

    ``malformed_rate`` adds that share of *extra* broken records per dataset;
    with ``events >= 1000`` every malformed kind appears at least once.
    ``schema_mix`` is the share of payments written as v1, v2, v3 (sums to 1).
    ``kyc_users`` defaults to ``events // 20`` (at least 5).
    """

    duplicate_rate: float = 0.02
    chargeback_rate: float = 0.01
    chargeback_too_late_rate: float = 0.05
    malformed_rate: float = 0.005
    ipv6_rate: float = 0.25
    burst_card_rate: float = 0.01
    unclassified_field_rate: float = 0.3
    schema_mix: tuple[float, float, float] = (0.3, 0.3, 0.4)
    kyc_users: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "duplicate_rate",
            "chargeback_rate",
            "chargeback_too_late_rate",
            "malformed_rate",
            "ipv6_rate",
            "burst_card_rate",
            "unclassified_field_rate",
        ):
            _check_share(name, getattr(self, name))
        mix = self.schema_mix
        if isinstance(mix, (str, bytes)) or not isinstance(mix, Sequence) or len(mix) != _PAYMENT_VERSIONS:
            raise ValueError(f"schema_mix must be {_PAYMENT_VERSIONS} shares (v1, v2, v3), got {mix!r}")
        for share in mix:
            _check_share("schema_mix", share)
        if not math.isclose(math.fsum(mix), 1.0, abs_tol=1e-6):
            raise ValueError(f"schema_mix must sum to 1, got {mix!r} (sum {math.fsum(mix)})")
        # A list would make the frozen dataclass unhashable and the manifest
        # differ in type from the default; normalise to a tuple of floats.
        object.__setattr__(self, "schema_mix", tuple(float(s) for s in mix))
        users = self.kyc_users
        if users is not None and (isinstance(users, bool) or not isinstance(users, int) or users < 1):
            raise ValueError(f"kyc_users must be None or an int >= 1, got {users!r}")


def _check_share(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class SyntheticMessage:
    """One record as a producer would send it.

    ``payload`` is exactly the bytes of the line in the JSONL output (for
    malformed records possibly not UTF-8 / not JSON). ``schema_version`` is
    what the producer declares in the message header. ``kind`` is "ok",
    "duplicate", "too_late" or "malformed:<kind>"; ``key`` is the event_id /
    charge_id / user_id, ``None`` for malformed records.
    """

    dataset: str
    arrival_time: datetime
    schema_version: int
    payload: bytes
    key: str | None
    kind: str


@dataclass
class GenerationReport:
    """What ``generate`` wrote.

    ``counts[dataset]``: ``records`` (lines / Avro records written, all kinds),
    ``unique`` (distinct business records: payments by event_id, chargebacks by
    charge_id + received_at, KYC by user_id + version; includes too-late
    chargebacks), ``duplicates`` (retries), ``malformed`` and ``too_late``.
    ``records == unique + duplicates + malformed``.
    """

    out_dir: str
    fmt: str
    seed: int
    files: dict[str, list[str]]
    counts: dict[str, dict[str, int]]
    malformed_by_kind: dict[str, dict[str, int]]
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        # out_dir is deliberately left out: the manifest describes the folder
        # it sits in, and must be byte-identical wherever the same seed is
        # generated (two temp dirs, two machines).
        doc = {
            "generator_version": GENERATOR_VERSION,
            "seed": self.seed,
            "fmt": self.fmt,
            "params": self.params,
            "files": self.files,
            "counts": self.counts,
            "malformed_by_kind": self.malformed_by_kind,
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> GenerationReport:
        """Read the ``_manifest.json`` of a generated directory."""
        doc = json.loads(Path(out_dir, MANIFEST).read_text(encoding="utf-8"))
        return cls(
            out_dir=os.fspath(out_dir),
            fmt=doc["fmt"],
            seed=doc["seed"],
            files=doc["files"],
            counts=doc["counts"],
            malformed_by_kind=doc["malformed_by_kind"],
            params=doc.get("params", {}),
        )


# --------------------------------------------------------------------------- reference data
# Small, hand-written lists: enough variety (non-ASCII, apostrophes, several
# postal formats) to break naive parsers and maskers, small enough to read.

_FIRST_NAMES = (
    "James", "Mary", "José", "Zoë", "Mohammed", "Wei", "Aoife", "Søren", "François", "Ana",
    "Björn", "Priya", "Yuki", "Olga", "Chloé", "Łukasz", "Siobhán", "Jürgen", "Fatima", "Kwame",
    "Mateo", "Émilie", "Noah", "Sofia", "Dmitri", "Ngozi", "Hana", "Luis", "Emma", "Oliver",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Núñez", "Łukasiewicz", "García", "Müller", "O'Brien", "Nguyễn", "Kowalski", "Dubois",
    "Rossi", "Johansson", "Tanaka", "Patel", "van der Berg", "Silva", "Øvergaard", "Schäfer", "Kim",
    "Ivanova", "Ó Súilleabháin", "Okafor", "Johnson", "Williams", "Brown", "Martin", "Fernández",
)  # fmt: skip

# country -> (weight, cities, streets, house number goes first?)
_COUNTRIES: dict[str, tuple[int, tuple[str, ...], tuple[str, ...], bool]] = {
    "US": (30, ("Springfield", "Austin", "Denver", "Portland", "Columbus", "Raleigh"),
           ("Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Washington Blvd"), True),
    "GB": (9, ("London", "Manchester", "Leeds", "Glasgow", "Bristol"),
           ("High Street", "Station Road", "Church Lane", "Victoria Road"), True),
    "DE": (10, ("Berlin", "München", "Köln", "Düsseldorf", "Hamburg"),
           ("Hauptstraße", "Bahnhofstraße", "Schillerstraße", "Gartenweg"), False),
    "FR": (7, ("Paris", "Lyon", "Marseille", "Nantes", "Lille"),
           ("rue de la Paix", "avenue Victor Hugo", "boulevard Voltaire", "rue Émile Zola"), True),
    "ES": (5, ("Madrid", "Barcelona", "Sevilla", "Málaga", "A Coruña"),
           ("Calle Mayor", "Avenida de la Constitución", "Calle del Olmo"), False),
    "NL": (4, ("Amsterdam", "Rotterdam", "Utrecht", "Den Haag"),
           ("Keizersgracht", "Damstraat", "Stationsplein"), False),
    "IE": (3, ("Dublin", "Cork", "Galway"), ("O'Connell Street", "Grafton Street", "Main Street"), True),
    "CA": (5, ("Toronto", "Montréal", "Vancouver", "Ottawa"),
           ("King St W", "Rue Sainte-Catherine", "Granville St"), True),
    "AU": (4, ("Sydney", "Melbourne", "Brisbane", "Perth"), ("George St", "Collins St", "Queen St"), True),
    "JP": (4, ("Tokyo", "Osaka", "Kyoto", "Sapporo"), ("Chiyoda", "Umeda", "Shibuya"), True),
    "CH": (3, ("Zürich", "Genève", "Basel", "Bern"), ("Bahnhofstrasse", "Rue du Rhône", "Marktgasse"), False),
    "SE": (3, ("Stockholm", "Göteborg", "Malmö"), ("Drottninggatan", "Kungsgatan", "Storgatan"), False),
    "MX": (3, ("Ciudad de México", "Guadalajara", "Monterrey"),
           ("Avenida Reforma", "Calle Juárez", "Avenida Insurgentes"), False),
    "IN": (3, ("Mumbai", "Bengaluru", "Delhi", "Chennai"), ("MG Road", "Linking Road", "Park Street"), True),
    "BR": (2, ("São Paulo", "Rio de Janeiro", "Belo Horizonte"),
           ("Avenida Paulista", "Rua Augusta", "Rua das Flores"), False),
}  # fmt: skip

_UK_OUTWARD = ("SW1A", "EC1A", "W1A", "M1", "B33", "CR2", "LS1", "E14", "N1", "G2", "EH1", "CF10", "BS1")
_UK_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # letters the UK inward code uses
_IE_ROUTING = ("D02", "D04", "D08", "T12", "H91", "A94", "V94")
_UPPER = "ABCEGHJKLMNPRSTVXY"
_ALNUM = "0123456789ACDEFHKNPRTVWXY"

# currency -> (merchant weight, home country, minor units per US cent)
_CURRENCIES: dict[str, tuple[int, str, float]] = {
    "USD": (38, "US", 1.0),
    "EUR": (30, "DE", 0.92),
    "GBP": (10, "GB", 0.79),
    "CAD": (5, "CA", 1.36),
    "AUD": (4, "AU", 1.52),
    "JPY": (4, "JP", 1.5),  # no decimals: 1 USD cent is about 1.5 yen
    "CHF": (3, "CH", 0.88),
    "SEK": (3, "SE", 10.6),
    "MXN": (3, "MX", 17.1),
}

# RFC 3339 offsets producers use: (suffix, minutes, weight). "Z" and "+00:00"
# are distinct styles of the same offset; both appear in the wild.
_OFFSETS: tuple[tuple[str, int, int], ...] = (
    ("Z", 0, 50), ("+00:00", 0, 10), ("+01:00", 60, 8), ("+02:00", 120, 6), ("-05:00", -300, 8),
    ("-04:00", -240, 4), ("+05:30", 330, 4), ("-07:00", -420, 4), ("+09:00", 540, 3),
    ("-03:30", -210, 1), ("+05:45", 345, 1), ("-08:00", -480, 1),
)  # fmt: skip
_FRACTION_DIGITS = ((0, 40), (3, 45), (6, 15))

_REASON_CODES = (
    ("10.4", 30), ("13.1", 15), ("13.3", 8), ("12.6.1", 4), ("11.3", 3),  # Visa
    ("4837", 15), ("4853", 10), ("4863", 6), ("4834", 3),  # Mastercard
    ("F29", 4), ("C08", 2),  # Amex
)  # fmt: skip
_EVIDENCE_STATUS = (("pending", 50), ("submitted", 25), ("won", 12), ("lost", 13))
_DOCUMENT_TYPES = (("passport", 40), ("driving_licence", 35), ("national_id", 25))
_KYC_VERSION_COUNT = ((1, 35), (2, 25), (3, 20), (4, 12), (5, 8))
_FIRST_STATUS = (("pending", 70), ("review", 15), ("verified", 10), ("rejected", 5))
_NEXT_STATUS = {
    "pending": (("verified", 5), ("review", 3), ("rejected", 1), ("pending", 1)),
    "review": (("verified", 5), ("rejected", 3), ("review", 1), ("pending", 1)),
    "verified": (("review", 3), ("verified", 2), ("rejected", 1)),
    "rejected": (("pending", 5), ("review", 2), ("rejected", 1)),
}
_WALLETS = ("apple_pay", "google_pay", "paypal", "click_to_pay", "samsung_pay", "card")
_CARD_TEST_AMOUNTS = (1, 50, 99, 100, 100, 101, 200, 500)  # US cents; card testers probe with tiny amounts
_BAD_TIMESTAMPS = (
    "yesterday", "2026-13-45T99:00:00Z", "2026-02-30T12:00:00Z", "", "11/02/2026 10:00",
    "2026-11-02T10:00:00+25:00", "not-a-date",
)  # fmt: skip
# Payment retry gaps (low, high) in microseconds with weights: mostly quick
# client retries, plus a tail 30-36 h later that only a long dedup TTL catches.
_RETRY_GAPS = ((30 * _HOUR, 36 * _HOUR), (1 * _US, 2 * _MINUTE), (2 * _MINUTE, 6 * _HOUR))
_BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xe9", b"\x80\x81", b"\xed\xa0\x80")


class _Weighted:
    """Weighted choice with precomputed cumulative weights (random.choices rebuilds them per call)."""

    __slots__ = ("cum", "items", "total")

    def __init__(self, pairs: Sequence[tuple[Any, float]]) -> None:
        self.items = [item for item, _ in pairs]
        self.cum: list[float] = []
        running = 0.0
        for _, weight in pairs:
            running += weight
            self.cum.append(running)
        self.total = running

    def pick(self, rng: random.Random) -> Any:
        index = bisect.bisect(self.cum, rng.random() * self.total)
        return self.items[min(index, len(self.items) - 1)]


_OFFSET_PICK = _Weighted([(i, w) for i, (_, _, w) in enumerate(_OFFSETS)])
_DIGITS_PICK = _Weighted(_FRACTION_DIGITS)
_COUNTRY_PICK = _Weighted([(c, spec[0]) for c, spec in _COUNTRIES.items()])
_CURRENCY_PICK = _Weighted([(c, spec[0]) for c, spec in _CURRENCIES.items()])
_REASON_PICK = _Weighted(_REASON_CODES)
_EVIDENCE_PICK = _Weighted(_EVIDENCE_STATUS)
_DOCUMENT_PICK = _Weighted(_DOCUMENT_TYPES)
_KYC_VERSIONS_PICK = _Weighted(_KYC_VERSION_COUNT)
_FIRST_STATUS_PICK = _Weighted(_FIRST_STATUS)
_RETRY_GAP_PICK = _Weighted(list(zip(_RETRY_GAPS, (20, 55, 25), strict=True)))
_NEXT_STATUS_PICK = {status: _Weighted(pairs) for status, pairs in _NEXT_STATUS.items()}


# --------------------------------------------------------------------------- small helpers


def _share(n: int, rate: float, *, at_least_one: bool = True) -> int:
    """round(n * rate) half-up, at least 1 when the phenomenon is enabled, at most n."""
    if n <= 0 or rate <= 0:
        return 0
    count = int(n * rate + 0.5)
    if at_least_one:
        count = max(count, 1)
    return min(count, n)


def _parse_start(start: str) -> int:
    if not isinstance(start, str):
        raise ValueError(f"start must be an RFC 3339 string, got {start!r}")
    text = start[:-1] + "+00:00" if start.endswith(("Z", "z")) else start
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"start must be an RFC 3339 timestamp with an offset, got {start!r}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"start must carry a UTC offset (e.g. 'Z'), got {start!r}")
    delta = moment - _EPOCH_UTC
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def _truncate(us: int, digits: int) -> int:
    """The instant a timestamp written with `digits` fractional digits can express."""
    if digits == 0:
        return us - us % _US
    if digits == 3:
        return us - us % 1000
    return us


def _rfc3339(us: int, style: int, digits: int) -> str:
    suffix, minutes, _ = _OFFSETS[style]
    t = _EPOCH + timedelta(microseconds=us + minutes * _MINUTE)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if digits == 3:
        text += f".{t.microsecond // 1000:03d}"
    elif digits == 6:
        text += f".{t.microsecond:06d}"
    return text + suffix


def _other_style(rng: random.Random, style: int) -> int:
    """A different offset style than `style`: retries are re-serialised by another code path."""
    choice = _OFFSET_PICK.pick(rng)
    if choice == style:
        choice = (style + 1 + rng.randrange(len(_OFFSETS) - 1)) % len(_OFFSETS)
    return choice


def _ipv4(rng: random.Random) -> str:
    # Public-looking only: skip private (10/8, 172.16/12, 192.168/16), CGNAT,
    # loopback, link-local and multicast by skipping their first octets.
    while True:
        first = rng.randint(1, 223)
        if first not in (10, 100, 127, 169, 172, 192):
            break
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def _ipv6(rng: random.Random) -> str:
    # 2001:db8::/32 is the documentation range: realistic shape, never a real client.
    prefix = (0x20010DB8 << 32) | rng.getrandbits(32)
    # Some hosts have small, manually assigned interface ids ("::1a"), which
    # exercises the "::" compressed notation.
    interface = rng.getrandbits(64) if rng.random() < 0.7 else rng.randint(1, 0xFFFF)
    return str(ipaddress.IPv6Address((prefix << 64) | interface))


def _postal(rng: random.Random, country: str) -> str:
    r = rng.randrange
    if country in ("US", "MX"):
        return f"{r(1000, 99951):05d}"
    if country == "DE":
        return f"{r(1067, 99999):05d}"
    if country == "FR":
        return f"{r(1000, 96000):05d}"
    if country == "ES":
        return f"{r(1001, 52081):05d}"
    if country == "GB":
        letters = _UK_INWARD_LETTERS
        return f"{rng.choice(_UK_OUTWARD)} {r(10)}{rng.choice(letters)}{rng.choice(letters)}"
    if country == "CA":
        u = _UPPER
        return f"{rng.choice(u)}{r(10)}{rng.choice(u)} {r(10)}{rng.choice(u)}{r(10)}"
    if country == "NL":
        return f"{r(1000, 10000)} {rng.choice(_UPPER)}{rng.choice(_UPPER)}"
    if country == "IE":
        return f"{rng.choice(_IE_ROUTING)} {''.join(rng.choice(_ALNUM) for _ in range(4))}"
    if country == "JP":
        return f"{r(100, 1000):03d}-{r(10000):04d}"
    if country == "AU":
        return f"{r(800, 8000):04d}"
    if country == "CH":
        return f"{r(1000, 9659)}"
    if country == "SE":
        return f"{r(100, 1000)} {r(100):02d}"
    if country == "IN":
        return f"{r(110001, 855118)}"
    if country == "BR":
        return f"{r(1000, 100000):05d}-{r(1000):03d}"
    raise ValueError(f"no postal format for {country}")


def _hex(rng: random.Random, chars: int) -> str:
    return f"{rng.getrandbits(chars * 4):0{chars}x}"


def _hex_prefixed(rng: random.Random, prefix: str, chars: int) -> str:
    return prefix + _hex(rng, chars)


def _unique_id(rng: random.Random, prefix: str, chars: int, seen: set[str]) -> str:
    while True:
        candidate = prefix + _hex(rng, chars)
        if candidate not in seen:
            seen.add(candidate)
            return candidate


def _spaced_json(rng: random.Random, record: dict[str, Any]) -> bytes:
    """The same JSON object re-serialised the way a different client library would.

    Keys in another order and whitespace after separators, so a retry is never
    byte-identical to the original even when every value is the same.
    """
    items = list(record.items())
    rng.shuffle(items)
    separators = rng.choice(((", ", ": "), (",", ": "), (", ", ":")))
    shuffled = {k: (_shuffled_dict(rng, v) if isinstance(v, dict) else v) for k, v in items}
    return json.dumps(shuffled, ensure_ascii=rng.random() < 0.3, separators=separators).encode("utf-8")


def _shuffled_dict(rng: random.Random, value: dict[str, Any]) -> dict[str, Any]:
    items = list(value.items())
    rng.shuffle(items)
    return dict(items)


# --------------------------------------------------------------------------- the world


@dataclass(slots=True)
class _User:
    user_id: str
    country: str
    city: str
    line1: str
    postal: str
    first: str
    last: str
    dob: str
    document_type: str


@dataclass(slots=True)
class _Card:
    fingerprint: str
    user: int
    country: str
    postal: str
    ips: list[str]
    devices: list[str]


@dataclass(slots=True)
class _Merchant:
    merchant_id: str
    currency: str


@dataclass(slots=True)
class _Msg:
    """Internal message; `record` is the schema-shaped dict (None for malformed) used for Avro."""

    arrival_us: int
    dataset: int
    version: int
    payload: bytes
    key: str | None
    kind: str
    record: dict[str, Any] | None
    event_us: int  # the record's event-time instant (created_at / received_at / updated_at)


@dataclass(slots=True)
class _Plan:
    messages: list[_Msg]  # sorted by arrival
    counts: dict[str, dict[str, int]]
    malformed_by_kind: dict[str, dict[str, int]]


class _Builder:
    """Builds every message of one generation; each stage has its own random stream."""

    def __init__(
        self, events: int, seed: int, rates: GeneratorRates, start_us: int, unclassified_field: str
    ) -> None:
        self.events = events
        self.rates = rates
        self.start_us = start_us
        self.unclassified_field = unclassified_field
        master = random.Random(seed)
        # One child stream per stage, in a fixed order: see the module docstring.
        streams = [random.Random(master.getrandbits(64)) for _ in range(6)]
        self.rng_world, self.rng_pay, self.rng_dup, self.rng_cb, self.rng_kyc, self.rng_bad = streams
        self.ipv6_rate = rates.ipv6_rate
        self.mix = _Weighted([(v + 1, share) for v, share in enumerate(rates.schema_mix)])
        self.start_date = (_EPOCH + timedelta(microseconds=start_us)).date()

    # -- world ---------------------------------------------------------------

    def _ip(self, rng: random.Random) -> str:
        return _ipv6(rng) if rng.random() < self.ipv6_rate else _ipv4(rng)

    def _address(self, rng: random.Random, country: str) -> tuple[str, str, str]:
        _, cities, streets, number_first = _COUNTRIES[country]
        number = rng.randint(1, 220)
        street = rng.choice(streets)
        if country == "JP":
            line1 = f"{rng.randint(1, 9)}-{number} {street}"
        else:
            line1 = f"{number} {street}" if number_first else f"{street} {number}"
        return line1, rng.choice(cities), _postal(rng, country)

    def build_world(self) -> None:
        rng = self.rng_world
        n_users = self.rates.kyc_users if self.rates.kyc_users is not None else max(5, self.events // 20)
        seen: set[str] = set()
        self.users: list[_User] = []
        for _ in range(n_users):
            country = _COUNTRY_PICK.pick(rng)
            line1, city, postal = self._address(rng, country)
            # Ages 18..90 at the start date, most customers between 25 and 50.
            age_days = int(rng.triangular(18.01, 90.0, 34.0) * 365.2425)
            dob = date.fromordinal(self.start_date.toordinal() - age_days).isoformat()
            self.users.append(
                _User(
                    user_id=_unique_id(rng, "u_", 12, seen),
                    country=country,
                    city=city,
                    line1=line1,
                    postal=postal,
                    first=rng.choice(_FIRST_NAMES),
                    last=rng.choice(_LAST_NAMES),
                    dob=dob,
                    document_type=_DOCUMENT_PICK.pick(rng),
                )
            )

        n_merchants = max(3, self.events // 50)
        width = max(4, len(str(n_merchants)))
        self.merchants = [
            _Merchant(f"m_{i:0{width}d}", _CURRENCY_PICK.pick(rng)) for i in range(1, n_merchants + 1)
        ]
        # Zipf-like volume: a few merchants carry most payments. Ranks are
        # shuffled so the biggest merchant is not always m_0001.
        ranks = list(range(1, n_merchants + 1))
        rng.shuffle(ranks)
        self.merchant_pick = _Weighted([(i, 1.0 / ranks[i] ** 1.1) for i in range(n_merchants)])

        n_cards = max(1, self.events // 4)
        seen = set()
        self.cards: list[_Card] = []
        card_weights: list[tuple[int, float]] = []
        for index in range(n_cards):
            owner = rng.randrange(n_users)
            user = self.users[owner]
            country, postal = user.country, user.postal
            if rng.random() < 0.08:  # card still registered at an older billing address
                country = _COUNTRY_PICK.pick(rng)
                postal = _postal(rng, country)
            ips = [self._ip(rng) for _ in range(rng.choice((1, 1, 2, 3)))]
            devices = [_hex_prefixed(rng, "dev_", 12) for _ in range(rng.choice((1, 1, 2)))]
            self.cards.append(_Card(_unique_id(rng, "cf_", 24, seen), owner, country, postal, ips, devices))
            # Heavy-tailed usage: most cards pay once or twice, a few often;
            # capped so no single card takes a visible share of all traffic.
            card_weights.append((index, min(rng.paretovariate(1.3), 30.0)))
        self.card_pick = _Weighted(card_weights)

    # -- payments ------------------------------------------------------------

    def _created_us(self, rng: random.Random) -> int:
        # Mild daily cycle peaking 15:00 UTC (US and EU both awake); rejection sampling.
        while True:
            offset = rng.randrange(_WINDOW)
            hour = ((self.start_us + offset) / _HOUR) % 24
            if rng.random() < 0.35 + 0.65 * 0.5 * (1 + math.cos(2 * math.pi * (hour - 15) / 24)):
                return self.start_us + offset

    @staticmethod
    def _amount(rng: random.Random, currency: str, cents: float) -> int:
        minor = cents * _CURRENCIES[currency][2]
        if currency == "JPY":
            return max(10, int(round(minor, -1)))
        amount = max(1, int(minor))
        if amount > 500 and rng.random() < 0.3:  # shop prices: x.99 / x.00
            amount = amount // 100 * 100 + rng.choice((99, 0))
        return amount

    def _payment_specs(self) -> list[tuple[int, int, int, int, str, str]]:
        """(created_us, card, merchant, amount, currency, ip) for every unique payment."""
        rng = self.rng_pay
        specs: list[tuple[int, int, int, int, str, str]] = []
        # Card testing: a stolen card tried 5-15 times within ~5 minutes at
        # 1-3 merchants, tiny amounts, usually from one attacker IP. Capped at
        # half the events so bursts never dominate a small fixture.
        n_burst = _share(len(self.cards), self.rates.burst_card_rate)
        budget = self.events // 2
        for card_index in rng.sample(range(len(self.cards)), n_burst):
            size = rng.randint(5, 15)
            if size > budget:
                break
            budget -= size
            card = self.cards[card_index]
            t0 = self.start_us + rng.randrange(_WINDOW - 5 * _MINUTE)
            targets = list(dict.fromkeys(self.merchant_pick.pick(rng) for _ in range(rng.randint(1, 3))))
            ip = self._ip(rng) if rng.random() < 0.8 else rng.choice(card.ips)
            for _ in range(size):
                merchant = rng.choice(targets)
                currency = self.merchants[merchant].currency
                amount = self._amount(rng, currency, rng.choice(_CARD_TEST_AMOUNTS))
                specs.append((t0 + rng.randrange(5 * _MINUTE), card_index, merchant, amount, currency, ip))

        for _ in range(self.events - len(specs)):
            card_index = self.card_pick.pick(rng)
            card = self.cards[card_index]
            merchant = self.merchant_pick.pick(rng)
            currency = self.merchants[merchant].currency
            if rng.random() < 0.1:  # cross-border: priced in another currency
                currency = _CURRENCY_PICK.pick(rng)
            amount = self._amount(rng, currency, rng.lognormvariate(math.log(3500), 1.05))
            ip = rng.choice(card.ips) if rng.random() < 0.8 else self._ip(rng)
            specs.append((self._created_us(rng), card_index, merchant, amount, currency, ip))
        return specs

    def build_payments(self) -> list[_Msg]:
        rng = self.rng_pay
        seen: set[str] = set()
        messages: list[_Msg] = []
        self.payment_styles: list[tuple[int, int]] = []
        for created_raw, card_index, merchant, amount, currency, ip in self._payment_specs():
            card = self.cards[card_index]
            version = self.mix.pick(rng)
            style, digits = _OFFSET_PICK.pick(rng), _DIGITS_PICK.pick(rng)
            created_us = _truncate(created_raw, digits)
            event_id = _unique_id(rng, "pe_", 16, seen)
            record: dict[str, Any] = {
                "event_id": event_id,
                "merchant_id": self.merchants[merchant].merchant_id,
                "amount": amount,
                "currency": currency,
                "card_fingerprint": card.fingerprint,
                "ip_address": ip,
                "billing_postal": card.postal,
                "created_at": _rfc3339(created_us, style, digits),
            }
            if version >= 2:
                # Optional v2 fields come in all three shapes: value, null, absent.
                r = rng.random()
                if r < 0.75:
                    device = (
                        rng.choice(card.devices) if rng.random() < 0.85 else _hex_prefixed(rng, "dev_", 12)
                    )
                    record["device_id"] = device
                elif r < 0.87:
                    record["device_id"] = None
                r = rng.random()
                if r < 0.70:
                    record["user_id"] = self.users[card.user].user_id
                elif r < 0.85:
                    record["user_id"] = None
            if version >= 3:
                # Most v3 producers send the struct; some still send the string, which v3 allows.
                if rng.random() < 0.9:
                    country = card.country if rng.random() < 0.95 else None
                    record["billing_postal"] = {"postal_code": card.postal, "country": country}
                if rng.random() < self.rates.unclassified_field_rate:
                    record[self.unclassified_field] = rng.choice(_WALLETS)
            if rng.random() < _PAYMENT_LATE_SHARE:
                arrival = created_us + rng.randint(30 * _US, 180 * _US)
            else:
                arrival = created_us + rng.randint(0, _PAYMENT_JITTER)
            messages.append(
                _Msg(arrival, _PAYMENT, version, orjson.dumps(record), event_id, "ok", record, created_us)
            )
            self.payment_styles.append((style, digits))
        return messages

    def build_payment_retries(self, payments: list[_Msg]) -> tuple[list[_Msg], set[int]]:
        rng = self.rng_dup
        n = _share(len(payments), self.rates.duplicate_rate)
        chosen = rng.sample(range(len(payments)), n)
        retries: list[_Msg] = []
        for position, index in enumerate(chosen):
            original = payments[index]
            style, digits = self.payment_styles[index]
            record = dict(original.record or {})
            # Same instant, written with another offset by the retrying client.
            record["created_at"] = _rfc3339(original.event_us, _other_style(rng, style), digits)
            # Quick client retries dominate; a tail arrives 30-36 h later to
            # prove the dedup TTL (48 h) is longer than any retry gap. The
            # first retry is always in that tail so small fixtures have one.
            low, high = _RETRY_GAPS[0] if position == 0 else _RETRY_GAP_PICK.pick(rng)
            arrival = original.arrival_us + rng.randint(low, high)
            retries.append(
                _Msg(
                    arrival,
                    _PAYMENT,
                    original.version,
                    _spaced_json(rng, record),
                    original.key,
                    "duplicate",
                    record,
                    original.event_us,
                )
            )
        return retries, set(chosen)

    # -- chargebacks ---------------------------------------------------------

    def build_chargebacks(self, payments: list[_Msg], retried: set[int]) -> list[_Msg]:
        rng = self.rng_cb
        n = _share(len(payments), self.rates.chargeback_rate)
        # Prefer payments that were never retried: keeps "which payment is
        # disputed" unambiguous when reading the fixture by eye.
        pool = [i for i in range(len(payments)) if i not in retried]
        if len(pool) < n:
            pool = list(range(len(payments)))
        disputed = sorted(rng.sample(pool, n))
        # Only guarantee a too-late one when there is also an on-time one.
        n_late = _share(n, self.rates.chargeback_too_late_rate, at_least_one=n >= 2)
        late = set(rng.sample(range(n), n_late))
        messages: list[_Msg] = []
        styles: list[tuple[int, int]] = []
        for position, index in enumerate(disputed):
            payment = payments[index]
            # Disputes come 1 h .. 20 days after the payment, most in the first days.
            delay = _HOUR + int((20 * _DAY - _HOUR) * rng.random() ** 2)
            style, digits = _OFFSET_PICK.pick(rng), _DIGITS_PICK.pick(rng)
            received_us = _truncate(payment.event_us + delay, digits)
            record = {
                "charge_id": payment.key,
                "reason_code": _REASON_PICK.pick(rng),
                "received_at": _rfc3339(received_us, style, digits),
                "evidence_status": _EVIDENCE_PICK.pick(rng),
            }
            if position in late:
                arrival, kind = received_us + rng.randint(25 * _HOUR, 48 * _HOUR), "too_late"
            else:
                arrival, kind = received_us + rng.randint(0, _CHARGEBACK_LATENESS), "ok"
            messages.append(
                _Msg(arrival, _CHARGEBACK, 1, orjson.dumps(record), payment.key, kind, record, received_us)
            )
            styles.append((style, digits))

        # Retries of on-time chargebacks, still within the 24 h lateness so
        # that "too_late" keeps meaning exactly the records beyond it.
        candidates = [
            i
            for i, m in enumerate(messages)
            if m.kind == "ok" and m.event_us + _CHARGEBACK_LATENESS - m.arrival_us >= _US
        ]
        retries: list[_Msg] = []
        for index in rng.sample(candidates, _share(len(candidates), self.rates.duplicate_rate)):
            original = messages[index]
            style, digits = styles[index]
            record = dict(original.record or {})
            record["received_at"] = _rfc3339(original.event_us, _other_style(rng, style), digits)
            arrival = rng.randint(original.arrival_us + _US, original.event_us + _CHARGEBACK_LATENESS)
            retries.append(
                _Msg(
                    arrival,
                    _CHARGEBACK,
                    1,
                    _spaced_json(rng, record),
                    original.key,
                    "duplicate",
                    record,
                    original.event_us,
                )
            )
        return messages + retries

    # -- KYC -----------------------------------------------------------------

    def build_kyc(self) -> list[_Msg]:
        rng = self.rng_kyc
        messages: list[_Msg] = []
        per_user: list[list[_Msg]] = []
        for user in self.users:
            versions = _KYC_VERSIONS_PICK.pick(rng)
            t = self.start_us + rng.randrange(40 * _HOUR)
            status = _FIRST_STATUS_PICK.pick(rng)
            last, line1, city, postal = user.last, user.line1, user.city, user.postal
            own: list[_Msg] = []
            for version in range(1, versions + 1):
                if version > 1:
                    # Updates hours to days apart; >= 30 min keeps updated_at
                    # strictly increasing whatever precision it is written with.
                    if rng.random() < 0.7:
                        t += rng.randint(30 * _MINUTE, 36 * _HOUR)
                    else:
                        t += rng.randint(_DAY, 6 * _DAY)
                    status = _NEXT_STATUS_PICK[status].pick(rng)
                    if rng.random() < 0.08:  # name change (marriage, correction)
                        last = rng.choice(_LAST_NAMES)
                    if rng.random() < 0.15:  # moved within the country
                        line1, city, postal = self._address(rng, user.country)
                style, digits = _OFFSET_PICK.pick(rng), _DIGITS_PICK.pick(rng)
                updated_us = _truncate(t, digits)
                # Both address shapes occur, even for one user: producers migrate.
                address: str | dict[str, str | None]
                if rng.random() < 0.5:
                    address = f"{line1}, {city}, {postal}, {user.country}"
                else:
                    address = {
                        "line1": line1,
                        "city": city if rng.random() < 0.95 else None,
                        "postal_code": postal,
                        "country": user.country,
                    }
                record = {
                    "user_id": user.user_id,
                    "legal_name": f"{user.first} {last}",
                    "dob": user.dob,
                    "address": address,
                    "document_type": user.document_type,
                    "verification_status": status,
                    "updated_at": _rfc3339(updated_us, style, digits),
                    "version": version,
                }
                arrival = updated_us + rng.randint(0, 30 * _US)
                msg = _Msg(arrival, _KYC, 1, orjson.dumps(record), user.user_id, "ok", record, updated_us)
                own.append(msg)
                messages.append(msg)
            per_user.append(own)

        # Out-of-order delivery: a lower version held back until after a higher one.
        multi = [own for own in per_user if len(own) >= 2]
        n_swapped = min(len(multi), _share(len(per_user), _KYC_OUT_OF_ORDER_SHARE))
        for own in rng.sample(multi, n_swapped):
            higher = rng.randrange(1, len(own))
            own[higher - 1].arrival_us = own[higher].arrival_us + rng.randint(_MINUTE, 6 * _HOUR)
        return messages

    # -- malformed -----------------------------------------------------------

    def build_malformed(self, dataset: int, good: list[_Msg]) -> list[_Msg]:
        rng = self.rng_bad
        if not good:
            return []
        n = _share(len(good), self.rates.malformed_rate, at_least_one=False)
        kinds: list[str] = []
        if self.rates.malformed_rate > 0 and self.events >= _MIN_EVENTS_FOR_EVERY_MALFORMED_KIND:
            n = max(n, len(MALFORMED_KINDS))
            kinds = list(MALFORMED_KINDS)
        kinds += [rng.choice(MALFORMED_KINDS) for _ in range(n - len(kinds))]
        messages = []
        for kind in kinds:
            base = rng.choice(good)
            payload = _MALFORMERS[kind](rng, dataset, base)
            if b"\n" in payload:  # pragma: no cover - guards the one-record-per-line contract
                raise RuntimeError(f"malformed {kind} payload contains a newline")
            arrival = base.arrival_us + rng.randint(0, 5 * _US)
            messages.append(_Msg(arrival, dataset, base.version, payload, None, f"malformed:{kind}", None, 0))
        return messages


# --------------------------------------------------------------------------- malformed records
# Each builder turns a good record into one broken line of its kind. They
# mimic real producer bugs (truncated writes, Latin-1 encoders, amounts sent
# as decimal strings, a batch sent as an array) rather than random noise.


def _bad_invalid_json(rng: random.Random, dataset: int, base: _Msg) -> bytes:
    text = orjson.dumps(base.record).decode("utf-8")
    if rng.random() < 0.25:
        # Python repr instead of JSON: single quotes, None.
        return repr(base.record).encode("utf-8")
    # A proper prefix of a JSON object always lacks its closing brace.
    return text[: rng.randint(1, len(text) - 1)].encode("utf-8")


def _bad_not_an_object(rng: random.Random, dataset: int, base: _Msg) -> bytes:
    record = base.record or {}
    variant = rng.randrange(5)
    if variant == 0:
        return orjson.dumps([record])  # a batch sent as an array
    if variant == 1:
        return orjson.dumps(list(record.values()))
    if variant == 2:
        return orjson.dumps(record[_KEY_FIELD[dataset]])
    if variant == 3:
        return b"null"
    return str(rng.randint(0, 10**6)).encode("ascii")


def _bad_missing_field(rng: random.Random, dataset: int, base: _Msg) -> bytes:
    record = dict(base.record or {})
    name = DATASETS[dataset]
    required = [f["name"] for f in raw_schema(name, base.version)["fields"] if "default" not in f]
    record.pop(rng.choice(required))
    return orjson.dumps(record)


def _bad_type(rng: random.Random, dataset: int, base: _Msg) -> bytes:
    record = dict(base.record or {})
    epoch_seconds = base.event_us // _US
    if dataset == _PAYMENT:
        variant = rng.randrange(6)
        if variant == 0:
            record["amount"] = f"{record['amount'] / 100:.2f}"  # "12.50"
        elif variant == 1:
            record["amount"] = record["amount"] + 0.5
        elif variant == 2:
            record["merchant_id"] = int(record["merchant_id"].split("_")[1])
        elif variant == 3:
            record["card_fingerprint"] = None
        elif variant == 4:
            record["created_at"] = epoch_seconds
        else:
            record["billing_postal"] = rng.randint(1000, 99999)
    elif dataset == _CHARGEBACK:
        variant = rng.randrange(4)
        if variant == 0:
            record["reason_code"] = 4837
        elif variant == 1:
            record["evidence_status"] = None
        elif variant == 2:
            record["received_at"] = epoch_seconds
        else:
            record["charge_id"] = [record["charge_id"]]
    else:
        variant = rng.randrange(5)
        if variant == 0:
            record["version"] = "two"
        elif variant == 1:
            record["version"] = record["version"] + 0.5
        elif variant == 2:
            record["dob"] = int(record["dob"].replace("-", ""))
        elif variant == 3:
            record["legal_name"] = None
        else:
            record["address"] = [record["user_id"], 12]
    return orjson.dumps(record)


def _bad_timestamp(rng: random.Random, dataset: int, base: _Msg) -> bytes:
    record = dict(base.record or {})
    record[_TIME_FIELD[dataset]] = rng.choice(_BAD_TIMESTAMPS)
    return orjson.dumps(record)


def _bad_not_utf8(rng: random.Random, dataset: int, base: _Msg) -> bytes:
    text = orjson.dumps(base.record).decode("utf-8")
    if rng.random() < 0.5 and not text.isascii():
        # A Latin-1 encoder ("Jos\xe9 N\xfa\xf1ez"), the most common real cause.
        # Only usable when Latin-1 can hold every character and the result is
        # not accidentally valid UTF-8.
        try:
            payload = text.encode("latin-1")
        except UnicodeEncodeError:
            payload = b""
        if payload and not _is_utf8(payload):
            return payload
    raw = text.encode("utf-8")
    # Inject inside the first string value so the line still looks like JSON.
    at = raw.index(b'":"') + 4
    return raw[:at] + rng.choice(_BAD_UTF8) + raw[at:]


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_MALFORMERS: dict[str, Callable[[random.Random, int, _Msg], bytes]] = {
    "invalid_json": _bad_invalid_json,
    "not_an_object": _bad_not_an_object,
    "missing_field": _bad_missing_field,
    "bad_type": _bad_type,
    "bad_timestamp": _bad_timestamp,
    "not_utf8": _bad_not_utf8,
}


# --------------------------------------------------------------------------- planning


def _check_common(events: int, seed: int, rates: GeneratorRates, unclassified_field: str) -> None:
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise ValueError(f"events must be an int >= 1, got {events!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not isinstance(rates, GeneratorRates):
        raise ValueError(f"rates must be a GeneratorRates, got {type(rates).__name__}")
    if not isinstance(unclassified_field, str) or not re.fullmatch(
        r"[A-Za-z_][A-Za-z0-9_]*", unclassified_field
    ):
        raise ValueError(f"unclassified_field must be a plain field name, got {unclassified_field!r}")
    # The point of the field is that no schema knows it; a known name would test nothing.
    if unclassified_field in all_field_names("payment_event"):
        raise ValueError(f"unclassified_field {unclassified_field!r} is a payment_event schema field")


def _plan(events: int, seed: int, rates: GeneratorRates, start: str, unclassified_field: str) -> _Plan:
    _check_common(events, seed, rates, unclassified_field)
    start_us = _parse_start(start)
    # Hundreds of thousands of acyclic dicts would trigger repeated full
    # cyclic-GC passes that find nothing; pausing the collector while building
    # makes generation ~40 % faster. Nothing built here forms a cycle.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_plan(events, seed, rates, start_us, unclassified_field)
    finally:
        if was_enabled:
            gc.enable()


def _build_plan(
    events: int, seed: int, rates: GeneratorRates, start_us: int, unclassified_field: str
) -> _Plan:
    builder = _Builder(events, seed, rates, start_us, unclassified_field)
    builder.build_world()
    payments = builder.build_payments()
    payment_retries, retried = builder.build_payment_retries(payments)
    chargebacks = builder.build_chargebacks(payments, retried)
    kyc = builder.build_kyc()
    per_dataset = [payments + payment_retries, chargebacks, kyc]
    messages: list[_Msg] = []
    for dataset, good in enumerate(per_dataset):
        messages += good
        messages += builder.build_malformed(dataset, good)
    # Stable sort: ties keep build order, which is itself deterministic.
    messages.sort(key=attrgetter("arrival_us"))

    counts = {
        name: dict.fromkeys(("records", "unique", "duplicates", "malformed", "too_late"), 0)
        for name in DATASETS
    }
    by_kind: dict[str, dict[str, int]] = {name: {} for name in DATASETS}
    for msg in messages:
        name = DATASETS[msg.dataset]
        bucket = counts[name]
        bucket["records"] += 1
        if msg.kind == "duplicate":
            bucket["duplicates"] += 1
        elif msg.kind.startswith("malformed:"):
            bucket["malformed"] += 1
            kind = msg.kind.partition(":")[2]
            by_kind[name][kind] = by_kind[name].get(kind, 0) + 1
        else:
            bucket["unique"] += 1
            if msg.kind == "too_late":
                bucket["too_late"] += 1
    malformed_by_kind = {
        name: {kind: by_kind[name][kind] for kind in MALFORMED_KINDS if kind in by_kind[name]}
        for name in DATASETS
    }
    return _Plan(messages, counts, malformed_by_kind)


def _to_public(msg: _Msg) -> SyntheticMessage:
    return SyntheticMessage(
        dataset=DATASETS[msg.dataset],
        arrival_time=_EPOCH_UTC + timedelta(microseconds=msg.arrival_us),
        schema_version=msg.version,
        payload=msg.payload,
        key=msg.key,
        kind=msg.kind,
    )


# --------------------------------------------------------------------------- public API


def iter_messages(
    events: int = 10_000,
    seed: int = 7,
    rates: GeneratorRates = GeneratorRates(),
    start: str = DEFAULT_START,
    unclassified_field: str = "wallet_type",
) -> Iterator[SyntheticMessage]:
    """All records of all three datasets, merged in arrival order.

    Arguments are validated eagerly (ValueError) before the iterator is returned.
    """
    plan = _plan(events, seed, rates, start, unclassified_field)
    return (_to_public(msg) for msg in plan.messages)


def generate(
    out_dir: str,
    events: int = 10_000,
    seed: int = 7,
    fmt: str = "jsonl",
    rates: GeneratorRates = GeneratorRates(),
    records_per_file: int = 5_000,
    start: str = DEFAULT_START,
    unclassified_field: str = "wallet_type",
) -> GenerationReport:
    """Write a batch input directory (see the module docstring) and return its report.

    Refuses (FileExistsError) to write into a non-empty directory that has no
    ``_manifest.json``: it may hold real data. A directory from an earlier
    generation is reused; the files its manifest lists are removed first so no
    stale part files linger.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if isinstance(records_per_file, bool) or not isinstance(records_per_file, int) or records_per_file < 1:
        raise ValueError(f"records_per_file must be an int >= 1, got {records_per_file!r}")
    plan = _plan(events, seed, rates, start, unclassified_field)  # validate before touching the disk

    root = Path(out_dir)
    _prepare_out_dir(root)
    files: dict[str, list[str]] = {name: [] for name in DATASETS}
    for dataset, name in enumerate(DATASETS):
        stream = [m for m in plan.messages if m.dataset == dataset]
        if not stream:
            continue
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for chunk_index, first in enumerate(range(0, len(stream), records_per_file)):
            chunk = stream[first : first + records_per_file]
            if fmt == "jsonl":
                files[name].append(_write_lines(root, name, f"part-{chunk_index:05d}.jsonl", chunk))
            else:
                files[name] += _write_avro_chunk(root, name, chunk_index, chunk, seed)

    report = GenerationReport(
        out_dir=os.fspath(out_dir),
        fmt=fmt,
        seed=seed,
        files=files,
        counts=plan.counts,
        malformed_by_kind=plan.malformed_by_kind,
        params={
            "events": events,
            "start": start,
            "records_per_file": records_per_file,
            "unclassified_field": unclassified_field,
            "rates": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(rates).items()},
        },
    )
    # Written last and atomically: a manifest only ever describes a finished generation.
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(report.to_json(), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
    return report


# --------------------------------------------------------------------------- writing


def _prepare_out_dir(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / MANIFEST
    if not manifest.is_file():
        if any(root.iterdir()):
            raise FileExistsError(
                f"{root} is not empty and has no {MANIFEST}; refusing to write synthetic data "
                "into a folder that may hold real data (use an empty or new directory)"
            )
        return
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        if not isinstance(previous, dict):
            raise TypeError("files is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise FileExistsError(f"{manifest} is not a synthetic-data manifest; refusing to overwrite") from exc
    folders = set()
    for paths in previous.values():
        for rel in paths:
            # Only ever delete files this generator names, inside root: a
            # hand-edited manifest must not turn into "rm anything".
            if isinstance(rel, str) and _FILE_NAME.match(rel):
                (root / rel).unlink(missing_ok=True)
                folders.add(root / rel.split("/")[0])
    for folder in folders:
        try:
            folder.rmdir()  # only succeeds when empty; other files stay untouched
        except OSError:
            pass


def _write_lines(root: Path, dataset: str, file_name: str, chunk: list[_Msg]) -> str:
    (root / dataset / file_name).write_bytes(b"".join(m.payload + b"\n" for m in chunk))
    return f"{dataset}/{file_name}"


def _sync_marker(seed: int, dataset: str, chunk_index: int, version: int) -> bytes:
    # Avro wants a random 16-byte marker per file; derive it so output is reproducible.
    material = f"riskpipe-synthetic/{seed}/{dataset}/{chunk_index}/v{version}".encode()
    return hashlib.sha256(material).digest()[:16]


def _write_avro_chunk(root: Path, dataset: str, chunk_index: int, chunk: list[_Msg], seed: int) -> list[str]:
    written = []
    by_version: dict[int, list[dict[str, Any]]] = {}
    malformed: list[_Msg] = []
    for msg in chunk:
        if msg.record is None:
            malformed.append(msg)
        else:
            by_version.setdefault(msg.version, []).append(msg.record)
    for version in sorted(by_version):
        # fastavro's parsed schema (load_schema) orders its keys by set
        # iteration, i.e. by PYTHONHASHSEED, and the writer embeds it in the
        # file header. The raw .avsc dict is the same schema in a stable order.
        load_schema(dataset, version)  # fail early, with the loader's message, on an unparsable schema
        schema = raw_schema(dataset, version)
        names = [f["name"] for f in schema["fields"]]
        # Project onto the writer schema: absent optional fields become null,
        # the unclassified field (in no schema) is dropped.
        records = [{n: record.get(n) for n in names} for record in by_version[version]]
        file_name = f"part-{chunk_index:05d}-v{version}.avro"
        with open(root / dataset / file_name, "wb") as fh:
            fastavro.writer(
                fh,
                schema,
                records,
                codec="deflate",
                sync_marker=_sync_marker(seed, dataset, chunk_index, version),
            )
        written.append(f"{dataset}/{file_name}")
    if malformed:
        written.append(_write_lines(root, dataset, f"part-{chunk_index:05d}-malformed.jsonl", malformed))
    return written
