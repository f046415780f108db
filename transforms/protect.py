"""``ProtectFields``: apply the classification policy for one zone and environment.

Input: normalised records of one dataset. Output: rows that hold only the
columns the policy declares for the zone, with personal data tokenized,
masked or generalized by the de-identify template (``dlp_configs``).

Fail closed: a field the policy does not classify — a field some schema
version added, or one no schema knows (``_extra``) — never leaves this
transform. It is dropped, counted per (dataset, field) as
``riskpipe.protect/<dataset>.unclassified.<field>`` and logged once per worker
by NAME only, never its value.

Keys: the transform holds a ``KeyProvider`` (picklable settings only). In
``setup()`` each worker asks it once for a key resolver (e.g. unwrapping data
keys with KMS) and builds the engine; records are de-identified in batches
per bundle, never with per-record key work.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Protocol

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

import dlp_configs
from transforms.deid import KeyResolver, LocalDeidEngine
from transforms.records import Record, check_dataset

_LOG = logging.getLogger(__name__)
_BATCH = 512


class KeyProvider(Protocol):
    """Picklable settings that yield a key resolver on a worker (see io_connectors.keys)."""

    env: str

    def resolver(self) -> KeyResolver: ...


class DeidEngineFactory(Protocol):
    def __call__(self, template: dict, resolver: KeyResolver): ...


def ip_prefix(value: str, v4_bits: int = 24, v6_bits: int = 48) -> str | None:
    """The network an address belongs to (/24 for IPv4, /48 for IPv6): coarse enough not to identify."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    bits = v4_bits if ip.version == 4 else v6_bits
    return ipaddress.ip_network(f"{ip}/{bits}", strict=False).with_prefixlen


_BUILTINS = {"ip_prefix": ip_prefix}


def _get_path(record: Record, path: str):
    value = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class ZonePlan:
    """What ProtectFields does for one dataset, zone and environment, derived from the policy."""

    def __init__(self, dataset: str, zone: str, env: str, policy: dlp_configs.Policy | None = None):
        if zone not in ("curated",):
            raise ValueError(f"ProtectFields writes the curated zone; got zone {zone!r}")
        policy = policy or dlp_configs.load_policy()
        dlp_configs.check_environment(policy, env, zones=(zone,))
        self.dataset = dataset
        dpol = policy.dataset(dataset)
        self.copies: list[
            tuple[str, str]
        ] = []  # (source path, output column) copied before de-identification
        self.builtins: list[tuple[str, str, str]] = []  # (source path, output column, builtin name)
        self.columns: list[str] = []
        classified_roots = set()
        for path, fpol in dpol.fields.items():
            classified_roots.add(path.split(".", 1)[0])
            for out in dlp_configs.effective_handling(fpol, zone, env):
                if out.handling == "drop":
                    continue
                self.columns.append(out.column)
                if out.builtin:
                    self.builtins.append((path, out.column, out.builtin))
                else:
                    self.copies.append((path, out.column))
        self.classified_paths = frozenset(dpol.fields)
        self.classified_roots = frozenset(classified_roots)
        self.template = dlp_configs.load_templates()[dataset]


class _ProtectFn(beam.DoFn):
    def __init__(self, dataset: str, env: str, key_provider: KeyProvider, engine_factory=None):
        self._dataset = dataset
        self._env = env
        self._key_provider = key_provider
        self._engine_factory = engine_factory

    def setup(self):
        self._plan = ZonePlan(self._dataset, "curated", self._env)
        factory = self._engine_factory or LocalDeidEngine
        transforms = self._plan.template.get("recordTransformations", {}).get("fieldTransformations")
        # a dataset with nothing to de-identify (chargebacks) needs no keys at all
        self._engine = factory(self._plan.template, self._key_provider.resolver()) if transforms else None
        self._logged: set[str] = set()
        self._out = Metrics.counter("riskpipe.protect", f"{self._dataset}.rows")
        self._failures = Metrics.counter("riskpipe.protect", f"{self._dataset}.transform_failures")

    def start_bundle(self):
        self._buffer: list[tuple[Record, object, object]] = []

    def process(self, record, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        self._buffer.append((self._project(record), timestamp, window))
        if len(self._buffer) >= _BATCH:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self):
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        rows = [row for row, _, _ in batch]
        failed = 0
        if self._engine is not None:
            before = sum(self._engine.failures.values())
            rows = self._engine.deidentify(rows)
            failed = sum(self._engine.failures.values()) - before
        if failed:
            self._failures.inc(failed)
        self._out.inc(len(rows))
        for row, (_, timestamp, window) in zip(rows, batch, strict=True):
            yield WindowedValue(row, timestamp, [window])

    def _project(self, record: Record) -> Record:
        plan = self._plan
        row = {column: _get_path(record, path) for path, column in plan.copies}
        for path, column, builtin in plan.builtins:
            value = _get_path(record, path)
            row[column] = _BUILTINS[builtin](value) if value is not None else None
        for name in record:
            if not name.startswith("_") and name not in plan.classified_roots:
                self._unclassified(name)
        for name in record.get("_extra") or {}:
            self._unclassified(name)
        return row

    def _unclassified(self, name: str) -> None:
        Metrics.counter("riskpipe.protect", f"{self._dataset}.unclassified.{name}").inc()
        Metrics.counter("riskpipe.protect", f"{self._dataset}.unclassified_dropped").inc()
        if name not in self._logged:
            self._logged.add(name)
            # the field NAME only: its value may be personal data
            _LOG.warning(
                "dropping unclassified field %s.%s (classify it in dlp_configs)", self._dataset, name
            )


class ProtectFields(beam.PTransform):
    """Records of ``dataset`` → curated rows per policy for ``env`` (see the module docstring).

    Policy violations for the environment (e.g. ``keep`` of PII in nonprod)
    fail at construction, before anything runs.
    """

    def __init__(self, dataset: str, env: str, key_provider: KeyProvider, engine_factory=None):
        super().__init__()
        self._dataset = check_dataset(dataset)
        if getattr(key_provider, "env", env) != env:
            raise ValueError(f"key provider is for env {key_provider.env!r} but the job runs in {env!r}")
        self.plan = ZonePlan(self._dataset, "curated", env)  # validates policy + env now
        self._fn = _ProtectFn(self._dataset, env, key_provider, engine_factory)

    def expand(self, pcoll):
        return pcoll | "Protect" >> beam.ParDo(self._fn)
