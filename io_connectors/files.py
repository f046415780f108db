"""File sources: a dataset folder of JSON Lines or Avro container files.

Batch reads every file once. Stream mode watches the folder with a
splittable DoFn (``_WatchFilesFn``): files are consumed in name order (producers
name them so that new files sort last, e.g. ``part-00042.jsonl``), the
restriction's position is the index of the next file (so a restore resumes
exactly), and the watermark is the newest event time read minus the bounded
out-of-orderness. With ``idle_timeout`` the source finishes once no new file
appeared for that long, which releases the watermark and drains the pipeline;
``request_stop()`` (Ctrl-C in the CLI) does the same at once.

Each line or Avro record becomes a ``SourceRecord`` with
``file:<dataset>/<name>`` as source and the line/record number as position,
so quarantined records can be traced back and raw objects get deterministic
names.

Direct runner caveat: Beam's Python direct runner holds a splittable DoFn's
output watermark at -inf until the restriction is done, so in stream mode on
that runner event-time results (dedup, features) appear when the source
drains. Flink honours the estimator; watermark-driven behaviour is tested
with TestStream.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time

import apache_beam as beam
import fastavro
import orjson
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.records import EVENT_TIME_FIELD, SourceRecord
from transforms.timeutil import format_micros, now_micros, parse_rfc3339_micros

_LOG = logging.getLogger(__name__)
_STOP = threading.Event()
_END = 2**62
# when each watched pattern last saw a new file; process-wide because a runner may
# re-create the DoFn between resumptions of one restriction
_LAST_NEW_FILE: dict[str, float] = {}


def request_stop() -> None:
    """Ask every running file watcher in this process to finish (drain) at its next poll."""
    _STOP.set()


def reset_stop() -> None:
    _STOP.clear()


def stop_requested() -> bool:
    return _STOP.is_set()


_AVRO_VERSION = re.compile(r"-v(\d+)\.avro$")


def dataset_pattern(input_dir: str, dataset: str) -> str:
    return f"{input_dir.rstrip('/')}/{dataset}/*"


def _file_records(dataset: str, path: str, handle, modified: float | None = None):
    """The records of one open file as SourceRecords (bytes per line; dicts per Avro record).

    The ingest time of a file's records is the file's modification time (when it
    landed), so replays of the same files carry the same ingest time.
    """
    name = path.rsplit("/", 1)[-1]
    source = f"file:{dataset}/{name}"
    ingested_at = format_micros(int(modified * 1_000_000) if modified else now_micros())
    if name.endswith(".avro"):
        match = _AVRO_VERSION.search(name)
        version = int(match.group(1)) if match else None
        for number, record in enumerate(fastavro.reader(handle), start=1):
            yield SourceRecord(record, source, str(number), version, ingested_at, "json")
    else:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield SourceRecord(line, source, str(number), None, ingested_at, "json")


def event_micros(dataset: str, record: SourceRecord) -> int | None:
    """Event time of a record for the watermark, or None if it cannot be read (parsing decides later)."""
    payload = record.payload
    try:
        obj = payload if isinstance(payload, dict) else orjson.loads(payload)
        return parse_rfc3339_micros(obj[EVENT_TIME_FIELD[dataset]])
    except Exception:  # noqa: BLE001 - malformed input is ParseRecords' business, not the watermark's
        return None


class _ReadFileRecordsFn(beam.DoFn):
    """One readable file → its records as SourceRecords."""

    def __init__(self, dataset: str):
        self._dataset = dataset
        self._files = Metrics.counter("riskpipe.files", f"{dataset}.files_read")
        self._records = Metrics.counter("riskpipe.files", f"{dataset}.records_read")

    def process(self, readable_file):
        self._files.inc()
        count = 0
        with readable_file.open(compression_type=beam.io.filesystem.CompressionTypes.UNCOMPRESSED) as handle:
            metadata = readable_file.metadata
            modified = getattr(metadata, "last_updated_in_seconds", None)
            for record in _file_records(self._dataset, metadata.path, handle, modified):
                self._records.inc()
                count += 1
                yield record
        _LOG.info("read %s/%s: %d records", self._dataset, metadata.path.rsplit("/", 1)[-1], count)


class _FileIndexRestrictions(RestrictionProvider):
    """Restriction = [index of the next file to read, end): one claim per file."""

    def initial_restriction(self, element):
        return OffsetRange(0, _END)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction  # one watcher per dataset; files are cheap to list

    def truncate(self, element, restriction):
        return None  # on drain, stop watching


class _WatchFilesFn(beam.DoFn):
    """Unbounded: read each new file of a dataset folder once, in name order, with a data watermark."""

    def __init__(
        self, dataset: str, poll_interval: float, idle_timeout: float | None, out_of_orderness_us: int
    ):
        self._dataset = dataset
        self._poll = poll_interval
        self._idle = idle_timeout
        self._lag_us = out_of_orderness_us

    def setup(self):
        self._files = Metrics.counter("riskpipe.files", f"{self._dataset}.files_read")
        self._records = Metrics.counter("riskpipe.files", f"{self._dataset}.records_read")

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        pattern,
        tracker=beam.DoFn.RestrictionParam(_FileIndexRestrictions()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        found = sorted(
            (m.path, getattr(m, "last_updated_in_seconds", None))
            for m in FileSystems.match([pattern])[0].metadata_list
            if m.path.endswith((".jsonl", ".avro"))
        )
        paths = [path for path, _ in found]
        index = tracker.current_restriction().start
        while index < len(paths):
            if not tracker.try_claim(index):
                return
            _LAST_NEW_FILE[pattern] = time.monotonic()
            self._files.inc()
            newest = None
            with FileSystems.open(paths[index], compression_type="uncompressed") as handle:
                for record in _file_records(self._dataset, paths[index], handle, found[index][1]):
                    self._records.inc()
                    event_us = event_micros(self._dataset, record)
                    if event_us is not None:
                        newest = event_us if newest is None else max(newest, event_us)
                    # the element's timestamp only orders it; ParseRecords/AssignEventTime set the real one
                    stamp = event_us if event_us is not None else (newest or 0)
                    yield beam.window.TimestampedValue(record, Timestamp(micros=stamp))
            _LOG.info("read %s (%s): new file", paths[index].rsplit("/", 1)[-1], self._dataset)
            if newest is not None:
                candidate = Timestamp(micros=newest - self._lag_us)
                current = watermark.current_watermark()
                if current is None or candidate > current:
                    watermark.set_watermark(candidate)
            index += 1
        idle_for = time.monotonic() - _LAST_NEW_FILE.setdefault(pattern, time.monotonic())
        if _STOP.is_set() or (self._idle is not None and idle_for >= self._idle):
            tracker.try_claim(_END - 1)  # finish: releases the watermark, the pipeline drains
            return
        tracker.defer_remainder(Duration(seconds=self._poll))


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
            lag_us = int(self._out_of_orderness.total_seconds() * 1_000_000)
            return (
                pbegin
                | "Pattern" >> beam.Create([self._pattern])
                | "WatchFiles"
                >> beam.ParDo(_WatchFilesFn(self._dataset, self._poll_interval, self._idle_timeout, lag_us))
            )
        matches = pbegin | "MatchFiles" >> fileio.MatchFiles(self._pattern, empty_match_treatment="ALLOW")
        return (
            matches
            | "OnlyDataFiles" >> beam.Filter(lambda m: m.path.endswith((".jsonl", ".avro")))
            | "ReadMatches" >> fileio.ReadMatches()
            | "ReadRecords" >> beam.ParDo(_ReadFileRecordsFn(self._dataset))
        )
