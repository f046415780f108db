"""Event-time policy: which field is the event time, and what "too late" means.

* ``AssignEventTime`` stamps each record with its dataset's event time
  (``created_at`` / ``received_at`` / ``updated_at``, already UTC).
* ``RouteLateData`` splits records whose event time is further behind the
  watermark than the dataset's allowed lateness into a ``too_late`` output.
  Nothing is dropped: the backfill job reconciles ``too_late`` records.

Python DoFns cannot read the input watermark directly, so ``RouteLateData``
learns it the way a timer can: per shard it keeps an event-time timer at the
newest event time it has seen; when the timer fires, the watermark has passed
that time, which becomes the shard's known watermark. The known watermark is a
lower bound of the real one, so the rule errs on the side of accepting: a
record is never marked too late while it is still within its allowed lateness.
In batch the watermark only advances at the end of input, so — as in Beam's own
windowing — nothing is too late in batch, and backfills include everything;
for bounded input the transform expands to a pass-through that says so.

Everything downstream runs in the global window with keyed state, so the
runner never drops late data on its own: lateness is riskpipe's decision,
made here, counted and routed.
"""

from __future__ import annotations

import datetime as dt
import zlib

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.records import EVENT_US_KEY, check_dataset, natural_key
from transforms.timeutil import timer_micros

TOO_LATE = "too_late"

#: allowed lateness per dataset (chargebacks: 24 h by contract). Dedup's TTL must exceed these.
DEFAULT_ALLOWED_LATENESS = {
    "payment_event": dt.timedelta(hours=24),
    "chargeback": dt.timedelta(hours=24),
    "kyc_profile": dt.timedelta(hours=24),
}


class AssignEventTime(beam.PTransform):
    """Stamp each parsed record with its event time (set by ``ParseRecords``)."""

    def expand(self, pcoll):
        return pcoll | "WithEventTime" >> beam.Map(
            lambda r: beam.window.TimestampedValue(r, Timestamp(micros=r[EVENT_US_KEY]))
        )


class _RouteLateFn(beam.DoFn):
    KNOWN_WM = ReadModifyWriteStateSpec("known_watermark_us", VarIntCoder())
    NEWEST = ReadModifyWriteStateSpec("newest_event_us", VarIntCoder())
    PROBE = TimerSpec("watermark_probe", TimeDomain.WATERMARK)

    def __init__(self, dataset: str, allowed_us: int):
        self._dataset = dataset
        self._allowed_us = allowed_us
        self._on_time = Metrics.counter("riskpipe.lateness", f"{dataset}.on_time")
        self._too_late = Metrics.counter("riskpipe.lateness", f"{dataset}.too_late")

    def process(
        self,
        element,
        known_wm=beam.DoFn.StateParam(KNOWN_WM),
        newest=beam.DoFn.StateParam(NEWEST),
        probe=beam.DoFn.TimerParam(PROBE),
    ):
        _, record = element
        event_us = record[EVENT_US_KEY]
        watermark_us = known_wm.read()
        if watermark_us is not None and event_us + self._allowed_us < watermark_us:
            self._too_late.inc()
            yield pvalue.TaggedOutput(TOO_LATE, record)
        else:
            self._on_time.inc()
            yield record
        newest_us = newest.read()
        if newest_us is None or event_us > newest_us:
            newest.write(event_us)
            probe.set(Timestamp(micros=timer_micros(event_us)))

    @on_timer(PROBE)
    def _on_probe(
        self,
        fired=beam.DoFn.TimestampParam,
        known_wm=beam.DoFn.StateParam(KNOWN_WM),
        newest=beam.DoFn.StateParam(NEWEST),
        probe=beam.DoFn.TimerParam(PROBE),
    ):
        fired_us = fired.micros
        current = known_wm.read()
        if current is None or fired_us > current:
            known_wm.write(fired_us)
        newest_us = newest.read()
        if newest_us is not None and timer_micros(newest_us) > fired_us:
            probe.set(Timestamp(micros=timer_micros(newest_us)))
        return []


class _AllOnTimeFn(beam.DoFn):
    def __init__(self, dataset: str):
        self._on_time = Metrics.counter("riskpipe.lateness", f"{dataset}.on_time")

    def process(self, record):
        self._on_time.inc()
        yield record


class RouteLateData(beam.PTransform):
    """Split records beyond the allowed lateness into ``too_late`` (never dropped).

    Input: records with event-time timestamps. Returns ``DoOutputsTuple`` with
    ``on_time`` and ``too_late``. ``shards`` spreads the watermark probes over
    that many keys (parallelism); each shard's knowledge of the watermark lags
    by at most the gap between its newest records.
    """

    def __init__(self, dataset: str, allowed_lateness: dt.timedelta | None = None, shards: int = 16):
        super().__init__()
        self._dataset = check_dataset(dataset)
        allowed = DEFAULT_ALLOWED_LATENESS[dataset] if allowed_lateness is None else allowed_lateness
        if allowed < dt.timedelta(0):
            raise ValueError(f"allowed_lateness must be >= 0, got {allowed}")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self._allowed_us = int(allowed.total_seconds() * 1_000_000)
        self._shards = shards

    def expand(self, pcoll):
        dataset, shards = self._dataset, self._shards
        if pcoll.is_bounded:
            # bounded input: the watermark only moves at the end, so nothing can be too late
            return pcoll | "RouteLate" >> beam.ParDo(_AllOnTimeFn(dataset)).with_outputs(
                TOO_LATE, main="on_time"
            )
        return (
            pcoll
            | "KeyByShard"
            >> beam.Map(lambda r: (zlib.crc32(natural_key(dataset, r).encode("utf-8")) % shards, r))
            | "RouteLate"
            >> beam.ParDo(_RouteLateFn(dataset, self._allowed_us))
            .with_input_types(tuple[int, dict])
            .with_outputs(TOO_LATE, main="on_time")
        )


class FilterEventTime(beam.PTransform):
    """Keep parsed records whose event time is in ``[start_us, end_us)`` (backfill ranges)."""

    def __init__(self, start_us: int, end_us: int):
        super().__init__()
        if end_us <= start_us:
            raise ValueError("the range end must be after its start")
        self._start, self._end = start_us, end_us

    def expand(self, pcoll):
        start, end = self._start, self._end
        return pcoll | "InRange" >> beam.Filter(lambda r: start <= r[EVENT_US_KEY] < end)


class KeepRowsInRange(beam.PTransform):
    """Keep rows whose canonical UTC text ``column`` is in ``[start, end)`` (text order = time order)."""

    def __init__(self, column: str, start: str, end: str):
        super().__init__()
        self._column, self._start, self._end = column, start, end

    def expand(self, pcoll):
        column, start, end = self._column, self._start, self._end
        return pcoll | "RowsInRange" >> beam.Filter(
            lambda r: r.get(column) is not None and start <= r[column] < end
        )
