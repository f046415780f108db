"""``land``: every source record as received into the raw zone (``--raw``), sealed per data subject."""

from __future__ import annotations

from pipelines import graph
from runners.options import RawOptions
from schemas import DATASETS


def build(p, options) -> dict:
    sources = graph.read_sources(p, options, DATASETS)
    graph.land_raw(sources, options)
    return sources


def run(argv=None):
    options = graph.pipeline_options(argv)
    if not options.view_as(RawOptions).raw:
        raise ValueError("--raw is required: the raw zone root (a local directory or s3://bucket/prefix)")
    graph.preflight(options, DATASETS, needs_sink=False)
    return graph.run_pipeline(options, build)
