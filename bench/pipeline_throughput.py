"""End-to-end throughput of ``riskpipe run all --mode batch`` on Beam's direct runner, at two sizes.

For each size (default 10k and 40k payment events; ``--quick``: 2k and 8k) the input is generated
once with ``riskpipe generate --seed 7`` (not timed), then the job runs 3 times (sizes interleaved,
so drift in machine load hits both alike), each time into a fresh temp directory for the lake, the
DuckDB warehouse and the local key file.

Per run:

* ``wall_s``: the job subprocess end to end (interpreter start, imports, graph construction, the
  run, the summary): what a user waits for;
* ``job_s``: the CLI's own timer around ``module.run`` (graph construction + execution), parsed from
  its ``elapsed`` line; ``wall_s - job_s`` is the fixed start-up cost;
* ``cpu_s`` (user + sys) and ``peak_rss_mib``, from ``resource.getrusage(RUSAGE_CHILDREN)`` taken
  around the subprocess. ``ru_maxrss`` of RUSAGE_CHILDREN is a high-water mark over every child a
  process ever waited for, so each job is started from a fresh helper process
  (``python -m bench.pipeline_throughput --child -- CMD``) whose only child is that job;
* ``events_per_s``: payment events read (the job's ``riskpipe.files/payment_event.records_read``
  counter, parsed from its summary) / ``wall_s``.

Reported: medians per size, and the growth ratio time(large)/time(small) next to the input ratio,
plus a two-point linear fit (fixed seconds + marginal events/s).

    python -m bench.pipeline_throughput [--quick] [--sizes 10000 40000] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# only the standard library at import time: the --child helper must start light

DEFAULT_SIZES = (10_000, 40_000)
QUICK_SIZES = (2_000, 8_000)
REPEATS = 3
SEED = 7
RUN_TIMEOUT_S = 170  # a run that takes longer is a failure, not a measurement


# ---------------------------------------------------------------------------------- child helper


def child(cmd: list[str]) -> int:
    """Run ``cmd`` once; print its time, CPU and peak RSS (this process's only child) as JSON."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        code = -1
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = f"timed out after {RUN_TIMEOUT_S} s"
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "returncode": code,
                "wall_s": wall,
                "user_s": after.ru_utime - before.ru_utime,
                "sys_s": after.ru_stime - before.ru_stime,
                "maxrss_kib": after.ru_maxrss,  # Linux: KiB
                "stdout": stdout,
                "stderr_tail": stderr[-2000:],
            }
        )
    )
    return 0


# ---------------------------------------------------------------------------------- parent


def _riskpipe() -> list[str]:
    script = Path(sys.executable).parent / "riskpipe"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runners.cli"]


_ELAPSED = re.compile(r"^elapsed ([0-9.]+)s", re.MULTILINE)


def _summary_counts(stdout: str) -> dict[str, dict[str, int]]:
    """The per-dataset table the CLI prints: {dataset: {read, parsed, ...}}."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.split()[:2] == ["dataset", "read"]:
            header = line.split()
            out = {}
            for row in lines[i + 2 :]:
                cells = row.split()
                if len(cells) != len(header) or not cells[1].isdigit():
                    break
                out[cells[0]] = {h: int(c) for h, c in zip(header[1:], cells[1:], strict=True)}
            return out
    raise RuntimeError("no summary table in the job's output")


def generate(out_dir: Path, events: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*_riskpipe(), "generate", "--out", str(out_dir), "--events", str(events), "--seed", str(SEED)],
        check=True,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    return time.perf_counter() - started


def run_job(input_dir: Path, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    cmd = [
        *_riskpipe(),
        "run",
        "all",
        "--mode",
        "batch",
        "--input",
        str(input_dir),
        "--lake",
        str(work / "lake"),
        "--warehouse",
        str(work / "warehouse.duckdb"),
        "--env",
        "dev",
    ]
    helper = subprocess.run(
        [sys.executable, "-m", "bench.pipeline_throughput", "--child", "--", *cmd],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S + 30,
        check=True,
    )
    raw = json.loads(helper.stdout)
    if raw["returncode"] != 0:
        raise RuntimeError(f"job failed (exit {raw['returncode']}): {raw['stderr_tail']}")
    counts = _summary_counts(raw["stdout"])
    elapsed = _ELAPSED.search(raw["stdout"])
    payment_read = counts["payment_event"]["read"]
    cpu = raw["user_s"] + raw["sys_s"]
    return {
        "wall_s": raw["wall_s"],
        "job_s": float(elapsed.group(1)) if elapsed else None,
        "startup_s": raw["wall_s"] - float(elapsed.group(1)) if elapsed else None,
        "cpu_s": cpu,
        "cpu_utilisation": cpu / raw["wall_s"],
        "peak_rss_mib": raw["maxrss_kib"] / 1024,
        "payment_events_read": payment_read,
        "records_read_all_datasets": sum(c["read"] for c in counts.values()),
        "events_per_s": payment_read / raw["wall_s"],
        "events_per_s_job": payment_read / float(elapsed.group(1)) if elapsed else None,
        "events_per_cpu_s": payment_read / cpu,
        "counts": counts,
    }


def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    from bench import common

    values = [r[key] for r in runs if r.get(key) is not None]
    return common.median(values) if values else None


def summarize(sizes: list[int], runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    from bench import common

    per_size = {}
    for size in sizes:
        rs = runs[size]
        keys = [
            "wall_s",
            "job_s",
            "startup_s",
            "cpu_s",
            "cpu_utilisation",
            "peak_rss_mib",
            "events_per_s",
            "events_per_s_job",
            "events_per_cpu_s",
        ]
        per_size[str(size)] = {
            "payment_events_read": rs[0]["payment_events_read"],
            "records_read_all_datasets": rs[0]["records_read_all_datasets"],
            "median": {k: _median_of(rs, k) for k in keys},
            "wall_spread_pct": round(common.spread_pct([r["wall_s"] for r in rs]), 1),
        }
    small, large = str(sizes[0]), str(sizes[-1])
    s, la = per_size[small], per_size[large]
    n_s, n_l = s["payment_events_read"], la["payment_events_read"]
    t_s, t_l = s["median"]["wall_s"], la["median"]["wall_s"]
    marginal = (t_l - t_s) / (n_l - n_s)  # seconds per extra payment event
    growth = {
        "input_ratio": n_l / n_s,
        "wall_ratio": t_l / t_s,
        "job_ratio": la["median"]["job_s"] / s["median"]["job_s"] if s["median"]["job_s"] else None,
        "cpu_ratio": la["median"]["cpu_s"] / s["median"]["cpu_s"],
        "rss_ratio": la["median"]["peak_rss_mib"] / s["median"]["peak_rss_mib"],
        # two-point fit wall = fixed + events / marginal_rate
        "fit_fixed_s": t_s - n_s * marginal,
        "fit_marginal_events_per_s": 1 / marginal if marginal > 0 else None,
    }
    c_s, c_l = s["median"]["cpu_s"], la["median"]["cpu_s"]
    marginal_cpu = (c_l - c_s) / (n_l - n_s)
    growth["fit_fixed_cpu_s"] = c_s - n_s * marginal_cpu
    growth["fit_marginal_events_per_cpu_s"] = 1 / marginal_cpu if marginal_cpu > 0 else None
    return {"per_size": per_size, "growth": growth}


def markdown(doc: dict[str, Any]) -> str:
    from bench import common

    rows = []
    for size, entry in doc["summary"]["per_size"].items():
        m = entry["median"]
        rows.append(
            {
                "size": common.fmt_num(int(size)),
                "read": common.fmt_num(entry["payment_events_read"]),
                "wall": common.fmt_num(m["wall_s"], 2),
                "job": common.fmt_num(m["job_s"], 2),
                "startup": common.fmt_num(m["startup_s"], 2),
                "eps": common.fmt_num(m["events_per_s"]),
                "eps_job": common.fmt_num(m["events_per_s_job"]),
                "cpu": common.fmt_num(m["cpu_s"], 2),
                "epc": common.fmt_num(m["events_per_cpu_s"]),
                "util": f"{100 * m['cpu_utilisation']:.0f}%",
                "rss": common.fmt_num(m["peak_rss_mib"]),
                "spread": f"{entry['wall_spread_pct']:.0f}%",
            }
        )
    table = common.markdown_table(
        rows,
        [
            ("size", "--events"),
            ("read", "payment events read"),
            ("wall", "wall s (end to end)"),
            ("job", "job s (CLI timer)"),
            ("startup", "start-up s"),
            ("eps", "events/s (wall)"),
            ("eps_job", "events/s (job timer)"),
            ("cpu", "CPU s (user+sys)"),
            ("epc", "events per CPU-s"),
            ("util", "CPU/wall"),
            ("rss", "peak RSS MiB"),
            ("spread", "wall spread"),
        ],
    )
    g = doc["summary"]["growth"]
    sizes = list(doc["summary"]["per_size"])
    lines = [
        table,
        "",
        f"- growth {common.fmt_num(int(sizes[-1]))} vs {common.fmt_num(int(sizes[0]))}: input ×{g['input_ratio']:.2f}, "
        f"wall time ×{g['wall_ratio']:.2f}, job time ×{g['job_ratio']:.2f}, CPU ×{g['cpu_ratio']:.2f}, "
        f"peak RSS ×{g['rss_ratio']:.2f}",
        f"- two-point fit: wall ≈ {g['fit_fixed_s']:.1f} s fixed + events / "
        f"{common.fmt_num(g['fit_marginal_events_per_s'])} events/s; "
        f"CPU ≈ {g['fit_fixed_cpu_s']:.1f} s fixed + events / "
        f"{common.fmt_num(g['fit_marginal_events_per_cpu_s'])} events per CPU-s",
    ]
    return "\n".join(lines)


def run(quick: bool = False, sizes: list[int] | None = None, repeats: int = REPEATS) -> dict[str, Any]:
    from bench import common

    sizes = sorted(sizes or (QUICK_SIZES if quick else DEFAULT_SIZES))
    if len(sizes) < 2:
        raise SystemExit("need at least two sizes to show growth")
    started = time.perf_counter()
    machine = common.machine_info()
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    generation_s = {}
    with tempfile.TemporaryDirectory(prefix="riskpipe-bench-") as tmp:
        root = Path(tmp)
        inputs = {}
        for size in sizes:
            inputs[size] = root / f"input-{size}"
            generation_s[str(size)] = round(generate(inputs[size], size), 2)
            common.log(f"pipeline: generated {size} events in {generation_s[str(size)]} s (not timed)")
        for rep in range(repeats):
            for size in sizes:  # interleaved sizes, one job at a time
                work = root / f"run-{size}-{rep}"
                result = run_job(inputs[size], work)
                runs[size].append(result)
                shutil.rmtree(work, ignore_errors=True)
                common.log(
                    f"pipeline: {size} events rep {rep + 1}/{repeats}: wall {result['wall_s']:.2f} s, "
                    f"job {result['job_s']} s, {result['events_per_s']:,.0f} events/s, "
                    f"RSS {result['peak_rss_mib']:.0f} MiB, load {os.getloadavg()[0]:.2f}"
                )
    doc = {
        "benchmark": "pipeline_throughput",
        "date": common.utc_now(),
        "machine": machine,
        "params": {
            "sizes": sizes,
            "repeats": repeats,
            "seed": SEED,
            "quick": quick,
            "runner": "DirectRunner (default)",
            "command": "riskpipe run all --mode batch --input IN --lake TMP/lake "
            "--warehouse TMP/warehouse.duckdb --env dev",
        },
        "generation_s": generation_s,
        "runs": {str(size): runs[size] for size in sizes},
        "summary": summarize(sizes, runs),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    doc["runtime_s"] = round(time.perf_counter() - started, 1)
    return doc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        cmd = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        return child(cmd)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="payment events per size")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument(
        "--out", default=None, help="result JSON (default bench/results/pipeline-<time>.json)"
    )
    args = parser.parse_args(argv)
    from bench import common

    doc = run(quick=args.quick, sizes=args.sizes, repeats=args.repeats)
    path = common.write_json(Path(args.out) if args.out else common.result_path("pipeline"), doc)
    print(markdown(doc))
    common.log(f"pipeline: wrote {path} ({doc['runtime_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
