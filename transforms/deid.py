"""``LocalDeidEngine``: run Cloud DLP ``DeidentifyConfig`` templates locally, on batches of records.

What: an engine that takes a DLP de-identify template exactly as the DLP REST API spells it (camelCase
JSON, ``{"recordTransformations": {"fieldTransformations": [...]}}``) and applies it to batches of
Python dict records. It is riskpipe's default engine because no personal data has to leave the
processing cloud; a Cloud DLP engine with the same interface can replace it, which is why templates
stay in DLP's own format and are validated against it here.

Why it is strict: a template is a security control. Anything this engine does not implement — an
unknown primitive, a ``condition``, ``infoTypeTransformations``, record suppressions, an unknown key
inside a config (a typo such as ``numbertoMask`` would otherwise silently mask everything, or nothing)
— is a ``ValueError`` at construction that names the key. Nothing is ever ignored. The template is
a bare ``DeidentifyConfig`` holding only ``recordTransformations.fieldTransformations``;
``transformationErrorHandling`` is refused too, because the failure policy below is fixed.

Primitives (per DLP documentation) and where this engine deliberately differs:

* ``cryptoDeterministicConfig`` — AES-SIV (RFC 5297) with the 64-byte data key. Token text is
  ``SURROGATE(<len>):<body>`` as DLP writes surrogates (no prefix when ``surrogateInfoType`` is
  absent), but the body is ``<key version>.<base64url ciphertext, unpadded>`` so a token names the
  key version that made it and keys can rotate. *Deviation:* ``context.name`` is a literal string
  used as the associated data (e.g. ``"payment_event.card_fingerprint"``), not the name of a field
  whose value is looked up; tokens therefore join across records and datasets per context, which is
  the point. Without ``context`` there is no associated data.
* ``cryptoHashConfig`` — HMAC-SHA256, standard base64 with padding (DLP's output form), of the UTF-8
  text (non-strings hash as their ``str()``, so ``42`` and ``"42"`` hash alike). Not reversible, and
  the output carries no key version: rotating the key changes every hash.
* ``cryptoReplaceFfxFpeConfig`` — FF3-1 (NIST SP 800-38G Rev. 1) over AES-256, implemented here on
  AES-ECB as the standard's CIPH. The 56-bit tweak is the first 7 bytes of SHA-256 of the literal
  context string ("" when absent). *Deviations:* DLP uses its own FFX variant, so tokens differ
  from Cloud DLP's. DLP rejects values with characters outside the alphabet; we keep punctuation,
  whitespace and other non-alphanumeric characters in place (card numbers with dashes) and encrypt
  the rest, but a value with an out-of-alphabet LETTER or DIGIT (e.g. lowercase hex under
  ``HEXADECIMAL``) is not encrypted, because that character would pass through in the clear. Such
  values, and values whose alphabet-character count is outside FF3-1's domain (``radix**n >=
  1_000_000`` and ``n <= 2*floor(log_radix(2**96))``; e.g. 6..56 digits), are replaced by ``*`` of
  the same length and counted in ``failures``. ``radix`` selects the first ``radix`` characters of
  ``0-9A-Za-z`` followed by the remaining printable ASCII in code-point order. FPE tokens have no
  room for a key version (DLP's neither): re-identification uses the resolver's CURRENT version,
  so an FPE key must not rotate without re-tokenizing (or re-identify with a resolver pinned to the
  old version).
* ``characterMaskConfig`` — as documented, including ``reverseOrder``, ``charactersToIgnore``
  (``charactersToSkip`` / ``commonCharactersToIgnore``) and inverse masking for a negative
  ``numberToMask`` ("mask all but N"). ``maskingCharacter`` defaults to ``*``, or ``0`` for numeric
  (int/float) values as DLP documents; the output is always text.
* ``fixedSizeBucketingConfig`` — DLP's documented labels: ``"10-20"`` for a bucket, ``"-10"`` below
  ``lowerBound``, ``"89+"`` above ``upperBound`` (and, our reading, at it); the last bucket is cut
  at the upper bound (``"80-89"``). Buckets are half-open ``[lo, hi)``. Numeric text is accepted
  (DLP converts values to the bound's type).
* ``bucketingConfig`` — ``min`` inclusive, ``max`` exclusive, either may be omitted; bounds are
  integer/float (compared as numbers) or string values. Overlapping buckets are refused.
  *Deviation (fail closed):* a value in no bucket becomes ``None`` and is counted, never passed through.
* ``timePartConfig`` — on ``YYYY-MM-DD`` dates, RFC 3339 timestamps (converted to UTC first) and
  ``date``/``datetime`` objects (naive = UTC). ``DAY_OF_WEEK`` is 1 = Monday … 7 = Sunday (DLP's
  ``DayOfWeek``); ``WEEK_OF_YEAR`` is the ISO 8601 week. ``HOUR_OF_DAY`` of a bare date fails.
* ``dateShiftConfig`` — as in DLP, ``context.name`` IS a field: the shift, in
  ``[lowerBoundDays, upperBoundDays]``, is derived from HMAC(key, value of that field in the input
  record as received), so all dates of one subject move together. *Deviations:* ``cryptoKey`` and
  ``context`` are required (DLP's random shift is not reproducible); a record without a context
  value gets ``None`` and a failure count, never a random shift. Timestamps keep their time and offset.
* ``replaceConfig`` — ``newValue`` is a DLP ``Value`` object, converted to the Python value
  (``integerValue`` → int, dates/times → ISO text, ``dayOfWeekValue`` → its enum name).
* ``redactConfig`` — DLP removes the content; for a column we write ``None``.

Record handling: outputs are new dicts (inputs are never mutated). A field that is missing stays
missing; ``None`` stays ``None``. Values of the wrong type for a text primitive are converted with
``str()`` (so outputs of text primitives are text; re-identification returns text). Empty strings pass
through the crypto primitives unchanged (their token would reveal emptiness just the same). Dotted
names (``billing_postal.postal_code``) read into nested dicts when the record has no key with the
literal dotted name; if an intermediate value exists but is not a dict, that intermediate is
replaced by ``None`` and counted — the leaf we were told to protect might be inside it. A field may
be transformed only once per template (otherwise the result would depend on the order).

Failure policy: ``deidentify`` never raises on odd values. A value that cannot be transformed
becomes ``None`` (or, for FPE, a ``*`` mask) and ``failures[field]`` is incremented; so does a token
that does not re-identify in ``reidentify`` (``reidentify_value`` raises ``DeidError``). No record value
— raw or token — ever appears in an exception message (exceptions are raised ``from None`` so a
library message quoting the value is not chained) and this module logs nothing.

Keys: the engine never talks to KMS. A ``KeyResolver`` maps ``cryptoKey.kmsWrapped.cryptoKeyName``
to 64-byte key versions (the template's ``wrappedKey`` is ignored: the resolver owns the wrapped
material). ``unwrapped`` keys are refused (raw keys must never sit in a template) and so are
``transient`` keys (not deterministic). AES-SIV uses the 64-byte key as is; HMAC, FF3-1 and date
shifting use 32-byte sub-keys derived with HKDF-SHA256 (no salt; ``info`` is
``b"riskpipe/crypto-hash"``, ``b"riskpipe/ff3-1"`` or ``b"riskpipe/date-shift"``) so one key never
serves two algorithms. Current keys are resolved once at construction; older versions are fetched
lazily for re-identification and cached.

Not thread-safe (``failures`` is a plain counter): use one engine per DoFn instance.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import re
import string
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transforms.timeutil import parse_rfc3339_micros

__all__ = [
    "DeidError",
    "KeyResolver",
    "LocalDeidEngine",
    "StaticKeyResolver",
    "ff3_1_decrypt",
    "ff3_1_encrypt",
]

KEY_BYTES = 64
_SUBKEY_BYTES = 32
_MAX_VERSION = 10**9 - 1  # tokens spell the version with at most 9 digits

# DLP infoType names: this also makes the surrogate prefix unambiguous to parse (no "(" or ":").
_INFO_TYPE_NAME = re.compile(r"[A-Za-z0-9$_-]{1,64}")
_SIV_BODY = re.compile(r"([0-9]{1,9})\.([A-Za-z0-9_-]+)")
_SURROGATE_LENGTH = re.compile(r"([0-9]{1,9})\):")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class DeidError(ValueError):
    """A de-/re-identification request that cannot be served. Messages never contain record values."""


class KeyResolver(Protocol):
    """Where data keys come from; the engine never reads KMS itself."""

    def current(self, key_name: str) -> tuple[int, bytes]:
        """(version, 64-byte key material) used to tokenize."""
        ...

    def version(self, key_name: str, version: int) -> bytes:
        """The key material of an older version, to re-identify old tokens."""
        ...


def _check_key(key_name: str, version: object, material: object) -> None:
    # messages name the key and version only, never material
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= _MAX_VERSION:
        raise ValueError(f"key {key_name!r}: version must be an int in [0, {_MAX_VERSION}]")
    if not isinstance(material, bytes) or len(material) != KEY_BYTES:
        raise ValueError(f"key {key_name!r} version {version}: material must be {KEY_BYTES} bytes")


class StaticKeyResolver:
    """Keys held in memory: for tests and the local dev default (``io_connectors.keys``)."""

    __slots__ = ("_current", "_keys")

    def __init__(self, keys: Mapping[str, Mapping[int, bytes]], current: Mapping[str, int]):
        self._keys: dict[str, dict[int, bytes]] = {}
        for name, versions in keys.items():
            copied = {}
            for version, material in versions.items():
                material = bytes(material) if isinstance(material, bytearray) else material
                _check_key(name, version, material)
                copied[version] = material
            self._keys[name] = copied
        self._current = dict(current)
        for name, version in self._current.items():
            if version not in self._keys.get(name, {}):
                raise ValueError(f"key {name!r}: current version {version} is not among its versions")

    def current(self, key_name: str) -> tuple[int, bytes]:
        if key_name not in self._current:
            raise DeidError(f"no current version for key {key_name!r}")
        version = self._current[key_name]
        return version, self._keys[key_name][version]

    def version(self, key_name: str, version: int) -> bytes:
        try:
            return self._keys[key_name][version]
        except KeyError:
            raise DeidError(f"key {key_name!r} has no version {version}") from None

    def __repr__(self) -> str:  # never show material
        return f"StaticKeyResolver(keys={sorted(self._keys)})"


class _Keyring:
    """Caches the resolver's answers and the derived sub-keys, per (name, version)."""

    def __init__(self, resolver: KeyResolver):
        self._resolver = resolver
        self._current: dict[str, int] = {}
        self._material: dict[tuple[str, int], bytes] = {}
        self._derived: dict[tuple[str, int, str], bytes] = {}
        self._siv: dict[tuple[str, int], AESSIV] = {}

    def load_current(self, name: str) -> int:
        if name not in self._current:
            version, material = self._resolver.current(name)
            _check_key(name, version, material)
            self._current[name] = version
            self._material[(name, version)] = material
        return self._current[name]

    def material(self, name: str, version: int) -> bytes:
        if (name, version) not in self._material:
            material = self._resolver.version(name, version)
            _check_key(name, version, material)
            self._material[(name, version)] = material
        return self._material[(name, version)]

    def subkey(self, name: str, version: int, purpose: str) -> bytes:
        cache_key = (name, version, purpose)
        if cache_key not in self._derived:
            hkdf = HKDF(
                algorithm=hashes.SHA256(),
                length=_SUBKEY_BYTES,
                salt=None,
                info=f"riskpipe/{purpose}".encode(),
            )
            self._derived[cache_key] = hkdf.derive(self.material(name, version))
        return self._derived[cache_key]

    def siv(self, name: str, version: int) -> AESSIV:
        if (name, version) not in self._siv:
            self._siv[(name, version)] = AESSIV(self.material(name, version))
        return self._siv[(name, version)]


# --------------------------------------------------------------------------------------------------
# Template parsing helpers. Messages name keys and paths, never values (a template value such as a
# replacement could itself be sensitive, and echoing is never needed to fix a template).


def _obj(value: object, where: str, allowed: Collection[str], required: Collection[str] = ()) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object")
    for key in value:
        if key not in allowed:
            raise ValueError(f"{where}: unsupported key {key!r}")
    for key in sorted(required):
        if key not in value:
            raise ValueError(f"{where}: missing required key {key!r}")
    return value


def _one_of(value: object, where: str, allowed: Collection[str]) -> tuple[str, Any]:
    obj = _obj(value, where, allowed)
    if len(obj) != 1:
        raise ValueError(f"{where}: expected exactly one of {sorted(allowed)}")
    ((key, inner),) = obj.items()
    return key, inner


def _int(value: object, where: str) -> int:
    # proto3 JSON writes int64 as a string; accept both spellings, but never bools or fractions
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):
        return int(value)
    raise ValueError(f"{where}: expected an integer")


def _number(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where}: expected a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where}: expected a number") from None
    if not number.is_finite():
        raise ValueError(f"{where}: expected a finite number")
    return number


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string")
    return value


_VALUE_KINDS = {
    "integerValue",
    "floatValue",
    "stringValue",
    "booleanValue",
    "timestampValue",
    "timeValue",
    "dateValue",
    "dayOfWeekValue",
}
_DAYS_OF_WEEK = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


def _value(value: object, where: str) -> tuple[str, Any]:
    """A DLP ``Value`` JSON object → (kind, Python value)."""
    kind, inner = _one_of(value, where, _VALUE_KINDS)
    where = f"{where}.{kind}"
    if kind == "integerValue":
        return kind, _int(inner, where)
    if kind == "floatValue":
        return kind, float(_number(inner, where))
    if kind == "stringValue":
        return kind, _text(inner, where)
    if kind == "booleanValue":
        if not isinstance(inner, bool):
            raise ValueError(f"{where}: expected a boolean")
        return kind, inner
    if kind == "timestampValue":
        text = _text(inner, where)
        try:
            parse_rfc3339_micros(text)
        except ValueError:
            raise ValueError(f"{where}: expected an RFC 3339 timestamp") from None
        return kind, text
    if kind == "dateValue":
        parts = _obj(inner, where, {"year", "month", "day"}, {"year", "month", "day"})
        try:
            day = dt.date(*(_int(parts[k], f"{where}.{k}") for k in ("year", "month", "day")))
        except (ValueError, OverflowError):
            raise ValueError(f"{where}: not a valid date") from None
        return kind, day.isoformat()
    if kind == "timeValue":
        parts = _obj(inner, where, {"hours", "minutes", "seconds", "nanos"})
        h, m, s, n = (_int(parts.get(k, 0), f"{where}.{k}") for k in ("hours", "minutes", "seconds", "nanos"))
        try:
            moment = dt.time(h, m, s, n // 1000)
        except (ValueError, OverflowError):
            raise ValueError(f"{where}: not a valid time of day") from None
        return kind, moment.isoformat()
    # dayOfWeekValue
    if inner not in _DAYS_OF_WEEK:
        raise ValueError(f"{where}: expected one of {list(_DAYS_OF_WEEK)}")
    return kind, inner


def _key_name(value: object, where: str) -> str:
    kind, inner = _one_of(value, where, {"kmsWrapped", "unwrapped", "transient"})
    if kind == "unwrapped":
        raise ValueError(f"{where}.unwrapped: raw keys in templates are forbidden (use kmsWrapped)")
    if kind == "transient":
        raise ValueError(f"{where}.transient: transient keys are refused (tokens would not be deterministic)")
    wrapped = _obj(inner, f"{where}.kmsWrapped", {"wrappedKey", "cryptoKeyName"}, {"cryptoKeyName"})
    name = wrapped["cryptoKeyName"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.kmsWrapped.cryptoKeyName: expected a non-empty string")
    return name


def _surrogate(value: object, where: str) -> str:
    # DLP's surrogateInfoType also allows version/sensitivityScore; we only use the name
    info = _obj(value, where, {"name"}, {"name"})
    name = info["name"]
    if not isinstance(name, str) or not _INFO_TYPE_NAME.fullmatch(name):
        raise ValueError(f"{where}.name: expected an infoType name matching {_INFO_TYPE_NAME.pattern}")
    return name


def _context_name(value: object, where: str) -> str:
    context = _obj(value, where, {"name"}, {"name"})
    name = context["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: expected a non-empty string")
    return name


def _with_surrogate(surrogate: str | None, body: str) -> str:
    return body if surrogate is None else f"{surrogate}({len(body)}):{body}"


def _strip_surrogate(surrogate: str | None, token: str) -> str:
    if surrogate is None:
        return token
    prefix = f"{surrogate}("
    if not token.startswith(prefix):
        raise _Unmappable()
    match = _SURROGATE_LENGTH.match(token, len(prefix))
    if match is None:
        raise _Unmappable()
    body = token[match.end() :]
    if len(body) != int(match.group(1)):
        raise _Unmappable()
    return body


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# --------------------------------------------------------------------------------------------------
# Per-value failure handling.


class _Unmappable(Exception):
    """A value this primitive cannot transform; ``replacement`` is written instead. Carries no value."""

    def __init__(self, replacement: Any = None):
        super().__init__("value cannot be transformed")
        self.replacement = replacement


def _map_values(fn: Callable[[Any], Any], values: Sequence[Any]) -> tuple[list[Any], int]:
    out: list[Any] = []
    failed = 0
    for value in values:
        if value is None:
            out.append(None)
            continue
        try:
            out.append(fn(value))
        except _Unmappable as exc:
            out.append(exc.replacement)
            failed += 1
        except Exception:  # noqa: BLE001 - one poison value costs one cell, never the job; the exception (which may quote the value) is dropped unlogged
            out.append(None)
            failed += 1
    return out, failed


# --------------------------------------------------------------------------------------------------
# Primitives. ``forward(values, records)`` gets the present values of one field across the batch and
# the matching input records (for dateShift's context); it returns the outputs and a failure count.


class _Primitive:
    reversible = False

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        raise NotImplementedError

    def reverse_one(self, token: Any) -> str:
        raise NotImplementedError

    def reverse(self, tokens: list[Any]) -> tuple[list[Any], int]:
        return _map_values(self.reverse_one, tokens)


class _Deterministic(_Primitive):
    reversible = True

    def __init__(self, cfg: object, where: str, keys: _Keyring):
        cfg = _obj(cfg, where, {"cryptoKey", "surrogateInfoType", "context"}, {"cryptoKey"})
        self._key = _key_name(cfg["cryptoKey"], f"{where}.cryptoKey")
        self._surrogate = (
            _surrogate(cfg["surrogateInfoType"], f"{where}.surrogateInfoType")
            if "surrogateInfoType" in cfg
            else None
        )
        context = _context_name(cfg["context"], f"{where}.context") if "context" in cfg else None
        self._ad = None if context is None else [context.encode("utf-8")]
        self._keys = keys
        self._version = keys.load_current(self._key)
        self._siv = keys.siv(self._key, self._version)

    def _token(self, value: Any) -> str:
        text = _as_text(value)
        if not text:
            return text  # AES-SIV refuses empty input; see the module docstring
        # surrogatepass: a lone surrogate from a sloppy JSON producer must still round-trip
        ciphertext = self._siv.encrypt(text.encode("utf-8", "surrogatepass"), self._ad)
        body = f"{self._version}.{base64.urlsafe_b64encode(ciphertext).rstrip(b'=').decode('ascii')}"
        return _with_surrogate(self._surrogate, body)

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        return _map_values(self._token, values)

    def reverse_one(self, token: Any) -> str:
        if not isinstance(token, str):
            raise _Unmappable()
        if not token:
            return token
        match = _SIV_BODY.fullmatch(_strip_surrogate(self._surrogate, token))
        if match is None:
            raise _Unmappable()
        encoded = match.group(2)
        ciphertext = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        siv = self._keys.siv(self._key, int(match.group(1)))
        return siv.decrypt(ciphertext, self._ad).decode("utf-8", "surrogatepass")


class _CryptoHash(_Primitive):
    def __init__(self, cfg: object, where: str, keys: _Keyring):
        cfg = _obj(cfg, where, {"cryptoKey"}, {"cryptoKey"})
        name = _key_name(cfg["cryptoKey"], f"{where}.cryptoKey")
        self._mac_key = keys.subkey(name, keys.load_current(name), "crypto-hash")

    def _hash(self, value: Any) -> str:
        digest = hmac.digest(self._mac_key, _as_text(value).encode("utf-8", "surrogatepass"), "sha256")
        return base64.b64encode(digest).decode("ascii")

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        return _map_values(self._hash, values)


# ---- FF3-1 ---------------------------------------------------------------------------------------

_COMMON_ALPHABETS = {
    "NUMERIC": string.digits,
    "HEXADECIMAL": string.digits + "ABCDEF",
    "UPPER_CASE_ALPHA_NUMERIC": string.digits + string.ascii_uppercase,
    "ALPHA_NUMERIC": string.digits + string.ascii_uppercase + string.ascii_lowercase,
}
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))  # DLP's custom alphabets live in these 95
_RADIX_ORDER = _COMMON_ALPHABETS["ALPHA_NUMERIC"] + "".join(
    c for c in _PRINTABLE if c not in _COMMON_ALPHABETS["ALPHA_NUMERIC"]
)
_FF3_MIN_DOMAIN = 1_000_000  # SP 800-38G Rev. 1: radix**minlen >= 10**6


def _ff3_bounds(radix: int) -> tuple[int, int]:
    """(minlen, maxlen) of FF3-1 for ``radix``: radix**minlen >= 10**6, maxlen = 2*floor(log_radix(2**96))."""
    minlen = 2
    while radix**minlen < _FF3_MIN_DOMAIN:
        minlen += 1
    half = 0
    while radix ** (half + 1) <= 2**96:
        half += 1
    return minlen, 2 * half


def ff3_1_tweak_halves(tweak: bytes) -> tuple[int, int]:
    """FF3-1's (T_L, T_R) from a 56-bit tweak: T_L = T[0..27]||0^4, T_R = T[32..55]||T[28..31]||0^4."""
    if len(tweak) != 7:
        raise ValueError("FF3-1 needs a 7-byte (56-bit) tweak")
    left = int.from_bytes(tweak[:4], "big") & 0xFFFFFFF0
    right = (int.from_bytes(tweak[4:], "big") << 8) | ((tweak[3] & 0x0F) << 4)
    return left, right


def _ff3_ecb(key: bytes) -> Callable[[bytes], bytes]:
    """CIPH_REVB(K) of FF3: AES under the byte-reversed key, a bare block cipher (hence ECB)."""
    encryptor = Cipher(algorithms.AES(key[::-1]), modes.ECB()).encryptor()  # noqa: S305 - FF3-1 is defined on the raw block cipher
    return encryptor.update


def ff3_feistel(
    ciph: Callable[[bytes], bytes],
    radix: int,
    tweak_l: int,
    tweak_r: int,
    jobs: Sequence[tuple[int, int, int, int]],
    decrypt: bool = False,
) -> list[tuple[int, int]]:
    """The eight FF3 rounds for a batch of numeral strings, one AES call per round for the whole batch.

    Each job is ``(a, b, u, v)`` with ``a = NUM_radix(REV(A))`` and ``b = NUM_radix(REV(B))`` of the
    halves A (u numerals) and B (v numerals). Keeping the halves as these integers makes the
    standard's REV/NUM/STR steps disappear: ``REV(STR^m(c))`` read back with ``NUM(REV(.))`` is ``c``.
    The block fed to AES is ``REVB(W xor [i]^4 || [NUM(REV(B))]^12)``, i.e. the 12 bytes of the
    numeral little-endian followed by the 4 bytes of ``W xor i`` little-endian; ``NUM(REVB(S))`` of
    the output is its little-endian value. Returns the final ``(a, b)``.
    """
    state = [(a, b) for a, b, _, _ in jobs]
    moduli = [(radix**u, radix**v) for _, _, u, v in jobs]
    rounds = range(7, -1, -1) if decrypt else range(8)
    for i in rounds:
        tweak = (tweak_r if i % 2 == 0 else tweak_l) ^ i
        tail = tweak.to_bytes(4, "little")
        # encryption feeds B, decryption feeds A, into the round function
        blocks = b"".join((a if decrypt else b).to_bytes(12, "little") + tail for a, b in state)
        out = ciph(blocks)
        parity = i % 2
        new_state = []
        for j, (a, b) in enumerate(state):
            y = int.from_bytes(out[16 * j : 16 * j + 16], "little")
            modulus = moduli[j][parity]
            if decrypt:
                new_state.append(((b - y) % modulus, a))
            else:
                new_state.append((b, (a + y) % modulus))
        state = new_state
    return state


def _split_numerals(numerals: Sequence[int], radix: int) -> tuple[int, int, int, int]:
    n = len(numerals)
    u = (n + 1) // 2
    a = b = 0
    for d in reversed(numerals[:u]):
        a = a * radix + d
    for d in reversed(numerals[u:]):
        b = b * radix + d
    return a, b, u, n - u


def _join_numerals(a: int, b: int, u: int, v: int, radix: int) -> list[int]:
    out = []
    for count, value in ((u, a), (v, b)):
        for _ in range(count):
            value, digit = divmod(value, radix)
            out.append(digit)
    return out


def _ff3_1_one(key: bytes, tweak: bytes, radix: int, numerals: Sequence[int], decrypt: bool) -> list[int]:
    if not 2 <= radix <= 2**16:
        raise ValueError("FF3-1 radix must be in [2, 2**16]")
    minlen, maxlen = _ff3_bounds(radix)
    if not minlen <= len(numerals) <= maxlen or any(not 0 <= d < radix for d in numerals):
        raise ValueError(f"FF3-1 with radix {radix} takes {minlen}..{maxlen} numerals in [0, radix)")
    left, right = ff3_1_tweak_halves(tweak)
    job = _split_numerals(numerals, radix)
    ((a, b),) = ff3_feistel(_ff3_ecb(key), radix, left, right, [job], decrypt=decrypt)
    return _join_numerals(a, b, job[2], job[3], radix)


def ff3_1_encrypt(key: bytes, tweak: bytes, radix: int, numerals: Sequence[int]) -> list[int]:
    """FF3-1 encryption of one numeral string (16/24/32-byte AES key, 7-byte tweak); for tests, tools."""
    return _ff3_1_one(key, tweak, radix, numerals, decrypt=False)


def ff3_1_decrypt(key: bytes, tweak: bytes, radix: int, numerals: Sequence[int]) -> list[int]:
    """The inverse of ``ff3_1_encrypt``."""
    return _ff3_1_one(key, tweak, radix, numerals, decrypt=True)


class _Fpe(_Primitive):
    reversible = True

    def __init__(self, cfg: object, where: str, keys: _Keyring):
        cfg = _obj(
            cfg,
            where,
            {"cryptoKey", "context", "commonAlphabet", "customAlphabet", "radix", "surrogateInfoType"},
            {"cryptoKey"},
        )
        self._key = _key_name(cfg["cryptoKey"], f"{where}.cryptoKey")
        self._surrogate = (
            _surrogate(cfg["surrogateInfoType"], f"{where}.surrogateInfoType")
            if "surrogateInfoType" in cfg
            else None
        )
        self._alphabet = self._parse_alphabet(cfg, where)
        self._radix = len(self._alphabet)
        self._index = {c: i for i, c in enumerate(self._alphabet)}
        self._minlen, self._maxlen = _ff3_bounds(self._radix)
        context = _context_name(cfg["context"], f"{where}.context") if "context" in cfg else ""
        self._tweak = ff3_1_tweak_halves(hashlib.sha256(context.encode("utf-8")).digest()[:7])
        self._cipher_key = keys.subkey(self._key, keys.load_current(self._key), "ff3-1")

    @staticmethod
    def _parse_alphabet(cfg: dict, where: str) -> str:
        chosen = [k for k in ("commonAlphabet", "customAlphabet", "radix") if k in cfg]
        if len(chosen) != 1:
            raise ValueError(f"{where}: expected exactly one of commonAlphabet, customAlphabet, radix")
        kind = chosen[0]
        value = cfg[kind]
        if kind == "commonAlphabet":
            if value not in _COMMON_ALPHABETS:
                raise ValueError(f"{where}.commonAlphabet: expected one of {sorted(_COMMON_ALPHABETS)}")
            return _COMMON_ALPHABETS[value]
        if kind == "customAlphabet":
            if (
                not isinstance(value, str)
                or not 2 <= len(value) <= 95
                or len(set(value)) != len(value)
                or any(c not in _PRINTABLE for c in value)
            ):
                raise ValueError(
                    f"{where}.customAlphabet: expected 2..95 distinct printable ASCII characters"
                )
            return value
        radix = _int(value, f"{where}.radix")
        if not 2 <= radix <= 95:
            raise ValueError(f"{where}.radix: expected 2..95")
        return _RADIX_ORDER[:radix]

    def _prepare(self, text: str) -> tuple[list[int], list[int]] | None:
        """(positions, numerals) of the alphabet characters, or None if the value cannot be encrypted."""
        positions: list[int] = []
        numerals: list[int] = []
        index = self._index
        for pos, char in enumerate(text):
            numeral = index.get(char)
            if numeral is not None:
                positions.append(pos)
                numerals.append(numeral)
            elif char.isalnum():
                return None  # it would pass through in the clear
        if not self._minlen <= len(numerals) <= self._maxlen:
            return None
        return positions, numerals

    def _run(self, texts: list[str], decrypt: bool) -> tuple[list[str | None], list[bool]]:
        """FF3-1 over every text; (outputs, failed flags). Failed outputs are None."""
        prepared = [self._prepare(text) if text else None for text in texts]
        jobs = [_split_numerals(p[1], self._radix) for p in prepared if p is not None]
        # a fresh ECB context per batch: cheap, and nothing stateful is shared between calls
        ciph = _ff3_ecb(self._cipher_key)
        results = iter(ff3_feistel(ciph, self._radix, *self._tweak, jobs, decrypt=decrypt) if jobs else [])
        job_iter = iter(jobs)
        outputs: list[str | None] = []
        failed: list[bool] = []
        for text, prep in zip(texts, prepared, strict=True):
            if not text:
                outputs.append(text)
                failed.append(False)
                continue
            if prep is None:
                outputs.append(None)
                failed.append(True)
                continue
            a, b = next(results)
            _, _, u, v = next(job_iter)
            chars = list(text)
            for pos, numeral in zip(prep[0], _join_numerals(a, b, u, v, self._radix), strict=True):
                chars[pos] = self._alphabet[numeral]
            outputs.append("".join(chars))
            failed.append(False)
        return outputs, failed

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        texts: list[str] = []
        slots: list[int] = []  # index into values of each text; None values stay None
        out: list[Any] = [None] * len(values)
        failures = 0
        for i, value in enumerate(values):
            if value is None:
                continue
            try:
                texts.append(_as_text(value))
            except Exception:  # noqa: BLE001 - a hostile __str__ costs one cell; its message is dropped
                failures += 1
                continue
            slots.append(i)
        results, failed = self._run(texts, decrypt=False)
        for slot, text, result, bad in zip(slots, texts, results, failed, strict=True):
            if bad:
                out[slot] = "*" * len(text)  # see the module docstring: masked and counted
                failures += 1
            else:
                out[slot] = result if not result else _with_surrogate(self._surrogate, result)
        return out, failures

    def reverse(self, tokens: list[Any]) -> tuple[list[Any], int]:
        # no version in an FPE token: the current key it is (see the module docstring)
        out: list[Any] = [None] * len(tokens)
        failures = 0
        bodies: list[str] = []
        slots: list[int] = []
        for i, token in enumerate(tokens):
            if token is None:
                continue
            if not isinstance(token, str):
                failures += 1
                continue
            try:
                bodies.append(_strip_surrogate(self._surrogate, token) if token else token)
            except _Unmappable:
                failures += 1
                continue
            slots.append(i)
        results, failed = self._run(bodies, decrypt=True)
        for slot, result, bad in zip(slots, results, failed, strict=True):
            out[slot] = result
            failures += bad
        return out, failures

    def reverse_one(self, token: Any) -> str:
        (result,), failures = self.reverse([token])
        if failures or result is None:
            raise _Unmappable()
        return result


# ---- masking, generalization, replacement ------------------------------------------------------

_COMMON_IGNORE = {
    "NUMERIC": string.digits,
    "ALPHA_UPPER_CASE": string.ascii_uppercase,
    "ALPHA_LOWER_CASE": string.ascii_lowercase,
    "PUNCTUATION": string.punctuation,  # DLP: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
    "WHITESPACE": " \t\n\x0b\f\r",
}


class _CharMask(_Primitive):
    def __init__(self, cfg: object, where: str, keys: _Keyring):
        cfg = _obj(cfg, where, {"maskingCharacter", "numberToMask", "reverseOrder", "charactersToIgnore"})
        mask = cfg.get("maskingCharacter")
        if mask is not None and (not isinstance(mask, str) or len(mask) != 1):
            raise ValueError(f"{where}.maskingCharacter: expected a single character")
        self._mask = mask
        self._count = _int(cfg.get("numberToMask", 0), f"{where}.numberToMask")
        reverse = cfg.get("reverseOrder", False)
        if not isinstance(reverse, bool):
            raise ValueError(f"{where}.reverseOrder: expected a boolean")
        self._reverse = reverse
        ignore_list = cfg.get("charactersToIgnore", [])
        if not isinstance(ignore_list, list):
            raise ValueError(f"{where}.charactersToIgnore: expected a list")
        ignore: set[str] = set()
        for n, item in enumerate(ignore_list):
            item_where = f"{where}.charactersToIgnore[{n}]"
            kind, inner = _one_of(item, item_where, {"charactersToSkip", "commonCharactersToIgnore"})
            if kind == "charactersToSkip":
                ignore.update(_text(inner, f"{item_where}.charactersToSkip"))
            elif inner in _COMMON_IGNORE:
                ignore.update(_COMMON_IGNORE[inner])
            else:
                raise ValueError(
                    f"{item_where}.commonCharactersToIgnore: expected one of {sorted(_COMMON_IGNORE)}"
                )
        self._ignore = frozenset(ignore)

    def _apply(self, value: Any) -> str:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        mask = self._mask if self._mask is not None else ("0" if numeric else "*")
        chars = list(_as_text(value))
        maskable = [i for i, c in enumerate(chars) if c not in self._ignore]
        total = len(maskable)
        if self._count == 0:
            count = total
        elif self._count > 0:
            count = min(self._count, total)
        else:  # inverse masking: everything but |n| characters, at the far end from where masking starts
            count = max(total + self._count, 0)
        targets = maskable[total - count :] if self._reverse else maskable[:count]
        for i in targets:
            chars[i] = mask
        return "".join(chars)

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        return _map_values(self._apply, values)


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _Unmappable()
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, (int, float)):
        number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    elif isinstance(value, str):
        number = Decimal(value.strip())  # InvalidOperation → counted by _map_values
    else:
        raise _Unmappable()
    if not number.is_finite():
        raise _Unmappable()
    return number


def _format_decimal(number: Decimal) -> str:
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


class _FixedBucketing(_Primitive):
    def __init__(self, cfg: object, where: str, keys: _Keyring):
        required = {"lowerBound", "upperBound", "bucketSize"}
        cfg = _obj(cfg, where, required, required)
        bounds = []
        for name in ("lowerBound", "upperBound"):
            kind, bound = _value(cfg[name], f"{where}.{name}")
            if kind not in ("integerValue", "floatValue"):
                raise ValueError(f"{where}.{name}: expected integerValue or floatValue")
            bounds.append(_number(bound, f"{where}.{name}"))
        self._lower, self._upper = bounds
        self._size = _number(cfg["bucketSize"], f"{where}.bucketSize")
        if self._size <= 0 or self._lower >= self._upper:
            raise ValueError(f"{where}: need bucketSize > 0 and lowerBound < upperBound")

    def _bucket(self, value: Any) -> str:
        number = _to_decimal(value)
        if number < self._lower:
            return f"-{_format_decimal(self._lower)}"
        if number >= self._upper:
            return f"{_format_decimal(self._upper)}+"
        low = self._lower + ((number - self._lower) // self._size) * self._size
        high = min(low + self._size, self._upper)
        return f"{_format_decimal(low)}-{_format_decimal(high)}"

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        return _map_values(self._bucket, values)


class _Bucketing(_Primitive):
    def __init__(self, cfg: object, where: str, keys: _Keyring):
        cfg = _obj(cfg, where, {"buckets"}, {"buckets"})
        if not isinstance(cfg["buckets"], list) or not cfg["buckets"]:
            raise ValueError(f"{where}.buckets: expected a non-empty list")
        families: set[str] = set()
        self._buckets: list[tuple[Any, Any, Any]] = []
        for n, item in enumerate(cfg["buckets"]):
            item_where = f"{where}.buckets[{n}]"
            item = _obj(item, item_where, {"min", "max", "replacementValue"}, {"replacementValue"})
            limits = []
            for name in ("min", "max"):
                if name not in item:
                    limits.append(None)
                    continue
                kind, bound = _value(item[name], f"{item_where}.{name}")
                if kind in ("integerValue", "floatValue"):
                    families.add("number")
                    limits.append(_number(bound, f"{item_where}.{name}"))
                elif kind == "stringValue":
                    families.add("string")
                    limits.append(bound)
                else:
                    raise ValueError(f"{item_where}.{name}: expected integerValue, floatValue or stringValue")
            low, high = limits
            if low is not None and high is not None and not low < high:
                raise ValueError(f"{item_where}: min must be below max")
            _, replacement = _value(item["replacementValue"], f"{item_where}.replacementValue")
            self._buckets.append((low, high, replacement))
        if len(families) > 1:
            raise ValueError(f"{where}.buckets: bounds mix numbers and strings")
        self._numeric = families != {"string"}
        for i, (lo1, hi1, _) in enumerate(self._buckets):
            for lo2, hi2, _ in self._buckets[i + 1 :]:
                if (lo1 is None or hi2 is None or lo1 < hi2) and (lo2 is None or hi1 is None or lo2 < hi1):
                    raise ValueError(f"{where}.buckets: buckets overlap")

    def _bucket(self, value: Any) -> Any:
        key = _to_decimal(value) if self._numeric else _as_text(value)
        for low, high, replacement in self._buckets:
            if (low is None or key >= low) and (high is None or key < high):
                return replacement
        raise _Unmappable()  # fail closed: never pass an unbucketed value through

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        return _map_values(self._bucket, values)


def _parse_moment(value: Any) -> tuple[dt.date, dt.datetime | None]:
    """(UTC date, UTC datetime or None for a bare date) of a date/timestamp value."""
    if isinstance(value, dt.datetime):
        moment = (
            value.replace(tzinfo=dt.timezone.utc)
            if value.tzinfo is None
            else value.astimezone(dt.timezone.utc)
        )
        return moment.date(), moment
    if isinstance(value, dt.date):
        return value, None
    if not isinstance(value, str):
        raise _Unmappable()
    if _ISO_DATE.fullmatch(value):
        return dt.date.fromisoformat(value), None
    moment = _EPOCH + dt.timedelta(microseconds=parse_rfc3339_micros(value))
    return moment.date(), moment


_TIME_PARTS: dict[str, Callable[[dt.date, dt.datetime | None], int]] = {
    "YEAR": lambda day, moment: day.year,
    "MONTH": lambda day, moment: day.month,
    "DAY_OF_MONTH": lambda day, moment: day.day,
    "DAY_OF_WEEK": lambda day, moment: day.isoweekday(),
    "WEEK_OF_YEAR": lambda day, moment: day.isocalendar()[1],
    "HOUR_OF_DAY": lambda day, moment: _hour(moment),
}


def _hour(moment: dt.datetime | None) -> int:
    if moment is None:
        raise _Unmappable()  # a bare date has no hour
    return moment.hour


class _TimePart(_Primitive):
    def __init__(self, cfg: object, where: str, keys: _Keyring):
        cfg = _obj(cfg, where, {"partToExtract"}, {"partToExtract"})
        if cfg["partToExtract"] not in _TIME_PARTS:
            raise ValueError(f"{where}.partToExtract: expected one of {sorted(_TIME_PARTS)}")
        self._part = _TIME_PARTS[cfg["partToExtract"]]

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        return _map_values(lambda value: self._part(*_parse_moment(value)), values)


_MAX_SHIFT_DAYS = 365_250  # DLP: at most 1000 years either way


class _DateShift(_Primitive):
    def __init__(self, cfg: object, where: str, keys: _Keyring):
        required = {"upperBoundDays", "lowerBoundDays", "cryptoKey", "context"}
        cfg = _obj(cfg, where, required, required)
        self._upper = _int(cfg["upperBoundDays"], f"{where}.upperBoundDays")
        self._lower = _int(cfg["lowerBoundDays"], f"{where}.lowerBoundDays")
        if not -_MAX_SHIFT_DAYS <= self._lower <= self._upper <= _MAX_SHIFT_DAYS:
            raise ValueError(
                f"{where}: need -{_MAX_SHIFT_DAYS} <= lowerBoundDays <= upperBoundDays <= {_MAX_SHIFT_DAYS}"
            )
        self.context_field = _context_name(cfg["context"], f"{where}.context")
        name = _key_name(cfg["cryptoKey"], f"{where}.cryptoKey")
        self._mac_key = keys.subkey(name, keys.load_current(name), "date-shift")

    def _days(self, context: Any) -> int:
        digest = hmac.digest(self._mac_key, _as_text(context).encode("utf-8", "surrogatepass"), "sha256")
        # 256 bits modulo a span of at most ~730k: the bias is far below anything observable
        return self._lower + int.from_bytes(digest, "big") % (self._upper - self._lower + 1)

    @staticmethod
    def _shift(value: Any, days: int) -> Any:
        delta = dt.timedelta(days=days)
        if isinstance(value, dt.date):  # datetime included
            return value + delta
        if not isinstance(value, str):
            raise _Unmappable()
        if _ISO_DATE.fullmatch(value):
            return (dt.date.fromisoformat(value) + delta).isoformat()
        parse_rfc3339_micros(value)  # validates; the date is then shifted in the text's own offset
        return (dt.date.fromisoformat(value[:10]) + delta).isoformat() + value[10:]

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        out: list[Any] = []
        failed = 0
        for value, record in zip(values, records, strict=True):
            if value is None:
                out.append(None)
                continue
            present, context = _read(record, self.context_field)
            if not present or context is None or context is _BLOCKED:
                out.append(None)  # never a random shift: fail closed
                failed += 1
                continue
            shifted, bad = _map_values(lambda v, c=context: self._shift(v, self._days(c)), [value])
            out.append(shifted[0])
            failed += bad
        return out, failed


class _Replace(_Primitive):
    def __init__(self, cfg: object, where: str, keys: _Keyring):
        cfg = _obj(cfg, where, {"newValue"}, {"newValue"})
        _, self._new = _value(cfg["newValue"], f"{where}.newValue")

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        return [None if v is None else self._new for v in values], 0


class _Redact(_Primitive):
    def __init__(self, cfg: object, where: str, keys: _Keyring):
        _obj(cfg, where, set())

    def forward(self, values: list[Any], records: list[dict]) -> tuple[list[Any], int]:
        return [None] * len(values), 0


_PRIMITIVES: dict[str, Callable[[object, str, _Keyring], _Primitive]] = {
    "cryptoDeterministicConfig": _Deterministic,
    "cryptoHashConfig": _CryptoHash,
    "cryptoReplaceFfxFpeConfig": _Fpe,
    "characterMaskConfig": _CharMask,
    "fixedSizeBucketingConfig": _FixedBucketing,
    "bucketingConfig": _Bucketing,
    "timePartConfig": _TimePart,
    "dateShiftConfig": _DateShift,
    "replaceConfig": _Replace,
    "redactConfig": _Redact,
}

# --------------------------------------------------------------------------------------------------
# Field access by (possibly dotted) name.

_BLOCKED = object()  # an intermediate of a dotted path exists but is not a dict


def _read(record: dict, name: str) -> tuple[bool, Any]:
    """(present, value) of field ``name``; value is ``_BLOCKED`` if a dotted path hits a non-dict."""
    if name in record:
        return True, record[name]
    if "." not in name:
        return False, None
    current: Any = record
    for part in name.split("."):
        if current is None:
            return False, None
        if not isinstance(current, dict):
            return True, _BLOCKED
        if part not in current:
            return False, None
        current = current[part]
    return True, current


def _write(out: dict, source: dict, name: str, value: Any) -> None:
    """Set ``name`` in ``out`` (a copy of ``source``), copying nested dicts on the way instead of mutating."""
    if name in source or "." not in name:
        out[name] = value
        return
    parts = name.split(".")
    parent = out
    for part in parts[:-1]:
        child = parent.get(part)
        if not isinstance(child, dict):
            parent[part] = None  # the _BLOCKED case: drop the non-dict that may hide the leaf
            return
        child = dict(child)
        parent[part] = child
        parent = child
    parent[parts[-1]] = value


# --------------------------------------------------------------------------------------------------


def field_transformations(template: dict) -> list:
    """The template's ``recordTransformations.fieldTransformations`` list, after checking the envelope."""
    config = _obj(template, "deidentifyConfig", {"recordTransformations"}, {"recordTransformations"})
    records = _obj(
        config["recordTransformations"],
        "recordTransformations",
        {"fieldTransformations"},
        {"fieldTransformations"},
    )
    transformations = records["fieldTransformations"]
    if not isinstance(transformations, list) or not transformations:
        raise ValueError("recordTransformations.fieldTransformations: expected a non-empty list")
    return transformations


class LocalDeidEngine:
    """Executes one DLP ``DeidentifyConfig`` on batches of dict records (see the module docstring)."""

    def __init__(self, template: dict, resolver: KeyResolver):
        self._template = copy.deepcopy(template)
        self._keys = _Keyring(resolver)
        transformations = field_transformations(template)
        self._ops: list[tuple[tuple[str, ...], _Primitive]] = []
        self._by_field: dict[str, _Primitive] = {}
        for n, ft in enumerate(transformations):
            where = f"fieldTransformations[{n}]"
            ft = _obj(ft, where, {"fields", "primitiveTransformation"}, {"fields", "primitiveTransformation"})
            fields = ft["fields"]
            if not isinstance(fields, list) or not fields:
                raise ValueError(f"{where}.fields: expected a non-empty list")
            names = []
            for m, field in enumerate(fields):
                field = _obj(field, f"{where}.fields[{m}]", {"name"}, {"name"})
                name = field["name"]
                if not isinstance(name, str) or not name:
                    raise ValueError(f"{where}.fields[{m}].name: expected a non-empty string")
                if name in self._by_field or name in names:
                    raise ValueError(f"{where}: field {name!r} is transformed more than once")
                names.append(name)
            kind, cfg = _one_of(
                ft["primitiveTransformation"], f"{where}.primitiveTransformation", set(_PRIMITIVES)
            )
            primitive = _PRIMITIVES[kind](cfg, f"{where}.primitiveTransformation.{kind}", self._keys)
            self._ops.append((tuple(names), primitive))
            for name in names:
                self._by_field[name] = primitive
        self.failures: Counter[str] = Counter()

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the template transforms, in template order."""
        return tuple(self._by_field)

    @property
    def template(self) -> dict:
        """A copy of the template this engine runs (for an engine swap, e.g. to Cloud DLP)."""
        return copy.deepcopy(self._template)

    def deidentify(self, records: list[dict]) -> list[dict]:
        """New records with every template field transformed; never raises on odd values."""
        return self._apply(records, [(names, primitive.forward) for names, primitive in self._ops])

    def reidentify(self, records: list[dict], fields: list[str]) -> list[dict]:
        """New records with ``fields`` (AES-SIV or FF3-1 tokens) turned back into their original text.

        A token that does not decrypt (malformed, wrong context, unknown key version) becomes
        ``None`` and is counted in ``failures``.
        """
        ops = []
        for name in dict.fromkeys(fields):  # a field listed twice must not be decrypted twice
            primitive = self._reversible(name)

            def reverse(values: list[Any], _records: list[dict], p: _Primitive = primitive):
                return p.reverse(values)

            ops.append(((name,), reverse))
        return self._apply(records, ops)

    def reidentify_value(self, field: str, token: Any) -> str | None:
        """The original text of one token of ``field``; ``DeidError`` (without the token) if it fails."""
        primitive = self._reversible(field)
        if token is None:
            return None
        try:
            return primitive.reverse_one(token)
        except Exception:  # noqa: BLE001 - re-raised below without the cause, which may quote the token
            raise DeidError(f"field {field!r}: token does not re-identify") from None

    def _reversible(self, name: str) -> _Primitive:
        primitive = self._by_field.get(name)
        if primitive is None:
            raise DeidError(f"field {name!r} is not transformed by this template")
        if not primitive.reversible:
            raise DeidError(f"field {name!r} is not reversible")
        return primitive

    def _apply(
        self,
        records: list[dict],
        ops: list[tuple[tuple[str, ...], Callable[[list[Any], list[dict]], tuple[list[Any], int]]]],
    ) -> list[dict]:
        for n, record in enumerate(records):
            if not isinstance(record, dict):
                raise TypeError(f"record {n} is not a dict")
        outputs = [dict(record) for record in records]
        # one pass per transformation and field over the whole batch, so primitives can batch work
        # (FF3-1 makes one AES call per Feistel round for the batch); reads come from the inputs
        for names, fn in ops:
            for name in names:
                rows: list[int] = []
                values: list[Any] = []
                for i, record in enumerate(records):
                    present, value = _read(record, name)
                    if not present:
                        continue
                    if value is _BLOCKED:
                        _write(outputs[i], record, name, None)
                        self.failures[name] += 1
                        continue
                    rows.append(i)
                    values.append(value)
                if not rows:
                    continue
                results, failed = fn(values, [records[i] for i in rows])
                if failed:
                    self.failures[name] += failed
                for i, result in zip(rows, results, strict=True):
                    _write(outputs[i], records[i], name, result)
        return outputs
