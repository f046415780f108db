"""Turn a finished pipeline's counters into the summary people read after a run."""

from __future__ import annotations

import sys
from collections import defaultdict

from apache_beam.metrics.metric import MetricsFilter


def counters(result) -> dict[str, int]:
    """All riskpipe counters of a finished pipeline as ``{"namespace/name": value}``."""
    out: dict[str, int] = defaultdict(int)
    # The portable direct runner folds per-bundle metrics recursively; a long stream run
    # has thousands of bundles and needs a deeper stack than Python's default.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 200_000))
    try:
        query = result.metrics().query(MetricsFilter())
    finally:
        sys.setrecursionlimit(limit)
    for counter in query["counters"]:
        namespace = counter.key.metric.namespace
        if not namespace.startswith("riskpipe"):
            continue
        value = counter.committed if counter.committed is not None else counter.attempted
        out[f"{namespace}/{counter.key.metric.name}"] += int(value or 0)
    return dict(out)


def dataset_summary(values: dict[str, int], datasets) -> list[dict]:
    """Rows per dataset: parsed, quarantined by reason, duplicates removed, too late."""
    rows = []
    for dataset in datasets:
        reasons = {
            key.rsplit(".", 1)[-1]: v
            for key, v in values.items()
            if key.startswith(f"riskpipe.parse/{dataset}.quarantined.")
        }
        rows.append(
            {
                "dataset": dataset,
                "read": values.get(f"riskpipe.files/{dataset}.records_read", 0)
                + values.get(f"riskpipe.kafka/{dataset}.records_read", 0)
                + values.get(f"riskpipe.raw/{dataset}.records_replayed", 0),
                "parsed": values.get(f"riskpipe.parse/{dataset}.parsed", 0),
                "quarantined": values.get(f"riskpipe.parse/{dataset}.quarantined", 0),
                "quarantine_reasons": dict(sorted(reasons.items())),
                "duplicates_removed": values.get(f"riskpipe.dedup/{dataset}.duplicates_dropped", 0),
                "too_late": values.get(f"riskpipe.lateness/{dataset}.too_late", 0),
                "unclassified_dropped": values.get(f"riskpipe.protect/{dataset}.unclassified_dropped", 0),
            }
        )
    return rows


def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
    return "\n".join(lines)
