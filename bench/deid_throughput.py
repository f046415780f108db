"""De-identification throughput of ``LocalDeidEngine`` on one core, next to a plain HMAC-SHA256.

What is measured, all in one process and one run, interleaved round-robin so every case sees the
same machine load:

* ``engine``: the real ``dlp_configs/deidentify/payment_event.json`` template applied by
  ``LocalDeidEngine.deidentify`` to curated-shape rows (every column ``ProtectFields`` projects for
  ``curated.payment_event`` in ``dev``), in batches of 512 as ``ProtectFields`` does;
* each primitive alone, through the same engine with a one-transformation template taken from the
  real one: AES-SIV deterministic token (``card_token``), FF3-1 FPE (``device_token``) and the
  character mask (``billing_postal_masked``), again in batches of 512 single-column rows;
* ``engine: same fields, replaceConfig``: the template with every primitive swapped for
  ``replaceConfig``, i.e. the engine's own bookkeeping (row copies, field reads and writes) with
  next to no primitive work; the one-field primitive cases carry this overhead too, per row;
* ``aes-siv (library)``: ``cryptography``'s ``AESSIV.encrypt`` alone on the card values, the floor
  under the AES-SIV primitive (no token formatting, no engine);
* ``hmac-sha256``: ``hmac.new(key, value, sha256).digest()`` over exactly the field values the engine
  transforms (UTF-8 bytes prepared up front).

Rows come from ``runners.synthetic.iter_messages`` (seed 7): only ``ok`` payment events, shaped as
``ProtectFields._project`` shapes them (v1/v2 ``billing_postal`` strings become the v3 struct; v1
events have no ``device_id``, so their ``device_token`` is ``None`` and is not counted as a field).
Keys: a ``StaticKeyResolver`` with random 64-byte keys for both key families.

Each case gets one warm-up pass, which also sizes a repetition to about 0.4 s of CPU (whole passes
over the data), then is repeated (default 9, at least 5) round-robin; the result is the median
throughput, with wall and process CPU time both recorded (CPU time is what to trust when the machine
is shared) and the best repetition kept too. Single-threaded, so every number is per core.

    python -m bench.deid_throughput [--quick] [--repeats N] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from bench import common

BATCH = 512
TEMPLATE_DATASET = "payment_event"
# the template's field → the primitive measured alone on it
PRIMITIVE_FIELDS = {
    "card_token": "aes-siv token",
    "device_token": "ff3-1 fpe",
    "billing_postal_masked": "character mask",
}


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def curated_rows(events: int, seed: int) -> list[dict]:
    """Curated-shape payment rows, raw values in the columns the template protects."""
    from runners.synthetic import iter_messages
    from transforms.protect import ZonePlan, ip_prefix

    builtins = {"ip_prefix": ip_prefix}
    plan = ZonePlan(TEMPLATE_DATASET, "curated", "dev")
    rows = []
    for msg in iter_messages(events=events, seed=seed):
        if msg.dataset != TEMPLATE_DATASET or msg.kind != "ok":
            continue
        obj = json.loads(msg.payload)
        postal = obj.get("billing_postal")
        if isinstance(postal, str):  # v1/v2 shape; ParseRecords upcasts to the v3 struct
            obj["billing_postal"] = {"postal_code": postal, "country": None}
        obj["schema_version"] = msg.schema_version
        obj["ingested_at"] = msg.arrival_time.isoformat()
        row = {column: _get_path(obj, path) for path, column in plan.copies}
        for path, column, builtin in plan.builtins:
            value = _get_path(obj, path)
            row[column] = builtins[builtin](value) if value is not None else None
        rows.append(row)
    return rows


def static_resolver(template: dict):
    """A StaticKeyResolver holding one random 64-byte version of every key the template names."""
    from transforms.deid import StaticKeyResolver

    names = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "cryptoKeyName" in node:
                names.add(node["cryptoKeyName"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(template)
    return StaticKeyResolver(
        {name: {1: secrets.token_bytes(64)} for name in sorted(names)}, {name: 1 for name in names}
    )


def _single_field_template(template: dict, field: str) -> dict:
    for ft in template["recordTransformations"]["fieldTransformations"]:
        if [f["name"] for f in ft["fields"]] == [field]:
            return {"recordTransformations": {"fieldTransformations": [copy.deepcopy(ft)]}}
    raise ValueError(f"template has no transformation of exactly {field!r}")


def _batches(rows: list[dict]) -> list[list[dict]]:
    return [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]


class Case:
    """One measured workload: ``run()`` processes the whole data set once."""

    def __init__(self, name: str, kind: str, run: Callable[[], Any], units: dict[str, int], note: str = ""):
        self.name = name
        self.kind = kind
        self.run = run
        self.units = units  # e.g. {"records": 9980, "fields": 37000} per pass
        self.note = note
        self.loops = 1  # passes over the data per timed repetition (set by calibration)
        self.wall: list[float] = []
        self.cpu: list[float] = []


def build_cases(rows: list[dict]) -> tuple[list[Case], dict[str, Any]]:
    import dlp_configs
    from transforms.deid import LocalDeidEngine

    template = dlp_configs.load_templates()[TEMPLATE_DATASET]
    resolver = static_resolver(template)
    engine = LocalDeidEngine(template, resolver)
    fields = engine.fields

    # values the engine actually transforms (missing/None pass through untouched; empty strings too)
    field_values = {f: [r[f] for r in rows if r.get(f) not in (None, "")] for f in fields}
    n_fields = sum(len(v) for v in field_values.values())
    batches = _batches(rows)

    def run_engine() -> None:
        for batch in batches:
            engine.deidentify(batch)

    cases = [
        Case(
            "engine: payment_event.json",
            "engine",
            run_engine,
            {"records": len(rows), "fields": n_fields},
            f"{len(fields)} transformations: " + ", ".join(fields),
        )
    ]

    # the same four fields through replaceConfig: the engine's own bookkeeping (row copies, field
    # reads and writes, batching) with next to no primitive work
    noop_template = copy.deepcopy(template)
    for ft in noop_template["recordTransformations"]["fieldTransformations"]:
        ft["primitiveTransformation"] = {"replaceConfig": {"newValue": {"stringValue": "x"}}}
    noop = LocalDeidEngine(noop_template, resolver)

    def run_noop() -> None:
        for batch in batches:
            noop.deidentify(batch)

    cases.append(
        Case(
            "engine: same fields, replaceConfig",
            "engine",
            run_noop,
            {"records": len(rows), "fields": n_fields},
            "bookkeeping only: every primitive swapped for replaceConfig",
        )
    )

    for field, label in PRIMITIVE_FIELDS.items():
        single = LocalDeidEngine(_single_field_template(template, field), resolver)
        single_batches = _batches([{field: v} for v in field_values[field]])

        def run_single(e=single, b=single_batches) -> None:
            for batch in b:
                e.deidentify(batch)

        cases.append(
            Case(
                f"primitive: {label}",
                "primitive",
                run_single,
                {"ops": len(field_values[field])},
                f"engine, one-field template, column {field}",
            )
        )

    # the library floor under the AES-SIV primitive: same key size, same associated data, same values
    siv_cfg = _single_field_template(template, "card_token")["recordTransformations"]["fieldTransformations"][
        0
    ]["primitiveTransformation"]["cryptoDeterministicConfig"]
    siv = AESSIV(secrets.token_bytes(64))
    ad = [siv_cfg["context"]["name"].encode()]
    card_bytes = [v.encode() for v in field_values["card_token"]]

    def run_siv_raw() -> None:
        encrypt = siv.encrypt
        for value in card_bytes:
            encrypt(value, ad)

    cases.append(
        Case(
            "aes-siv (library)",
            "reference",
            run_siv_raw,
            {"ops": len(card_bytes)},
            "cryptography AESSIV.encrypt only, card values",
        )
    )

    hmac_key = secrets.token_bytes(64)
    all_bytes = [str(v).encode("utf-8") for f in fields for v in field_values[f]]

    def run_hmac() -> None:
        new = hmac.new
        sha256 = hashlib.sha256
        for value in all_bytes:
            new(hmac_key, value, sha256).digest()

    cases.append(
        Case(
            "hmac-sha256 baseline",
            "baseline",
            run_hmac,
            {"ops": len(all_bytes)},
            "hmac.new(key, value, sha256).digest() over the engine's field values",
        )
    )
    data = {
        "rows": len(rows),
        "batches": len(batches),
        "batch_size": BATCH,
        "fields_per_pass": n_fields,
        "field_values": {f: len(v) for f, v in field_values.items()},
        "mean_value_chars": {
            f: round(sum(len(str(x)) for x in v) / max(len(v), 1), 1) for f, v in field_values.items()
        },
    }
    return cases, data


def measure(cases: list[Case], repeats: int, target_s: float) -> None:
    """Warm up, size each pass to about ``target_s`` of CPU, then time ``repeats`` passes per case."""
    for case in cases:  # warm-up (caches, lazy imports, allocator) doubles as calibration
        cpu0 = time.process_time()
        case.run()
        once = max(time.process_time() - cpu0, 1e-4)
        case.loops = max(1, math.ceil(target_s / once))
        case.units = {unit: count * case.loops for unit, count in case.units.items()}
    for _ in range(repeats):
        for case in cases:  # round-robin: drift in machine load hits every case alike
            run, loops = case.run, case.loops
            cpu0 = time.process_time()
            wall0 = time.perf_counter()
            for _ in range(loops):
                run()
            case.wall.append(time.perf_counter() - wall0)
            case.cpu.append(time.process_time() - cpu0)


def _rates(count: int, seconds: list[float]) -> list[float]:
    return [count / s for s in seconds]


def results(cases: list[Case]) -> list[dict[str, Any]]:
    out = []
    for case in cases:
        entry: dict[str, Any] = {
            "name": case.name,
            "kind": case.kind,
            "note": case.note,
            "loops_per_repetition": case.loops,
            "units_per_repetition": case.units,
            "wall_s": case.wall,
            "cpu_s": case.cpu,
            "wall_spread_pct": round(common.spread_pct(case.wall), 1),
            "cpu_spread_pct": round(common.spread_pct(case.cpu), 1),
        }
        for unit, count in case.units.items():
            entry[f"{unit}_per_s_wall"] = common.summarize(_rates(count, case.wall))
            entry[f"{unit}_per_s_cpu"] = common.summarize(_rates(count, case.cpu))
        out.append(entry)
    return out


def derived(entries: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """Ratios against the HMAC baseline and a cost breakdown of the engine, from medians (CPU time)."""
    by_name = {e["name"]: e for e in entries}
    engine = by_name["engine: payment_event.json"]
    hmac_rate = by_name["hmac-sha256 baseline"]["ops_per_s_cpu"]["median"]
    engine_fields = engine["fields_per_s_cpu"]["median"]
    engine_records = engine["records_per_s_cpu"]["median"]
    out: dict[str, Any] = {
        "engine_fields_per_s_over_hmac_ops_per_s": engine_fields / hmac_rate,
        "engine_field_cost_in_hmacs": hmac_rate / engine_fields,
        "engine_us_per_record": 1e6 / engine_records,
        "engine_us_per_field": 1e6 / engine_fields,
        "hmac_us_per_op": 1e6 / hmac_rate,
        "primitive_cost_in_hmacs": {},
        "primitive_us_per_op": {},
    }
    for label in PRIMITIVE_FIELDS.values():
        rate = by_name[f"primitive: {label}"]["ops_per_s_cpu"]["median"]
        out["primitive_cost_in_hmacs"][label] = hmac_rate / rate
        out["primitive_us_per_op"][label] = 1e6 / rate
    siv_lib = by_name["aes-siv (library)"]["ops_per_s_cpu"]["median"]
    out["aes_siv_library_us_per_op"] = 1e6 / siv_lib
    out["aes_siv_library_cost_in_hmacs"] = hmac_rate / siv_lib
    noop_records = by_name["engine: same fields, replaceConfig"]["records_per_s_cpu"]["median"]
    out["bookkeeping_us_per_record"] = 1e6 / noop_records
    out["bookkeeping_share_of_engine"] = out["bookkeeping_us_per_record"] / out["engine_us_per_record"]
    return out


def markdown(doc: dict[str, Any]) -> str:
    rows = []
    hmac_rate = next(e for e in doc["cases"] if e["kind"] == "baseline")["ops_per_s_cpu"]["median"]
    for e in doc["cases"]:
        unit = "fields" if "fields" in e["units_per_repetition"] else "ops"
        cpu_rate = e[f"{unit}_per_s_cpu"]["median"]
        row = {
            "name": e["name"],
            "n": common.fmt_num(e["units_per_repetition"][unit]),
            "unit": unit,
            "wall": common.fmt_num(e[f"{unit}_per_s_wall"]["median"]),
            "cpu": common.fmt_num(cpu_rate),
            "best": common.fmt_num(e[f"{unit}_per_s_cpu"]["max"]),
            "us": common.fmt_num(1e6 / cpu_rate, 2),
            "vs": common.fmt_num(cpu_rate / hmac_rate, 3),
            "spread": f"{e['cpu_spread_pct']:.0f}% / {e['wall_spread_pct']:.0f}%",
            "records": common.fmt_num(e["records_per_s_cpu"]["median"])
            if "records" in e["units_per_repetition"]
            else "",
        }
        rows.append(row)
    table = common.markdown_table(
        rows,
        [
            ("name", "case"),
            ("n", "values/repetition"),
            ("unit", "unit"),
            ("wall", "/s (wall, median)"),
            ("cpu", "/s (CPU, median)"),
            ("best", "/s (CPU, best)"),
            ("us", "µs per unit (CPU, median)"),
            ("vs", "÷ HMAC /s"),
            ("records", "records/s (CPU)"),
            ("spread", "spread CPU / wall"),
        ],
    )
    d = doc["derived"]
    extra = [
        "",
        f"- engine: {d['engine_us_per_record']:.1f} µs per record, {d['engine_us_per_field']:.2f} µs per field; "
        f"one field costs {d['engine_field_cost_in_hmacs']:.1f}× an HMAC-SHA256 "
        f"(engine fields/s ÷ HMAC ops/s = {d['engine_fields_per_s_over_hmac_ops_per_s']:.3f})",
        "- each primitive alone, in HMACs: "
        + ", ".join(f"{k} {v:.1f}×" for k, v in d["primitive_cost_in_hmacs"].items())
        + f"; AES-SIV library call alone {d['aes_siv_library_cost_in_hmacs']:.1f}×",
        f"- engine bookkeeping (same fields through replaceConfig: row copies, field reads/writes): "
        f"{d['bookkeeping_us_per_record']:.1f} µs per record = "
        f"{100 * d['bookkeeping_share_of_engine']:.0f}% of the engine's time; the rest is the primitives",
    ]
    return table + "\n" + "\n".join(extra)


def run(quick: bool = False, repeats: int | None = None, seed: int = 7) -> dict[str, Any]:
    events = 4_000 if quick else 10_000
    repeats = repeats or (5 if quick else 9)
    target_s = 0.1 if quick else 0.4
    if repeats < 5:
        raise SystemExit("--repeats must be >= 5")
    started = time.perf_counter()
    common.log(f"deid: building rows from {events} synthetic events (seed {seed})")
    rows = curated_rows(events, seed)
    cases, data = build_cases(rows)
    common.log(f"deid: {len(cases)} cases × {repeats} repetitions, {data['rows']} rows per pass")
    measure(cases, repeats, target_s)
    entries = results(cases)
    doc = {
        "benchmark": "deid_throughput",
        "date": common.utc_now(),
        "machine": common.machine_info(),
        "params": {
            "events": events,
            "seed": seed,
            "repeats": repeats,
            "quick": quick,
            "batch_size": BATCH,
            "target_cpu_s_per_repetition": target_s,
        },
        "data": data,
        "cases": entries,
    }
    doc["derived"] = derived(entries, data)
    doc["runtime_s"] = round(time.perf_counter() - started, 1)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and repetitions")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per case (>= 5)")
    parser.add_argument("--out", default=None, help="result JSON (default bench/results/deid-<time>.json)")
    args = parser.parse_args(argv)
    doc = run(quick=args.quick, repeats=args.repeats)
    path = common.write_json(Path(args.out) if args.out else common.result_path("deid"), doc)
    print(markdown(doc))
    common.log(f"deid: wrote {path} ({doc['runtime_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
