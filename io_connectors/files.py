"""File sources: a dataset folder of JSON Lines or Avro container files.

Batch reads every file once; stream mode watches the folder and reads each new
file when it appears (Beam's continuous file matching). Each line or Avro
record becomes a ``SourceRecord`` with ``file:<dataset>/<name>`` as source and
the line/record number as position, so quarantined records can be traced back
and raw objects get deterministic names.
"""

from __future__ import annotations

import datetime as dt
import re

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from transforms.records import SourceRecord
from transforms.timeutil import format_micros, now_micros

_AVRO_VERSION = re.compile(r"-v(\d+)\.avro$")


def dataset_pattern(input_dir: str, dataset: str) -> str:
    return f"{input_dir.rstrip('/')}/{dataset}/*"


class _ReadFileRecordsFn(beam.DoFn):
    """One readable file → its records as SourceRecords (bytes per line; dicts per Avro record)."""

    def __init__(self, dataset: str):
        self._dataset = dataset
        self._files = Metrics.counter("riskpipe.files", f"{dataset}.files_read")
        self._records = Metrics.counter("riskpipe.files", f"{dataset}.records_read")

    def process(self, readable_file):
        path = readable_file.metadata.path
        name = path.rsplit("/", 1)[-1]
        source = f"file:{self._dataset}/{name}"
        ingested_at = format_micros(now_micros())
        self._files.inc()
        with readable_file.open(compression_type=beam.io.filesystem.CompressionTypes.UNCOMPRESSED) as handle:
            if name.endswith(".avro"):
                match = _AVRO_VERSION.search(name)
                version = int(match.group(1)) if match else None
                for number, record in enumerate(fastavro.reader(handle), start=1):
                    self._records.inc()
                    yield SourceRecord(record, source, str(number), version, ingested_at, "json")
            else:
                for number, line in enumerate(handle, start=1):
                    line = line.rstrip(b"\r\n")
                    if not line.strip():
                        continue
                    self._records.inc()
                    yield SourceRecord(line, source, str(number), None, ingested_at, "json")


class ReadDatasetFiles(beam.PTransform):
    """Read ``<input>/<dataset>/*.jsonl|*.avro`` once (batch) or as files appear (stream)."""

    def __init__(
        self,
        input_dir: str,
        dataset: str,
        *,
        stream: bool = False,
        poll_interval: float = 2.0,
        idle_timeout: float | None = None,
        out_of_orderness: dt.timedelta = dt.timedelta(seconds=30),
    ):
        super().__init__()
        if not input_dir:
            raise ValueError("input_dir is required")
        self._pattern = dataset_pattern(input_dir, dataset)
        self._dataset = dataset
        self._stream = stream
        self._poll_interval = poll_interval
        self._idle_timeout = idle_timeout
        self._out_of_orderness = out_of_orderness

    def expand(self, pbegin):
        if self._stream:
            raise NotImplementedError("stream mode on files")
        else:
            matches = pbegin | "MatchFiles" >> fileio.MatchFiles(self._pattern, empty_match_treatment="ALLOW")
        return (
            matches
            | "OnlyDataFiles" >> beam.Filter(lambda m: m.path.endswith((".jsonl", ".avro")))
            | "ReadMatches" >> fileio.ReadMatches()
            | "ReadRecords" >> beam.ParDo(_ReadFileRecordsFn(self._dataset))
        )
