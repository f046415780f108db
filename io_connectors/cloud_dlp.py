"""``CloudDlpEngine``: run riskpipe's DLP ``DeidentifyConfig`` templates on Cloud DLP (``deidentify_content``).

What: the optional second engine behind the same interface as ``transforms.deid.LocalDeidEngine``
(``fields``, ``failures``, ``template``, ``deidentify(records)``). It sends the template's fields of a
batch of records to Cloud DLP (Sensitive Data Protection) as a table, and maps the returned table back
onto copies of the records. ``build_requests`` and ``apply_response`` are public so that both halves
can be checked without a DLP endpoint.

Trade-off — why the local engine is the default (``ARCHITECTURE.md`` §6):

* Data leaves the processing cloud. riskpipe runs on AWS; with this engine raw PII/PCI values
  cross to a Google Cloud API. That is a cross-cloud transfer that the DPA, the records of
  processing and the PCI scope must cover, and the DLP location decides where values are
  processed: EU data must use an EU location (``location="europe-west3"``, ideally with the
  regional endpoint ``api_endpoint="dlp.europe-west3.rep.googleapis.com"``), never ``global``.
* Cost: DLP bills by the volume of data transformed (per GB), on top of cross-cloud egress. The
  local engine costs only CPU that the workers already have.
* Latency and quotas: one network round trip per request of at most ``max_rows_per_request`` rows,
  and per-project quotas (about 600 requests per minute per region by default), so throughput is
  bounded by the quota, not by the cluster. Requests are also capped at 0.5 MB and 50,000 table
  cells; ``build_requests`` splits on all three limits.

Tokens are NOT interchangeable between the engines. Cloud DLP's AES-SIV surrogates carry no key
version and treat ``context`` as the name of a column (here never sent, so DLP uses no context),
DLP's FFX mode is its own FPE variant (the local engine uses FF3-1), and hashes, key derivation and
date shifts differ as well. One environment (and every dataset that must join) must therefore use
one engine, consistently; switching engines means re-tokenizing everything, like a key rotation.
Re-identification is not offered here for the same reason: tokens must be re-identified by the
engine that made them.

Keys: the template's ``cryptoKey.kmsWrapped.cryptoKeyName`` is a riskpipe key FAMILY
(``riskpipe-pii``). ``CloudDlpSettings`` maps each family to a GCP KMS CryptoKey and to the data
key wrapped by it; both are filled in at construction (the template's own ``wrappedKey`` is
ignored). A family without either is a ``ValueError`` naming it. ``unwrapped`` (raw key in the
request) and ``transient`` (not deterministic) keys are refused, as in the local engine. Google
credentials come from Application Default Credentials (on AWS: workload identity federation);
the settings hold no secret, so the engine can be pickled to Beam workers.

Strictness (a template is a security control): the template is the same bare ``DeidentifyConfig``
the local engine accepts — only ``recordTransformations.fieldTransformations`` with the primitives
it implements. ``condition`` (rows failing it would come back untransformed, i.e. raw),
``recordSuppressions`` (rows would disappear and break the positional mapping),
``infoTypeTransformations`` and ``transformationErrorHandling`` are refused; the engine always sends
``throwError``, because DLP's alternative ``leaveUntransformed`` returns raw values. The rest is
parsed with protobuf's ``json_format.ParseDict``, so an unknown key anywhere (a typo such as
``numbertoMask``) is a ``ValueError`` at construction.

Data minimisation: only the template's fields are sent (plus the context column of a
``dateShiftConfig``, which DLP reads from the row — as the local engine does). Every other column
stays in the process, and a record without any value to transform is not sent at all.

Values the engine will not send (failure policy as in the local engine: ``deidentify`` never raises
on odd values; the cell becomes ``None`` and ``failures[field]`` is incremented). Because of
``throwError`` one value that DLP cannot transform would fail a whole request, so values that are
known to fail are caught before they leave: for ``cryptoReplaceFfxFpeConfig`` text with characters
outside the alphabet (e.g. ``dev_1f2e`` under ``ALPHA_NUMERIC``; the local engine keeps punctuation
in place instead), non-ASCII or shorter than 2 characters; for ``timePartConfig``/``dateShiftConfig``
a value that is not a date or RFC 3339 timestamp, or a date shift without a context value; a
value that is not a scalar (dict/list); a row that alone exceeds the request size. Crypto primitives
get text (non-strings as ``str()``), and empty strings stay empty without being sent, as locally.

Record handling: field names (including dotted names into nested dicts) are read and written
exactly as the local engine does; inputs are never mutated; a missing field stays missing and
``None`` stays ``None``. Returned values are converted back: text, integers (``timePartConfig``),
floats, booleans; dates become ``datetime.date`` if the input was one, else ``YYYY-MM-DD`` text;
timestamps become an aware UTC ``datetime`` if the input was one, else riskpipe's UTC text
(``...000000Z``; the local engine keeps a text's own offset).

Errors: a response that does not match its request (row count, headers) is a ``DeidError``; a
transformation summary reporting errors for a field counts them in ``failures`` and the field is
withheld (``None``) for that whole request, because the summary does not say which cells failed.
``ServiceUnavailable``, ``DeadlineExceeded`` and ``ResourceExhausted`` are retried with bounded
exponential backoff (5 attempts in all; the client library's own retry is switched off so the bound
holds); any other API error, or the last transient one, is a ``DeidError`` naming only the error
class — server messages may quote the offending value, so they are dropped, as is the cause. No
record value ever appears in an exception message, and this module logs nothing.

Not thread-safe (``failures`` is a plain counter): use one engine per DoFn instance.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import random
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# _BLOCKED/_read/_write: field addressing is shared with the local engine on purpose; both engines
# must read and write dotted names identically, or swapping engines would change what is protected.
from transforms.deid import _BLOCKED, DeidError, _read, _write, field_transformations
from transforms.timeutil import format_micros, parse_rfc3339_micros

__all__ = ["CloudDlpEngine", "CloudDlpSettings"]

_INSTALL_HINT = "pip install 'riskpipe[gcp]'"

# Limits of DLP content methods (Sensitive Data Protection "quotas and limits"): requests up to
# 0.5 MB and 50,000 table values. The byte budget leaves headroom for framing and metadata.
_MAX_REQUEST_BYTES = 450_000
_MAX_TABLE_VALUES = 50_000

# Retry: 5 attempts, full-jitter exponential backoff of at most 2, 4, 8, 16 s between them, so a
# batch gives up after ~30 s of waiting plus 5 timeouts instead of retrying for ever.
_ATTEMPTS = 5
_BACKOFF_INITIAL_S = 2.0
_BACKOFF_MAX_S = 32.0
_BACKOFF_MULTIPLIER = 2.0
_sleep: Callable[[float], None] = time.sleep  # module attribute so tests can skip the waiting

# The primitives LocalDeidEngine implements: a template must run on both engines.
_PRIMITIVES = frozenset(
    {
        "cryptoDeterministicConfig",
        "cryptoHashConfig",
        "cryptoReplaceFfxFpeConfig",
        "characterMaskConfig",
        "fixedSizeBucketingConfig",
        "bucketingConfig",
        "timePartConfig",
        "dateShiftConfig",
        "replaceConfig",
        "redactConfig",
    }
)
_CRYPTO_TEXT = frozenset({"cryptoDeterministicConfig", "cryptoHashConfig", "cryptoReplaceFfxFpeConfig"})
_DATE_PRIMITIVES = frozenset({"timePartConfig", "dateShiftConfig"})
_FPE_ALPHABETS = {
    "NUMERIC": string.digits,
    "HEXADECIMAL": string.digits + "ABCDEF",
    "UPPER_CASE_ALPHA_NUMERIC": string.digits + string.ascii_uppercase,
    "ALPHA_NUMERIC": string.digits + string.ascii_uppercase + string.ascii_lowercase,
}
_FPE_MIN_LENGTH = 2  # DLP: "identifiers must be at least two characters long"

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_KMS_KEY = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s]+")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*")
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# What happens to one template field of one record.
_ABSENT = 0  # field missing: left missing
_KEEP = 1  # None, or "" for a crypto primitive: left as is, not sent
_SEND = 2  # sent to DLP; the returned value is written back
_FAILED = 3  # cannot be sent: written as None and counted


def _dlp():
    """``google.cloud.dlp_v2``, imported on first use so riskpipe imports without the gcp extra."""
    try:
        from google.cloud import dlp_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError(f"CloudDlpEngine needs google-cloud-dlp: {_INSTALL_HINT}") from err
    return dlp_v2


def _api_exceptions():
    try:
        from google.api_core import exceptions
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError(f"CloudDlpEngine needs google-api-core: {_INSTALL_HINT}") from err
    return exceptions


@dataclass(frozen=True)
class CloudDlpSettings:
    """Where and how to call Cloud DLP. Picklable and secret-free (wrapped keys are useless without KMS)."""

    project: str  # GCP project id
    location: str = "global"  # EU data: an EU region, never "global"
    # riskpipe key family -> GCP KMS CryptoKey ("projects/p/locations/l/keyRings/r/cryptoKeys/k")
    kms_key_names: dict[str, str] = field(default_factory=dict)
    # riskpipe key family -> base64 data key wrapped by that GCP KMS key
    wrapped_keys: dict[str, str] = field(default_factory=dict)
    max_rows_per_request: int = 500  # bounded rows per request (and < 0.5 MB, checked too)
    timeout_s: float = 30.0  # per attempt
    # e.g. "dlp.europe-west3.rep.googleapis.com": a regional endpoint keeps data in the region in
    # transit too; None = the client's default (global endpoint, processing in ``location``)
    api_endpoint: str | None = None

    def __post_init__(self) -> None:
        for name in ("project", "location"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _RESOURCE_ID.fullmatch(value):
                raise ValueError(f"CloudDlpSettings.{name}: expected a GCP resource id")
        if (
            not isinstance(self.max_rows_per_request, int)
            or isinstance(self.max_rows_per_request, bool)
            or self.max_rows_per_request < 1
        ):
            raise ValueError("CloudDlpSettings.max_rows_per_request: expected a positive integer")
        if not isinstance(self.timeout_s, (int, float)) or not self.timeout_s > 0:
            raise ValueError("CloudDlpSettings.timeout_s: expected a positive number of seconds")
        for family, name in self.kms_key_names.items():
            if not isinstance(name, str) or not _KMS_KEY.fullmatch(name):
                raise ValueError(
                    f"CloudDlpSettings.kms_key_names[{family!r}]: expected "
                    "projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>"
                )
        for family, wrapped in self.wrapped_keys.items():
            try:
                ok = isinstance(wrapped, str) and bool(base64.b64decode(wrapped, validate=True))
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"CloudDlpSettings.wrapped_keys[{family!r}]: expected non-empty base64")

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"


@dataclass(frozen=True)
class _Field:
    """One transformed field and what the engine checks locally before sending its values."""

    name: str
    primitive: str
    alphabet: frozenset[str] | None = None  # FPE with a known alphabet
    context: str | None = None  # dateShiftConfig: the column whose value seeds the shift


class _Reject(Exception):
    """A value that must not be sent. Carries no value."""


def _keys(value: object, where: str, allowed: Collection[str], required: Collection[str] = ()) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object")
    for key in value:
        if key not in allowed:
            raise ValueError(f"{where}: unsupported key {key!r}")
    for key in sorted(set(required) - set(value)):
        raise ValueError(f"{where}: missing required key {key!r}")
    return value


def _context_name(cfg: dict, where: str) -> str | None:
    if "context" not in cfg:
        return None
    context = _keys(cfg["context"], f"{where}.context", {"name"}, {"name"})
    if not isinstance(context["name"], str) or not context["name"]:
        raise ValueError(f"{where}.context.name: expected a non-empty string")
    return context["name"]


def _fill_keys(node: object, where: str, settings: CloudDlpSettings) -> None:
    """Replace every ``cryptoKey`` family reference by the GCP KMS key and wrapped key, in place."""
    if isinstance(node, list):
        for n, item in enumerate(node):
            _fill_keys(item, f"{where}[{n}]", settings)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        path = f"{where}.{key}"
        if key != "cryptoKey":
            _fill_keys(value, path, settings)
            continue
        kinds = _keys(value, path, {"kmsWrapped", "unwrapped", "transient"})
        if "unwrapped" in kinds:
            raise ValueError(f"{path}.unwrapped: raw keys in templates are forbidden (use kmsWrapped)")
        if "transient" in kinds:
            raise ValueError(
                f"{path}.transient: transient keys are refused (tokens would not be deterministic)"
            )
        if len(kinds) != 1:
            raise ValueError(f"{path}: expected kmsWrapped")
        wrapped = _keys(
            kinds["kmsWrapped"], f"{path}.kmsWrapped", {"cryptoKeyName", "wrappedKey"}, {"cryptoKeyName"}
        )
        family = wrapped["cryptoKeyName"]
        if not isinstance(family, str) or not family:
            raise ValueError(f"{path}.kmsWrapped.cryptoKeyName: expected a key family name")
        if family not in settings.kms_key_names:
            raise ValueError(f"key family {family!r} has no GCP KMS key in CloudDlpSettings.kms_key_names")
        if family not in settings.wrapped_keys:
            raise ValueError(f"key family {family!r} has no wrapped key in CloudDlpSettings.wrapped_keys")
        # the template names a family; the request needs the GCP key and the data key it wraps
        wrapped["cryptoKeyName"] = settings.kms_key_names[family]
        wrapped["wrappedKey"] = settings.wrapped_keys[family]


def _convert(template: object, settings: CloudDlpSettings) -> tuple[dict, list[_Field], tuple[str, ...]]:
    """(DLP JSON ready for ParseDict, the fields in template order, the columns to send)."""
    config = copy.deepcopy(template)
    transformations = field_transformations(config)  # the same envelope checks as the local engine
    fields: list[_Field] = []
    contexts: list[tuple[str, str]] = []  # (where, name) of crypto contexts: literal names, never columns
    for n, ft in enumerate(transformations):
        where = f"fieldTransformations[{n}]"
        if isinstance(ft, dict) and "condition" in ft:
            raise ValueError(f"{where}.condition: conditions are refused (rows failing one would stay raw)")
        ft = _keys(ft, where, {"fields", "primitiveTransformation"}, {"fields", "primitiveTransformation"})
        primitive = _keys(ft["primitiveTransformation"], f"{where}.primitiveTransformation", set(_PRIMITIVES))
        if len(primitive) != 1:
            raise ValueError(f"{where}.primitiveTransformation: expected exactly one primitive")
        ((kind, cfg),) = primitive.items()
        pwhere = f"{where}.primitiveTransformation.{kind}"
        if not isinstance(cfg, dict):
            raise ValueError(f"{pwhere}: expected a JSON object")
        alphabet: frozenset[str] | None = None
        date_context: str | None = None
        if kind == "cryptoReplaceFfxFpeConfig":
            if isinstance(cfg.get("customAlphabet"), str):
                alphabet = frozenset(cfg["customAlphabet"])
            elif cfg.get("commonAlphabet") in _FPE_ALPHABETS:
                alphabet = frozenset(_FPE_ALPHABETS[cfg["commonAlphabet"]])
        if kind == "dateShiftConfig":
            # as in the local engine: without key and context DLP would shift at random
            for key in ("cryptoKey", "context"):
                if key not in cfg:
                    raise ValueError(f"{pwhere}: missing required key {key!r}")
            date_context = _context_name(cfg, pwhere)
        elif kind in _CRYPTO_TEXT:
            name = _context_name(cfg, pwhere)
            if name is not None:
                contexts.append((pwhere, name))
        if not isinstance(ft["fields"], list) or not ft["fields"]:
            raise ValueError(f"{where}.fields: expected a non-empty list")
        for m, spec in enumerate(ft["fields"]):
            spec = _keys(spec, f"{where}.fields[{m}]", {"name"}, {"name"})
            name = spec["name"]
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}.fields[{m}].name: expected a non-empty string")
            if any(f.name == name for f in fields):
                raise ValueError(f"{where}: field {name!r} is transformed more than once")
            fields.append(_Field(name, kind, alphabet, date_context))
    headers = tuple(dict.fromkeys([f.name for f in fields] + [f.context for f in fields if f.context]))
    for where, name in contexts:
        # DLP reads a crypto context from the row; the local engine uses the literal name. A context
        # that names a column we send would make DLP tokens depend on that column's values.
        if name in headers:
            raise ValueError(f"{where}.context: {name!r} names a column sent to DLP; use a literal name")
    _fill_keys(config, "deidentifyConfig", settings)
    # explicit, not DLP's default by omission: leaveUntransformed would hand back raw values
    config["transformationErrorHandling"] = {"throwError": {}}
    return config, fields, headers


def _micros(moment: dt.datetime) -> int:
    moment = moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


class CloudDlpEngine:
    """Executes one DLP ``DeidentifyConfig`` through Cloud DLP (see the module docstring)."""

    def __init__(self, template: dict, settings: CloudDlpSettings, client: Any = None):
        if not isinstance(settings, CloudDlpSettings):
            raise TypeError("settings must be a CloudDlpSettings")
        dlp = _dlp()
        from google.protobuf import json_format

        self._template = copy.deepcopy(template)
        self._settings = settings
        converted, self._fields, self._headers = _convert(template, settings)
        config = dlp.DeidentifyConfig()
        try:
            json_format.ParseDict(converted, dlp.DeidentifyConfig.pb(config))
        except json_format.ParseError as err:
            # names the unknown key and its path; the cause is dropped so no wrapped key is chained
            raise ValueError(f"template is not a valid DLP DeidentifyConfig: {err}") from None
        self._config = config
        self._config_bytes = dlp.DeidentifyConfig.pb(config).ByteSize()
        self._client = client
        self._owns_client = client is None
        self.failures: Counter[str] = Counter()

    # ---- interface shared with LocalDeidEngine -------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the template transforms, in template order."""
        return tuple(f.name for f in self._fields)

    @property
    def template(self) -> dict:
        """A copy of the template as given (key families, not GCP keys)."""
        return copy.deepcopy(self._template)

    @property
    def headers(self) -> tuple[str, ...]:
        """The columns sent to DLP: the template's fields, then any date-shift context column."""
        return self._headers

    @property
    def deidentify_config(self):
        """A copy of the converted ``dlp_v2.DeidentifyConfig`` sent with every request."""
        dlp = _dlp()
        return dlp.DeidentifyConfig.deserialize(dlp.DeidentifyConfig.serialize(self._config))

    def deidentify(self, records: list[dict]) -> list[dict]:
        """New records with every template field de-identified by Cloud DLP.

        Never raises on odd values (they become ``None`` and are counted); raises ``DeidError`` if
        DLP fails after retries or answers with a table that does not match the request.
        """
        _check_records(records)
        outputs = [dict(record) for record in records]
        failures: Counter[str] = Counter()  # committed only if the whole batch succeeds
        encoded = [self._encode(record) for record in records]
        send: list[int] = []
        for i, (row, statuses, size) in enumerate(encoded):
            if _SEND in statuses and size > self._row_budget():
                # a row too big for any request: fail closed rather than fail every retry
                statuses = [_FAILED if s == _SEND else s for s in statuses]
                encoded[i] = (row, statuses, size)
            if _SEND in statuses:
                send.append(i)
            else:
                self._merge(records[i], outputs[i], statuses, None, frozenset(), failures)
        for start, end in self._chunks([encoded[i][2] for i in send]):
            idx = send[start:end]
            request = self._request([encoded[i][0] for i in idx])
            response = self._call(request)
            self._apply(
                [records[i] for i in idx],
                [outputs[i] for i in idx],
                [encoded[i][1] for i in idx],
                response,
                failures,
            )
        self.failures.update(failures)
        return outputs

    # ---- the two halves, public so they can be tested without an endpoint ------------------------

    def build_requests(self, records: list[dict]) -> list[Any]:
        """``DeidentifyContentRequest`` s for ``records``, one table row per record, in order.

        Chunked by ``max_rows_per_request``, the request size and the table-cell limit; request
        ``k`` holds the next ``len(rows)`` records, so responses map back by position. Unlike
        ``deidentify``, every record gets a row (empty values for what is not sent); a row larger
        than a whole request is a ``DeidError``.
        """
        _check_records(records)
        encoded = [self._encode(record) for record in records]
        for n, (_, _, size) in enumerate(encoded):
            if size > self._row_budget():
                raise DeidError(f"record {n} is too large for one Cloud DLP request")
        return [
            self._request([row for row, _, _ in encoded[a:b]])
            for a, b in self._chunks([s for _, _, s in encoded])
        ]

    def apply_response(self, records: list[dict], response: Any) -> list[dict]:
        """Copies of ``records`` (those of one request, in order) with the response's values written back."""
        _check_records(records)
        outputs = [dict(record) for record in records]
        statuses = [self._encode(record)[1] for record in records]
        self._apply(records, outputs, statuses, response, self.failures)
        return outputs

    # ---- encoding ---------------------------------------------------------------------------------

    def _encode(self, record: dict) -> tuple[Any, list[int], int]:
        """(table row, status per template field, encoded row size) of one record."""
        value_pb = _dlp().Value.pb()
        cells: dict[str, Any] = {}
        statuses: list[int] = []
        for f in self._fields:
            present, value = _read(record, f.name)
            if not present:
                status = _ABSENT
            elif value is _BLOCKED:
                status = _FAILED
            elif value is None or (value == "" and f.primitive in _CRYPTO_TEXT):
                status = _KEEP
            else:
                try:
                    cells[f.name] = self._value(f, value)
                    status = _SEND
                except _Reject:
                    status = _FAILED
            statuses.append(status)
        for name in self._headers[len(self._fields) :]:  # date-shift context columns, sent as they are
            present, value = _read(record, name)
            if present and value is not None and value is not _BLOCKED:
                try:
                    cells[name] = _natural(value)
                except _Reject:
                    pass  # no usable context: the shifted fields are refused below
        for j, f in enumerate(self._fields):
            # DLP reads the context from the row as sent: without one it would not shift consistently
            if f.context is not None and statuses[j] == _SEND and f.context not in cells:
                statuses[j] = _FAILED
                del cells[f.name]
        row = _dlp().Table.Row.pb()(values=[cells[n] if n in cells else value_pb() for n in self._headers])
        return row, statuses, row.ByteSize() + 8  # + field tag and length prefix, generously

    def _value(self, f: _Field, value: Any) -> Any:
        if f.primitive in _DATE_PRIMITIVES:
            return _date_like(value)
        if f.primitive in _CRYPTO_TEXT:
            if isinstance(value, (dict, list, tuple, set, bytes, bytearray)):
                raise _Reject()
            text = value if isinstance(value, str) else str(value)
            if f.primitive == "cryptoReplaceFfxFpeConfig":
                # DLP fails the whole request on one bad identifier; catch it before sending
                if len(text) < _FPE_MIN_LENGTH or not text.isascii():
                    raise _Reject()
                if f.alphabet is not None and not set(text) <= f.alphabet:
                    raise _Reject()
            return _dlp().Value.pb()(string_value=text)
        return _natural(value)

    def _row_budget(self) -> int:
        return _MAX_REQUEST_BYTES - self._config_bytes - 64 * len(self._headers) - 512

    def _chunks(self, sizes: Sequence[int]) -> list[tuple[int, int]]:
        """[start, end) ranges of rows, each within the row, byte and cell limits."""
        max_rows = min(self._settings.max_rows_per_request, _MAX_TABLE_VALUES // len(self._headers))
        budget = self._row_budget()
        ranges: list[tuple[int, int]] = []
        start, used = 0, 0
        for i, size in enumerate(sizes):
            if i > start and (i - start >= max_rows or used + size > budget):
                ranges.append((start, i))
                start, used = i, 0
            used += size
        if start < len(sizes):
            ranges.append((start, len(sizes)))
        return ranges

    def _request(self, rows: list[Any]) -> Any:
        dlp = _dlp()
        table = dlp.Table.pb()(headers=[dlp.FieldId.pb()(name=name) for name in self._headers], rows=rows)
        request = dlp.DeidentifyContentRequest.pb()(
            parent=self._settings.parent,
            deidentify_config=dlp.DeidentifyConfig.pb(self._config),
            item=dlp.ContentItem.pb()(table=table),
        )
        return dlp.DeidentifyContentRequest.wrap(request)

    # ---- calling DLP ------------------------------------------------------------------------------

    def _get_client(self) -> Any:
        if self._client is None:
            dlp = _dlp()
            options = {"api_endpoint": self._settings.api_endpoint} if self._settings.api_endpoint else None
            self._client = dlp.DlpServiceClient(client_options=options)
        return self._client

    def _call(self, request: Any) -> Any:
        exceptions = _api_exceptions()
        transient = (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded, exceptions.ResourceExhausted)
        client = self._get_client()
        delay = _BACKOFF_INITIAL_S
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                # retry=None: the client's default retry (up to 300 s) would multiply our bound
                return client.deidentify_content(
                    request=request, retry=None, timeout=self._settings.timeout_s
                )
            except transient as err:
                if attempt == _ATTEMPTS:
                    raise DeidError(
                        f"Cloud DLP deidentify_content failed after {_ATTEMPTS} attempts ({type(err).__name__})"
                    ) from None
                _sleep(random.uniform(0.0, delay))  # full jitter: workers must not retry in lockstep
                delay = min(delay * _BACKOFF_MULTIPLIER, _BACKOFF_MAX_S)
            except exceptions.GoogleAPICallError as err:
                # the server's message may quote a value (e.g. an invalid identifier): drop it
                raise DeidError(f"Cloud DLP deidentify_content failed ({type(err).__name__})") from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- decoding ---------------------------------------------------------------------------------

    def _apply(
        self,
        records: list[dict],
        outputs: list[dict],
        statuses: list[list[int]],
        response: Any,
        failures: Counter[str],
    ) -> None:
        dlp = _dlp()
        pb = response if isinstance(response, dlp.DeidentifyContentResponse.pb()) else None
        if pb is None:
            try:
                pb = dlp.DeidentifyContentResponse.pb(response)
            except TypeError:
                raise DeidError("Cloud DLP response is not a DeidentifyContentResponse") from None
        # the message names what was expected only: a wrong response could hold anything
        expected = f"expected a table of {len(records)} rows with headers {list(self._headers)}"
        if pb.item.WhichOneof("data_item") != "table":
            raise DeidError(f"Cloud DLP response does not match its request: {expected}")
        table = pb.item.table
        if tuple(h.name for h in table.headers) != self._headers or len(table.rows) != len(records):
            raise DeidError(f"Cloud DLP response does not match its request: {expected}")
        if any(len(row.values) != len(self._headers) for row in table.rows):
            raise DeidError(f"Cloud DLP response does not match its request: {expected}")
        error_code = dlp.TransformationSummary.TransformationResultCode.ERROR
        withheld: set[str] = set()
        for summary in pb.overview.transformation_summaries:
            errors = sum(r.count for r in summary.results if r.code == error_code)
            if not errors:
                continue
            name = summary.field.name
            if name not in self.fields:
                raise DeidError(
                    "Cloud DLP reported transformation errors for a field it was not asked to transform"
                )
            failures[name] += errors
            withheld.add(name)  # which cells failed is not reported: withhold the field for the request
        for record, output, status, row in zip(records, outputs, statuses, table.rows, strict=True):
            self._merge(record, output, status, row.values, frozenset(withheld), failures)

    def _merge(
        self,
        record: dict,
        output: dict,
        statuses: list[int],
        values: Sequence[Any] | None,
        withheld: frozenset[str],
        failures: Counter[str],
    ) -> None:
        for j, (f, status) in enumerate(zip(self._fields, statuses, strict=True)):
            if status == _FAILED:
                _write(output, record, f.name, None)
                failures[f.name] += 1
            elif status == _SEND and values is not None:
                if f.name in withheld:
                    _write(output, record, f.name, None)
                    continue
                try:
                    result = _from_value(values[j], _read(record, f.name)[1])
                except _Reject:
                    result = None
                    failures[f.name] += 1
                _write(output, record, f.name, result)

    # ---- pickling: settings and config travel to workers, clients do not --------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._owns_client:
            state["_client"] = None  # a gRPC channel cannot be pickled; recreated on first use
        return state

    def __repr__(self) -> str:
        return f"CloudDlpEngine(parent={self._settings.parent!r}, fields={list(self.fields)})"


def _check_records(records: list[dict]) -> None:
    for n, record in enumerate(records):
        if not isinstance(record, dict):
            raise TypeError(f"record {n} is not a dict")


def _natural(value: Any) -> Any:
    """A Python scalar as the DLP ``Value`` of its own type; ``_Reject`` for anything else."""
    value_pb = _dlp().Value.pb()
    if isinstance(value, bool):
        return value_pb(boolean_value=value)
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return value_pb(integer_value=value)
        return value_pb(string_value=str(value))
    if isinstance(value, float):
        return value_pb(float_value=value)
    if isinstance(value, str):
        return value_pb(string_value=value)
    if isinstance(value, Decimal):
        return value_pb(string_value=str(value))
    if isinstance(value, (dt.date, dt.datetime)):
        return _date_like(value)
    raise _Reject()


def _date_like(value: Any) -> Any:
    """A date or timestamp (object or text) as a DLP date/timestamp ``Value``; ``_Reject`` otherwise."""
    value_pb = _dlp().Value.pb()
    if isinstance(value, dt.datetime):
        micros = _micros(value)
    elif isinstance(value, dt.date):
        return value_pb(date_value={"year": value.year, "month": value.month, "day": value.day})
    elif isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise _Reject() from None
        return value_pb(date_value={"year": day.year, "month": day.month, "day": day.day})
    elif isinstance(value, str):
        try:
            micros = parse_rfc3339_micros(value)
        except ValueError:
            raise _Reject() from None
    else:
        raise _Reject()
    seconds, rest = divmod(micros, 1_000_000)
    return value_pb(timestamp_value={"seconds": seconds, "nanos": rest * 1000})


def _from_value(value: Any, original: Any) -> Any:
    """A returned DLP ``Value`` as Python, in the representation of the ``original`` input value."""
    kind = value.WhichOneof("type")
    if kind is None:
        return None  # e.g. redactConfig
    if kind == "string_value":
        return value.string_value
    if kind == "integer_value":
        return value.integer_value
    if kind == "float_value":
        return value.float_value
    if kind == "boolean_value":
        return value.boolean_value
    if kind == "date_value":
        d = value.date_value
        try:
            day = dt.date(d.year, d.month, d.day)
        except ValueError:
            raise _Reject() from None
        return (
            day
            if isinstance(original, dt.date) and not isinstance(original, dt.datetime)
            else day.isoformat()
        )
    if kind == "timestamp_value":
        ts = value.timestamp_value
        micros = ts.seconds * 1_000_000 + ts.nanos // 1000
        try:
            moment = _EPOCH + dt.timedelta(microseconds=micros)
        except OverflowError:
            raise _Reject() from None
        return moment if isinstance(original, dt.datetime) else format_micros(micros)
    if kind == "time_value":
        t = value.time_value
        try:
            return dt.time(t.hours, t.minutes, t.seconds, t.nanos // 1000).isoformat()
        except ValueError:
            raise _Reject() from None
    if kind == "day_of_week_value":
        from google.type import dayofweek_pb2

        return dayofweek_pb2.DayOfWeek.Name(value.day_of_week_value)
    raise _Reject()  # pragma: no cover - a Value kind this module does not know
