"""Run the whole benchmark suite, one benchmark after the other, and record the results.

    python -m bench.run_all [--quick] [--kafka] [--results-dir DIR]

Writes ``deid-<stamp>.json``, ``pipeline-<stamp>.json`` and ``suite-<stamp>.md`` (machine, commands,
tables) under ``bench/results/`` and prints the markdown. The de-identification benchmark runs in
this process; the pipeline benchmark runs each job as a subprocess, never two at once.
Full run: about 3–4 minutes on a 2-core machine; ``--quick``: about 1 minute.

``--kafka`` adds ``bench/kafka_throughput.py`` (``kafka-<stamp>.json``; about 1 more minute, 20 s with
``--quick``). It needs the local stack's TLS broker (``python -m runners.stack up --only kafka``), so it
is off by default.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from bench import common, deid_throughput, kafka_throughput, pipeline_throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions (a smoke run)")
    parser.add_argument(
        "--kafka", action="store_true", help="also run the Kafka benchmark (needs the local stack's broker)"
    )
    parser.add_argument("--results-dir", default=str(common.RESULTS_DIR))
    args = parser.parse_args(argv)
    out_dir = Path(args.results_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    started = time.perf_counter()
    started_at = common.utc_now()
    steps = 3 if args.kafka else 2
    if args.kafka:  # fail before the long steps if the broker is not there
        kafka_throughput.settings_from(None, None)

    common.log(f"== 1/{steps} de-identification throughput")
    deid = deid_throughput.run(quick=args.quick)
    common.write_json(out_dir / f"deid-{stamp}.json", deid)

    common.log(f"== 2/{steps} pipeline throughput (direct runner)")
    pipeline = pipeline_throughput.run(quick=args.quick)
    common.write_json(out_dir / f"pipeline-{stamp}.json", pipeline)

    kafka = None
    if args.kafka:
        common.log(f"== 3/{steps} Kafka over TLS: plain consumer vs pipeline (direct runner)")
        kafka = kafka_throughput.run(quick=args.quick)
        common.write_json(out_dir / f"kafka-{stamp}.json", kafka)

    total = time.perf_counter() - started
    flag = (" --quick" if args.quick else "") + (" --kafka" if args.kafka else "")
    kafka_time = f", Kafka {kafka['runtime_s']:.0f} s" if kafka else ""
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
            f"de-identification {deid['runtime_s']:.0f} s, pipeline {pipeline['runtime_s']:.0f} s{kafka_time})",
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
    if kafka:
        report += "\n".join(
            [
                "",
                "## Kafka over TLS: plain consumer vs pipeline (`bench/kafka_throughput.py`)",
                "",
                f"{kafka['data']['messages']:,} `payment_event` messages ({kafka['params']['events']:,} events, "
                f"seed {kafka['params']['seed']}), {kafka['params']['partitions']} partitions; plain loop and "
                f"latency {kafka['params']['repeats_plain_and_latency']}×, pipeline "
                f"{kafka['params']['repeats_pipeline']}×, medians; load average at end "
                f"{kafka['load_average_end']}.",
                f"Pipeline job: `{kafka['params']['pipeline_command']}`.",
                "",
                kafka_throughput.markdown(kafka),
                "",
            ]
        )
    md_path = out_dir / f"suite-{stamp}.md"
    md_path.write_text(report, encoding="utf-8")
    sys.stdout.write(report)
    sys.stdout.flush()
    names = "deid,pipeline,kafka" if kafka else "deid,pipeline"
    common.log(f"suite: {total:.0f} s; wrote {out_dir}/{{{names}}}-{stamp}.json and {md_path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
