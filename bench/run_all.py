"""Run the whole benchmark suite, one benchmark after the other, and record the results.

    python -m bench.run_all [--quick] [--results-dir DIR]

Writes ``deid-<stamp>.json``, ``pipeline-<stamp>.json`` and ``suite-<stamp>.md`` (machine, commands,
tables) under ``bench/results/`` and prints the markdown. The de-identification benchmark runs in
this process; the pipeline benchmark runs each job as a subprocess, never two at once.
Full run: about 3–4 minutes on a 2-core machine; ``--quick``: about 1 minute.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from bench import common, deid_throughput, pipeline_throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions (a smoke run)")
    parser.add_argument("--results-dir", default=str(common.RESULTS_DIR))
    args = parser.parse_args(argv)
    out_dir = Path(args.results_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    started = time.perf_counter()
    started_at = common.utc_now()

    common.log("== 1/2 de-identification throughput")
    deid = deid_throughput.run(quick=args.quick)
    common.write_json(out_dir / f"deid-{stamp}.json", deid)

    common.log("== 2/2 pipeline throughput (direct runner)")
    pipeline = pipeline_throughput.run(quick=args.quick)
    common.write_json(out_dir / f"pipeline-{stamp}.json", pipeline)

    total = time.perf_counter() - started
    flag = " --quick" if args.quick else ""
    report = "\n".join(
        [
            f"# riskpipe benchmark suite — started {started_at}{' (quick)' if args.quick else ''}",
            "",
            "## Machine",
            "",
            common.machine_markdown(deid["machine"]),
            "",
            "## Commands",
            "",
            f"- `python -m bench.run_all{flag}` (total {total:.0f} s: "
            f"de-identification {deid['runtime_s']:.0f} s, pipeline {pipeline['runtime_s']:.0f} s)",
            f"- pipeline job: `{pipeline['params']['command']}`, input `riskpipe generate --seed 7 --events N`",
            "",
            "## De-identification, one core (`bench/deid_throughput.py`)",
            "",
            f"{deid['data']['rows']:,} curated payment rows, batches of {deid['params']['batch_size']}, "
            f"{deid['params']['repeats']} repetitions, medians; load average at start "
            f"{deid['machine']['load_average_1_5_15']}.",
            "",
            deid_throughput.markdown(deid),
            "",
            "## Pipeline, direct runner (`bench/pipeline_throughput.py`)",
            "",
            f"{pipeline['params']['repeats']} repetitions per size, medians; load average at end "
            f"{pipeline['load_average_end']}.",
            "",
            pipeline_throughput.markdown(pipeline),
            "",
        ]
    )
    md_path = out_dir / f"suite-{stamp}.md"
    md_path.write_text(report, encoding="utf-8")
    sys.stdout.write(report)
    sys.stdout.flush()
    common.log(f"suite: {total:.0f} s; wrote {out_dir}/{{deid,pipeline}}-{stamp}.json and {md_path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
