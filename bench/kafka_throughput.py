"""Kafka over TLS: the plain-Python ceiling next to the pipeline on the direct runner, same data.

Needs the local stack's broker (``python -m runners.stack up --only kafka``); its bootstrap address
and CA come from ``.stack/endpoints.json`` unless ``--kafka_bootstrap`` / ``--kafka_ca`` are given.

Data: ``iter_messages(N, seed 7)`` (default N = 20,000 payment events), its ``payment_event``
messages only (≈ 20.5k: duplicates and malformed records included), produced once with
``runners.produce.produce`` (idempotent producer, TLS) to ``<prefix>payment_event``, 3 partitions,
a fresh topic prefix per run. Production is not timed. Then, in one run:

1. **plain loop** (3 repetitions, variants round-robin): one confluent-kafka ``Consumer`` over TLS,
   all partitions assigned from offset 0, ``poll()`` per message and the ``SourceRecord`` the
   connector builds, until every message is read — ``consume``; the same plus
   ``_ParseRecordFn.process`` per message — ``consume+parse`` (the ceiling of a Python source +
   parse on one core); ``_ParseRecordFn`` alone over the records kept in memory — ``parse``. Wall
   and process CPU time (all threads, librdkafka's included) from consumer creation (TLS handshake
   included) to the last message.
2. **pipeline** (2 repetitions): ``riskpipe run fraud-features --mode stream --source kafka
   --idle-timeout 3`` on the direct runner as a subprocess of a fresh helper process (wall, CPU,
   peak RSS from ``getrusage(RUSAGE_CHILDREN)``, as ``bench.pipeline_throughput`` does), each with
   its own consumer group. While it runs, this process samples every 0.25 s the group's committed
   offsets (the source commits after each finalized bundle) and the job's CPU time (``/proc``): the
   moment the commits reach the end of every partition is the drain, and the CPU spent before and
   after it shows how much work waits for the source to finish. ``events/s`` = messages / (wall −
   idle timeout) is the headline rate; launch → drained gives the reading rate without the idle tail.
3. **Flink**: not measurable here (no Flink job server, see the README's pins table); recorded n/a.
4. **produce → consumed latency** (3 repetitions): the plain consumer (+ parse) is assigned to an
   empty topic, then a thread produces payment messages with ``runners.produce.produce`` at a
   fixed rate (default 2,000 msg/s for 5 s); per message, consume wall clock (after parsing) minus
   the message's CreateTime (set by the producer client when ``produce()`` is called, ms
   resolution, same host clock). This is transport + client latency (linger 10 ms, acks=all,
   TLS, fetch), a lower bound for event → queryable freshness; it is not pipeline freshness —
   on the direct runner event-time results appear only when the source drains.

    python -m bench.kafka_throughput [--quick] [--events 20000] [--repeats 3] [--pipeline-repeats 2]
                                     [--rate 2000] [--seconds 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import common

EVENTS = 20_000
QUICK_EVENTS = 4_000
SEED = 7
REPEATS = 3
PIPELINE_REPEATS = 2
IDLE_TIMEOUT_S = 3.0
LATENCY_RATE = 2_000.0
LATENCY_SECONDS = 5.0
DATASET = "payment_event"
COMMIT_POLL_S = 0.25
CONSUME_TIMEOUT_S = 120.0
FLINK_NA = (
    "n/a: no Flink runner can start here — Beam's Flink job server jar "
    "(beam-runners-flink-<v>-job-server) does not resolve from the Maven mirror for any Beam "
    "version (README, pins table)"
)
VARIANTS = ("consume", "consume+parse", "parse")


# ---------------------------------------------------------------------------------- connection


def settings_from(bootstrap: str | None, ca: str | None):
    """KafkaSettings from explicit values or the local stack's endpoints file (health-checked)."""
    from io_connectors.kafka import KafkaSettings
    from runners import stack

    if not bootstrap:
        info = stack._read_endpoints().get("kafka")
        if not info or not stack._kafka_healthy(info["bootstrap"], info["ca"]):
            raise SystemExit(
                "kafka benchmark: no healthy broker in .stack/endpoints.json; start one with "
                "`.venv/bin/python -m runners.stack up --only kafka`"
            )
        bootstrap, ca = info["bootstrap"], info["ca"]
    return KafkaSettings(bootstrap, ssl_ca_location=ca)


def _rel(path: str | None) -> str | None:
    """A path as committed files may show it: relative to the repo root, else only its name."""
    if not path:
        return path
    try:
        return str(Path(path).resolve().relative_to(common.REPO_DIR))
    except ValueError:
        return Path(path).name


# ---------------------------------------------------------------------------------- plain loop


def _source_record(message, topic: str):
    """The ``SourceRecord`` ``io_connectors.kafka`` builds for a message (same fields, same calls)."""
    from io_connectors.kafka import _headers
    from transforms.records import SourceRecord
    from transforms.timeutil import format_micros, now_micros

    headers = _headers(message)
    _, broker_ms = message.timestamp()
    return SourceRecord(
        message.value() or b"",
        f"kafka:{topic}",
        f"{message.partition()}:{message.offset()}",
        int(headers["schema_version"]) if headers.get("schema_version", "").isdigit() else None,
        format_micros(broker_ms * 1000) if broker_ms and broker_ms > 0 else format_micros(now_micros()),
        headers.get("format", "json"),
    )


def _consumer(settings, group: str):
    from confluent_kafka import Consumer

    return Consumer(
        {
            **settings.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )


def _parse_fn():
    from transforms.parse import _ParseRecordFn

    fn = _ParseRecordFn(DATASET)
    fn.setup()
    return fn


def _parse_one(fn, record) -> bool:
    """Run the DoFn on one record; True if it was parsed, False if quarantined."""
    from apache_beam import pvalue

    ok = True
    for out in fn.process(record):
        ok = not isinstance(out, pvalue.TaggedOutput)
    return ok


def consume_all(settings, topic: str, partitions: int, total: int, parse: bool, keep: list | None = None):
    """Read ``total`` messages from offset 0 of every partition; optionally parse each one."""
    from confluent_kafka import TopicPartition

    fn = _parse_fn() if parse else None
    parsed = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    consumer = _consumer(settings, f"bench-plain-{uuid.uuid4().hex[:8]}")
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        n, first = 0, None
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while n < total:
            message = consumer.poll(1.0)
            if message is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"read {n} of {total} messages in {CONSUME_TIMEOUT_S} s")
                continue
            if message.error():
                raise RuntimeError(f"Kafka error: {message.error().name()}")
            if first is None:
                first = time.perf_counter() - wall0
            record = _source_record(message, topic)
            n += 1
            if fn is not None:
                parsed += _parse_one(fn, record)
            if keep is not None:
                keep.append(record)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        consumer.close()
    return {
        "messages": n,
        "parsed": parsed if parse else None,
        "wall_s": wall,
        "cpu_s": cpu,
        "first_message_s": first,
        "events_per_s": n / wall,
        "events_per_cpu_s": n / cpu,
    }


def parse_only(records: list) -> dict[str, Any]:
    fn = _parse_fn()
    parsed = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for record in records:
        parsed += _parse_one(fn, record)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = len(records)
    return {
        "messages": n,
        "parsed": parsed,
        "wall_s": wall,
        "cpu_s": cpu,
        "events_per_s": n / wall,
        "events_per_cpu_s": n / cpu,
    }


# ---------------------------------------------------------------------------------- pipeline


_ELAPSED = re.compile(r"^elapsed ([0-9.]+)s", re.MULTILINE)


def _committed_total(watcher, partitions) -> int:
    return sum(max(tp.offset, 0) for tp in watcher.committed(partitions, timeout=5))


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _job_cpu_s(helper_pid: int) -> float | None:
    """user + sys CPU seconds so far of the helper's child (the job), from /proc; None if unknown."""
    try:
        children = Path(f"/proc/{helper_pid}/task/{helper_pid}/children").read_text().split()
        if not children:
            return None
        fields = Path(f"/proc/{children[0]}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (stat fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None


def run_pipeline(
    settings, prefix: str, total: int, partitions: int, work: Path, group: str
) -> dict[str, Any]:
    """One ``fraud-features`` stream job on the direct runner; wall/CPU/RSS + commit and CPU timeline."""
    from confluent_kafka import TopicPartition

    from bench.pipeline_throughput import RUN_TIMEOUT_S, _riskpipe, _summary_counts

    work.mkdir(parents=True)
    cmd = [
        *_riskpipe(),
        "run",
        "fraud-features",
        "--mode",
        "stream",
        "--source",
        "kafka",
        "--kafka_bootstrap",
        settings.bootstrap,
        "--kafka_ca",
        settings.ssl_ca_location or "",
        "--kafka_topic_prefix",
        prefix,
        "--kafka_group",
        group,
        "--idle-timeout",
        f"{IDLE_TIMEOUT_S:g}",
        "--warehouse",
        str(work / "wh.duckdb"),
        "--local_key_file",
        str(work / "keys.json"),
    ]
    topic = f"{prefix}{DATASET}"
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    watcher = _consumer(settings, group)  # never joins the group: only reads its committed offsets
    timeline: list[tuple[float, int, float | None]] = []  # (s since launch, committed, job CPU s)
    out_path = work / "helper.json"
    try:
        with open(out_path, "w", encoding="utf-8") as out:
            started = time.perf_counter()
            helper = subprocess.Popen(
                [sys.executable, "-m", "bench.pipeline_throughput", "--child", "--", *cmd],
                cwd=common.REPO_DIR,
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
            try:
                while helper.poll() is None:
                    if time.perf_counter() - started > RUN_TIMEOUT_S + 30:
                        raise RuntimeError("pipeline run timed out")
                    committed = _committed_total(watcher, tps)
                    job_cpu = _job_cpu_s(helper.pid)
                    timeline.append((round(time.perf_counter() - started, 3), committed, job_cpu))
                    time.sleep(COMMIT_POLL_S)
            finally:
                if helper.poll() is None:
                    helper.kill()
                helper.wait()
        timeline.append((round(time.perf_counter() - started, 3), _committed_total(watcher, tps), None))
    finally:
        watcher.close()
    raw = json.loads(out_path.read_text(encoding="utf-8"))
    if raw["returncode"] != 0:
        raise RuntimeError(f"job failed (exit {raw['returncode']}): {raw['stderr_tail']}")
    counts = _summary_counts(raw["stdout"])[DATASET]
    elapsed = _ELAPSED.search(raw["stdout"])
    job_s = float(elapsed.group(1)) if elapsed else None
    startup = raw["wall_s"] - job_s if job_s is not None else None
    consumed = counts["parsed"] + counts["quarantined"]
    wall, cpu = raw["wall_s"], raw["user_s"] + raw["sys_s"]
    first = next((t for t, c, _ in timeline if c > 0), None)
    drained = next((t for t, c, _ in timeline if c >= total), None)
    cpu_at_drain = next((u for _, c, u in timeline if c >= total and u is not None), None)
    # keep the stored timeline small: the samples where the committed count changed, and the last
    changes = [
        sample
        for i, sample in enumerate(timeline)
        if i == 0 or sample[1] != timeline[i - 1][1] or i == len(timeline) - 1
    ]
    return {
        "wall_s": wall,
        "job_s": job_s,
        "startup_s": startup,
        "cpu_s": cpu,
        "cpu_utilisation": cpu / wall,
        "peak_rss_mib": raw["maxrss_kib"] / 1024,
        "messages_consumed": consumed,
        "counts": counts,
        "events_per_s": consumed / (wall - IDLE_TIMEOUT_S),
        "events_per_s_wall": consumed / wall,
        "events_per_cpu_s": consumed / cpu,
        "first_commit_s": first,
        "drained_s": drained,
        "tail_after_drain_s": wall - drained if drained is not None else None,
        "events_per_s_to_drain": consumed / drained if drained else None,
        "events_per_s_job_start_to_drain": consumed / (drained - startup)
        if drained is not None and startup is not None and drained > startup
        else None,
        "cpu_s_until_drained": cpu_at_drain,
        "cpu_s_after_drained": cpu - cpu_at_drain if cpu_at_drain is not None else None,
        "commit_timeline": changes,
    }


# ---------------------------------------------------------------------------------- latency


def latency_run(settings, topic_prefix: str, messages: list, rate: float, partitions: int) -> dict[str, Any]:
    """Produce ``messages`` at ``rate`` from a thread while this thread consumes (+ parses) them."""
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TopicPartition

    from runners.produce import produce

    topic = f"{topic_prefix}{DATASET}"
    fn = _parse_fn()
    consumer = _consumer(settings, f"bench-latency-{uuid.uuid4().hex[:8]}")
    latencies: list[float] = []
    produced_ts: list[int] = []
    timestamp_types: set[int] = set()
    errors: list[str] = []
    producer_s: list[float] = []

    def producer() -> None:
        t0 = time.perf_counter()
        try:
            produce(settings, messages, topic_prefix, rate)
        except Exception as err:  # noqa: BLE001 - reported by the consumer side
            errors.append(f"{type(err).__name__}: {err}")
        producer_s.append(time.perf_counter() - t0)

    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        for p in range(partitions):  # connection and TLS handshake done before the clock matters
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        consumer.poll(0.5)
        thread = threading.Thread(target=producer, daemon=True)
        thread.start()
        deadline = time.monotonic() + len(messages) / rate + 60
        while len(latencies) < len(messages) and time.monotonic() < deadline and not errors:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise RuntimeError(f"Kafka error: {message.error().name()}")
            _parse_one(fn, _source_record(message, topic))
            now_ms = time.time() * 1000
            ts_type, ts_ms = message.timestamp()
            timestamp_types.add(ts_type)
            produced_ts.append(ts_ms)
            latencies.append(now_ms - ts_ms)
        thread.join(timeout=60)
    finally:
        consumer.close()
    if errors:
        raise RuntimeError(f"producer failed: {errors[0]}")
    if len(latencies) < len(messages):
        raise RuntimeError(f"latency run: consumed {len(latencies)} of {len(messages)}")
    start = min(produced_ts)
    steady = [lat for lat, ts in zip(latencies, produced_ts, strict=True) if ts >= start + 1000]
    span_s = (max(produced_ts) - start) / 1000
    return {
        "messages": len(latencies),
        "timestamp_type": "CreateTime"
        if timestamp_types == {TIMESTAMP_CREATE_TIME}
        else sorted(timestamp_types),
        "target_rate": rate,
        "achieved_rate": len(latencies) / span_s if span_s else None,
        "producer_s": producer_s[0] if producer_s else None,
        "all": _latency_stats(latencies),
        "after_first_second": _latency_stats(steady) if steady else None,
    }


def _latency_stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(common.percentile(values, 50), 2),
        "p90_ms": round(common.percentile(values, 90), 2),
        "p99_ms": round(common.percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
        "min_ms": round(min(values), 2),
    }


# ---------------------------------------------------------------------------------- the run


def _medians(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, float | None]:
    out = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = common.median(values) if values else None
    return out


def _delete_topics(settings, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.client_config())  # kept referenced until the futures resolve
    try:
        futures = admin.delete_topics(topics, operation_timeout=10)
        for future in futures.values():
            future.result(timeout=15)
    except Exception as err:  # noqa: BLE001 - tidying the throwaway broker is best effort
        common.log(f"kafka: could not delete the benchmark topics: {err}")


def run(
    quick: bool = False,
    events: int | None = None,
    repeats: int = REPEATS,
    pipeline_repeats: int = PIPELINE_REPEATS,
    rate: float = LATENCY_RATE,
    seconds: float | None = None,
    bootstrap: str | None = None,
    ca: str | None = None,
) -> dict[str, Any]:
    from runners.produce import ensure_topics, produce
    from runners.synthetic import GeneratorRates, iter_messages

    events = events or (QUICK_EVENTS if quick else EVENTS)
    seconds = seconds or (2.0 if quick else LATENCY_SECONDS)
    settings = settings_from(bootstrap, ca)
    started = time.perf_counter()
    machine = common.machine_info()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    partitions = 3
    topic = f"{prefix}{DATASET}"
    messages = [
        (m.dataset, m.payload, m.schema_version, m.key)
        for m in iter_messages(events, SEED, GeneratorRates())
        if m.dataset == DATASET
    ]
    latency_n = int(rate * seconds)
    if latency_n > len(messages):
        raise SystemExit(f"--rate × --seconds = {latency_n} exceeds the {len(messages)} generated messages")
    latency_prefixes = [f"{prefix}lat{i}." for i in range(repeats)]
    all_topics = [topic, *(f"{p}{DATASET}" for p in latency_prefixes)]
    ensure_topics(settings, all_topics, partitions=partitions)
    t0 = time.perf_counter()
    total = produce(settings, messages, prefix)[topic]
    produce_s = time.perf_counter() - t0
    common.log(f"kafka: produced {total} messages to {topic} in {produce_s:.1f} s (not timed)")
    try:
        # 1. plain loop, variants round-robin
        plain: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for rep in range(repeats):
            kept: list = []
            plain["consume"].append(consume_all(settings, topic, partitions, total, parse=False, keep=kept))
            plain["consume+parse"].append(consume_all(settings, topic, partitions, total, parse=True))
            plain["parse"].append(parse_only(kept))
            common.log(
                f"kafka: plain loop rep {rep + 1}/{repeats}: "
                + ", ".join(f"{v} {plain[v][-1]['events_per_cpu_s']:,.0f}/CPU-s" for v in VARIANTS)
            )
        # 2. pipeline on the direct runner
        pipeline_runs = []
        with tempfile.TemporaryDirectory(prefix="riskpipe-bench-kafka-") as tmp:
            for rep in range(pipeline_repeats):
                result = run_pipeline(
                    settings, prefix, total, partitions, Path(tmp) / f"run-{rep}", f"bench-{prefix}{rep}"
                )
                pipeline_runs.append(result)
                common.log(
                    f"kafka: pipeline rep {rep + 1}/{pipeline_repeats}: wall {result['wall_s']:.2f} s, "
                    f"drained at {result['drained_s']} s, {result['events_per_s']:,.0f} events/s "
                    f"(wall − idle), {result['events_per_cpu_s']:,.0f}/CPU-s, RSS {result['peak_rss_mib']:.0f} MiB, "
                    f"load {os.getloadavg()[0]:.2f}"
                )
        # 4. produce → consumed latency at a fixed rate
        latency_runs = []
        for rep, lat_prefix in enumerate(latency_prefixes):
            result = latency_run(settings, lat_prefix, messages[:latency_n], rate, partitions)
            latency_runs.append(result)
            common.log(
                f"kafka: latency rep {rep + 1}/{repeats}: p50 {result['all']['p50_ms']} ms, "
                f"p99 {result['all']['p99_ms']} ms, max {result['all']['max_ms']} ms "
                f"at {result['achieved_rate']:,.0f} msg/s"
            )
    finally:
        _delete_topics(settings, all_topics)

    plain_keys = ["wall_s", "cpu_s", "events_per_s", "events_per_cpu_s", "first_message_s"]
    pipe_keys = [
        "wall_s",
        "job_s",
        "startup_s",
        "cpu_s",
        "cpu_utilisation",
        "peak_rss_mib",
        "events_per_s",
        "events_per_s_wall",
        "events_per_cpu_s",
        "first_commit_s",
        "drained_s",
        "tail_after_drain_s",
        "events_per_s_to_drain",
        "events_per_s_job_start_to_drain",
        "cpu_s_until_drained",
        "cpu_s_after_drained",
    ]
    lat_keys = ["p50_ms", "p90_ms", "p99_ms", "max_ms"]
    doc = {
        "benchmark": "kafka_throughput",
        "date": common.utc_now(),
        "machine": machine,
        "params": {
            "events": events,
            "seed": SEED,
            "quick": quick,
            "repeats_plain_and_latency": repeats,
            "repeats_pipeline": pipeline_repeats,
            "partitions": partitions,
            "idle_timeout_s": IDLE_TIMEOUT_S,
            "latency_rate_msg_per_s": rate,
            "latency_seconds": seconds,
            "broker": "local stack: Apache Kafka (KRaft, single node), TLS listener on loopback",
            "kafka_ca": _rel(settings.ssl_ca_location),
            "pipeline_command": (
                "riskpipe run fraud-features --mode stream --source kafka --kafka_bootstrap BOOTSTRAP "
                f"--kafka_ca {_rel(settings.ssl_ca_location)} --kafka_topic_prefix PREFIX "
                f"--kafka_group GROUP --idle-timeout {IDLE_TIMEOUT_S:g} --warehouse TMP/wh.duckdb "
                "--local_key_file TMP/keys.json"
            ),
        },
        "data": {"topic": f"PREFIX{DATASET}", "messages": total, "produce_s_not_timed": round(produce_s, 2)},
        "plain": {
            "runs": plain,
            "median": {v: _medians(plain[v], plain_keys) for v in VARIANTS},
        },
        "pipeline": {"runs": pipeline_runs, "median": _medians(pipeline_runs, pipe_keys)},
        "flink": FLINK_NA,
        "latency": {
            "runs": latency_runs,
            "median_of_runs": {
                "all": {k: common.median([r["all"][k] for r in latency_runs]) for k in lat_keys},
                "after_first_second": {
                    k: common.median(
                        [r["after_first_second"][k] for r in latency_runs if r["after_first_second"]]
                    )
                    for k in lat_keys
                }
                if all(r["after_first_second"] for r in latency_runs)
                else None,
            },
            "achieved_rate_median": common.median([r["achieved_rate"] for r in latency_runs]),
        },
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    doc["runtime_s"] = round(time.perf_counter() - started, 1)
    return doc


# ---------------------------------------------------------------------------------- report


def markdown(doc: dict[str, Any]) -> str:
    f = common.fmt_num
    total = doc["data"]["messages"]
    pm = doc["plain"]["median"]
    pl = doc["pipeline"]["median"]
    idle = doc["params"]["idle_timeout_s"]
    rows = [
        {
            "path": "plain loop: `Consumer.poll` + `SourceRecord` (no parse)",
            "wall": f(pm["consume"]["wall_s"], 2),
            "eps": f(pm["consume"]["events_per_s"]),
            "cpu": f(pm["consume"]["cpu_s"], 2),
            "epc": f(pm["consume"]["events_per_cpu_s"]),
            "rss": "—",
        },
        {
            "path": "**plain loop + `_ParseRecordFn` (Python ceiling)**",
            "wall": f(pm["consume+parse"]["wall_s"], 2),
            "eps": f(pm["consume+parse"]["events_per_s"]),
            "cpu": f(pm["consume+parse"]["cpu_s"], 2),
            "epc": f(pm["consume+parse"]["events_per_cpu_s"]),
            "rss": "—",
        },
        {
            "path": "`_ParseRecordFn` alone (records in memory)",
            "wall": f(pm["parse"]["wall_s"], 2),
            "eps": f(pm["parse"]["events_per_s"]),
            "cpu": f(pm["parse"]["cpu_s"], 2),
            "epc": f(pm["parse"]["events_per_cpu_s"]),
            "rss": "—",
        },
        {
            "path": "**pipeline `fraud-features`, direct runner** (wall − idle timeout)",
            "wall": f"{f(pl['wall_s'], 2)} ({f(pl['wall_s'] - idle, 2)})",
            "eps": f(pl["events_per_s"]),
            "cpu": f(pl["cpu_s"], 2),
            "epc": f(pl["events_per_cpu_s"]),
            "rss": f(pl["peak_rss_mib"]),
        },
        {
            "path": "pipeline, Flink runner",
            "wall": "n/a",
            "eps": "n/a",
            "cpu": "n/a",
            "epc": "n/a",
            "rss": "n/a",
        },
    ]
    table = common.markdown_table(
        rows,
        [
            ("path", f"path ({f(total)} messages)"),
            ("wall", "wall s"),
            ("eps", "events/s (wall)"),
            ("cpu", "CPU s"),
            ("epc", "events per CPU-s"),
            ("rss", "peak RSS MiB"),
        ],
    )
    timeline = common.markdown_table(
        [
            {
                "startup": f(pl["startup_s"], 2),
                "first": f(pl["first_commit_s"], 2),
                "drained": f(pl["drained_s"], 2),
                "wall": f(pl["wall_s"], 2),
                "tail": f(pl["tail_after_drain_s"], 2),
                "cpu_before": f(pl["cpu_s_until_drained"], 2),
                "cpu_after": f(pl["cpu_s_after_drained"], 2),
                "to_drain": f(pl["events_per_s_to_drain"]),
                "job_to_drain": f(pl["events_per_s_job_start_to_drain"]),
                "util": f"{100 * pl['cpu_utilisation']:.0f}%",
            }
        ],
        [
            ("startup", "start-up s (wall − CLI timer)"),
            ("first", "first commit at s"),
            ("drained", "all committed at s"),
            ("wall", "exit at s"),
            ("tail", "tail after drain s"),
            ("cpu_before", "job CPU s until drained"),
            ("cpu_after", "job CPU s after drained"),
            ("to_drain", "events/s launch→drained"),
            ("job_to_drain", "events/s CLI start→drained"),
            ("util", "CPU/wall"),
        ],
    )
    lat = doc["latency"]["median_of_runs"]
    lat_rows = [{"set": "all messages", **{k: f(v, 1) for k, v in lat["all"].items()}}]
    if lat["after_first_second"]:
        lat_rows.append(
            {
                "set": "produced after the first second",
                **{k: f(v, 1) for k, v in lat["after_first_second"].items()},
            }
        )
    latency = common.markdown_table(
        lat_rows,
        [
            ("set", "messages"),
            ("p50_ms", "p50 ms"),
            ("p90_ms", "p90 ms"),
            ("p99_ms", "p99 ms"),
            ("max_ms", "max ms"),
        ],
    )
    ceiling = pm["consume+parse"]["events_per_cpu_s"]
    lines = [
        table,
        "",
        f"- pipeline per CPU-s = **{pl['events_per_cpu_s'] / ceiling:.1%} of the plain ceiling** "
        f"(×{ceiling / pl['events_per_cpu_s']:.1f} the CPU per event, start-up included); parse alone is "
        f"{pm['parse']['cpu_s'] / pm['consume+parse']['cpu_s']:.0%} of the ceiling loop's CPU",
        f"- Flink: {doc['flink']}",
        "",
        "Pipeline timeline (medians; the job's committed offsets and its CPU time (`/proc`) sampled every "
        f"{COMMIT_POLL_S:g} s from the benchmark process; the source commits after each finalized bundle, "
        "so “all committed” is when the last message had been read and handed downstream):",
        "",
        timeline,
        "",
        f"Produce → consumed (+ parsed) latency, plain consumer, {f(doc['params']['latency_rate_msg_per_s'])} "
        f"msg/s for {doc['params']['latency_seconds']:g} s (achieved {f(doc['latency']['achieved_rate_median'])} "
        f"msg/s), median of {len(doc['latency']['runs'])} runs:",
        "",
        latency,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS} events, 2 s of latency")
    parser.add_argument("--events", type=int, default=None, help=f"payment events (default {EVENTS})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="plain loop and latency repetitions")
    parser.add_argument("--pipeline-repeats", type=int, default=PIPELINE_REPEATS)
    parser.add_argument("--rate", type=float, default=LATENCY_RATE, help="latency run: messages per second")
    parser.add_argument("--seconds", type=float, default=None, help="latency run: seconds of producing")
    parser.add_argument("--kafka_bootstrap", default=None, help="default: .stack/endpoints.json")
    parser.add_argument("--kafka_ca", default=None)
    parser.add_argument("--out", default=None, help="result JSON (default bench/results/kafka-<time>.json)")
    args = parser.parse_args(argv)
    doc = run(
        quick=args.quick,
        events=args.events,
        repeats=args.repeats,
        pipeline_repeats=args.pipeline_repeats,
        rate=args.rate,
        seconds=args.seconds,
        bootstrap=args.kafka_bootstrap,
        ca=args.kafka_ca,
    )
    path = common.write_json(Path(args.out) if args.out else common.result_path("kafka"), doc)
    print(markdown(doc))
    common.log(f"kafka: wrote {path} ({doc['runtime_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
