"""THE policy: classification of every field, de-identify templates, roles.

``load_policy()`` reads ``classification.yaml`` into closed, typed models
(unknown keys, classes or handlings fail at load) and checks it against the
de-identify templates in ``deidentify/<dataset>.json``: every curated column
that tokenizes, masks or generalizes has exactly one transformation there
(or names a builtin generalizer), and no template transforms a column the
policy does not declare. Policy never hides in code: code asks this module.
"""

from __future__ import annotations

import enum
import functools
import json
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ZONES = ("raw", "curated", "analytics")
SENSITIVE = frozenset({"PII", "SPI", "PCI"})
BUILTIN_GENERALIZERS = ("ip_prefix",)
TEMPLATE_PRIMITIVES = {
    "tokenize": {"cryptoDeterministicConfig", "cryptoReplaceFfxFpeConfig", "cryptoHashConfig"},
    "mask": {"characterMaskConfig", "redactConfig", "replaceConfig"},
    "generalize": {"timePartConfig", "fixedSizeBucketingConfig", "bucketingConfig", "dateShiftConfig"},
}


class DataClass(str, enum.Enum):
    PUBLIC = "PUBLIC"
    INTERNAL = "INTERNAL"
    CONFIDENTIAL = "CONFIDENTIAL"
    PII = "PII"
    SPI = "SPI"
    PCI = "PCI"


Handling = Literal["keep", "tokenize", "mask", "generalize", "encrypt", "drop"]


class PolicyError(ValueError):
    """The policy or its use is invalid; the message says what to fix."""


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Output(_Closed):
    """One column a field produces in a zone."""

    handling: Handling
    column: str
    builtin: Literal["ip_prefix"] | None = None


def _as_outputs(value, field_name: str) -> tuple[Output, ...]:
    if isinstance(value, str):
        return (Output(handling=value, column=field_name.replace(".", "_")),)
    if isinstance(value, list):
        return tuple(Output(**item) if isinstance(item, dict) else item for item in value)
    raise PolicyError(f"{field_name}: a zone takes a handling or a list of {{handling, column}}")


class FieldPolicy(_Closed):
    data_class: DataClass = Field(alias="class")
    raw: Handling
    curated: tuple[Output, ...]
    analytics: Handling
    nonprod: dict[Literal["raw", "curated", "analytics"], Handling | list[dict]] = Field(default_factory=dict)

    @field_validator("curated", mode="before")
    @classmethod
    def _curated(cls, value, info):
        return _as_outputs(value, info.field_name)


class DatasetPolicy(_Closed):
    subject: str
    fields: dict[str, FieldPolicy]

    @model_validator(mode="before")
    @classmethod
    def _name_outputs(cls, data):
        # a bare "keep" in curated names its column after the field path
        fields = data.get("fields", {}) if isinstance(data, dict) else {}
        for path, spec in fields.items():
            if isinstance(spec, dict) and isinstance(spec.get("curated"), str):
                spec["curated"] = [{"handling": spec["curated"], "column": path.replace(".", "_")}]
        return data


class Policy(_Closed):
    version: Literal[1]
    datasets: dict[Literal["payment_event", "chargeback", "kyc_profile"], DatasetPolicy]

    def dataset(self, name: str) -> DatasetPolicy:
        try:
            return self.datasets[name]
        except KeyError:
            raise PolicyError(f"dataset {name!r} is not classified in classification.yaml") from None


def _check_policy(policy: Policy, templates: dict[str, dict]) -> None:
    for dataset, dpol in policy.datasets.items():
        if dpol.subject not in dpol.fields:
            raise PolicyError(f"{dataset}: subject field {dpol.subject!r} is not classified")
        transformed = _template_columns(dataset, templates[dataset])
        columns: dict[str, str] = {}
        for path, fpol in dpol.fields.items():
            sensitive = fpol.data_class.value in SENSITIVE
            if sensitive and fpol.analytics == "keep":
                raise PolicyError(
                    f"{dataset}.{path} is {fpol.data_class.value}: analytics may not keep it raw"
                )
            for out in fpol.curated:
                if out.column in columns:
                    raise PolicyError(f"{dataset}: curated column {out.column!r} is produced twice")
                columns[out.column] = path
                if sensitive and out.handling == "keep":
                    raise PolicyError(
                        f"{dataset}.{path} is {fpol.data_class.value}: curated may not keep it raw"
                    )
                if out.handling == "encrypt":
                    raise PolicyError(f"{dataset}.{path}: encrypt is a raw-zone handling, not a curated one")
                if out.handling in TEMPLATE_PRIMITIVES:
                    if out.builtin is not None:
                        continue
                    primitive = transformed.pop(out.column, None)
                    if primitive is None:
                        raise PolicyError(
                            f"{dataset}.{path}: curated column {out.column!r} is {out.handling} but "
                            f"deidentify/{dataset}.json has no transformation for it"
                        )
                    if primitive not in TEMPLATE_PRIMITIVES[out.handling]:
                        raise PolicyError(
                            f"{dataset}.{path}: {out.handling} of {out.column!r} cannot be done by {primitive}"
                        )
        if transformed:
            raise PolicyError(
                f"deidentify/{dataset}.json transforms undeclared column(s): {sorted(transformed)}"
            )


def _template_columns(dataset: str, template: dict) -> dict[str, str]:
    out = {}
    for ft in template.get("recordTransformations", {}).get("fieldTransformations", []):
        primitive = ft.get("primitiveTransformation", {})
        if len(primitive) != 1:
            raise PolicyError(f"deidentify/{dataset}.json: each field transformation needs one primitive")
        (name,) = primitive
        for field in ft.get("fields", []):
            if field["name"] in out:
                raise PolicyError(f"deidentify/{dataset}.json transforms {field['name']!r} twice")
            out[field["name"]] = name
    return out


@functools.lru_cache(maxsize=1)
def load_templates() -> dict[str, dict]:
    base = resources.files(__name__).joinpath("deidentify")
    return {
        name: json.loads(base.joinpath(f"{name}.json").read_text(encoding="utf-8"))
        for name in ("payment_event", "chargeback", "kyc_profile")
    }


def parse_policy(text: str, templates: dict[str, dict] | None = None) -> Policy:
    """Load a policy document; ``PolicyError`` with the offending key on any problem."""
    try:
        data = yaml.safe_load(text)
        policy = Policy.model_validate(data)
    except PolicyError:
        raise
    except Exception as err:  # noqa: BLE001 - pydantic/yaml errors: keep their location, drop the noise
        raise PolicyError(f"classification.yaml is invalid: {err}") from None
    _check_policy(policy, templates if templates is not None else load_templates())
    return policy


@functools.lru_cache(maxsize=1)
def load_policy() -> Policy:
    text = resources.files(__name__).joinpath("classification.yaml").read_text(encoding="utf-8")
    return parse_policy(text)


def effective_handling(fpol: FieldPolicy, zone: str, env: str) -> tuple[Output, ...] | str:
    """A field's handling in ``zone`` for ``env``, with nonprod overrides applied."""
    if zone not in ZONES:
        raise PolicyError(f"unknown zone {zone!r}")
    value = getattr(fpol, zone)
    if env != "prod" and zone in fpol.nonprod:
        override = fpol.nonprod[zone]
        value = _as_outputs(override, "override") if zone == "curated" else override
    return value


def check_environment(policy: Policy, env: str, zones=ZONES) -> None:
    """The non-prod guard: in nonprod/dev no PII/SPI/PCI is kept raw in any zone that env writes."""
    if env == "prod":
        return
    for dataset, dpol in policy.datasets.items():
        for path, fpol in dpol.fields.items():
            if fpol.data_class.value not in SENSITIVE:
                continue
            for zone in zones:
                value = effective_handling(fpol, zone, env)
                handlings = [o.handling for o in value] if isinstance(value, tuple) else [value]
                if "keep" in handlings:
                    raise PolicyError(
                        f"{dataset}.{path} is {fpol.data_class.value}: handling 'keep' in zone {zone} is "
                        f"refused in {env}; non-production never sees raw personal data"
                    )
