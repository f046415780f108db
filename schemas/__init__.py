"""Versioned Avro schemas of every input dataset, and the one loader for them.

Files live next to this module as ``<dataset>/v<N>.avsc``. They ship inside the
distribution (package data), so Flink workers that install riskpipe with
``--setup_file`` read exactly the schemas the job was built with.

Rule: a new version may only add fields with defaults or widen a field into a
union whose first branch is the old type. ``tests/unit/test_schemas.py`` checks
that every version reads data written by every earlier one (transitive
compatibility); a change that breaks this fails ``make test``.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

import fastavro

DATASETS = ("payment_event", "chargeback", "kyc_profile")
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


def _dataset_dir(dataset: str):
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return resources.files(__name__).joinpath(dataset)


@functools.cache
def versions(dataset: str) -> tuple[int, ...]:
    """Schema versions of ``dataset``, ascending."""
    found = []
    for entry in _dataset_dir(dataset).iterdir():
        match = _VERSION_FILE.match(entry.name)
        if match:
            found.append(int(match.group(1)))
    if not found:
        raise ValueError(f"no schema files for dataset {dataset!r}")
    return tuple(sorted(found))


def latest_version(dataset: str) -> int:
    return versions(dataset)[-1]


@functools.cache
def raw_schema(dataset: str, version: int) -> dict[str, Any]:
    """The schema as written in its ``.avsc`` file (a JSON object)."""
    if version not in versions(dataset):
        raise ValueError(f"{dataset} has no schema version {version}; known: {list(versions(dataset))}")
    text = _dataset_dir(dataset).joinpath(f"v{version}.avsc").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def load_schema(dataset: str, version: int | None = None) -> dict[str, Any]:
    """The parsed (fastavro) schema of ``dataset`` at ``version`` (default: latest)."""
    version = latest_version(dataset) if version is None else version
    return fastavro.parse_schema(raw_schema(dataset, version))


def field_names(dataset: str, version: int | None = None) -> tuple[str, ...]:
    version = latest_version(dataset) if version is None else version
    return tuple(f["name"] for f in raw_schema(dataset, version)["fields"])


def all_field_names(dataset: str) -> tuple[str, ...]:
    """Every top-level field any version of ``dataset`` has ever had."""
    seen: dict[str, None] = {}
    for version in versions(dataset):
        for name in field_names(dataset, version):
            seen.setdefault(name, None)
    return tuple(seen)
