"""``DeduplicateEvents``: one record per natural key, the same winner in stream and batch.

Retries upstream re-send a record with the same natural key (payments:
``event_id``; chargebacks: ``charge_id`` + ``received_at``) but not always the
same bytes. Guarantees:

* exactly one record per key is emitted while the key is remembered;
* the winner is the copy with the smallest content digest among the copies
  that arrived before the watermark passed the key's event time. Retries carry
  the same business content by contract, so in practice every copy is equal
  apart from transport details; choosing by content (not arrival order) makes
  stream and batch pick the same record even when they are not. Copies whose
  content differs are counted as ``conflicting_duplicates``;
* the winner is emitted when the watermark passes its event time (so a
  stream adds at most the source's out-of-orderness bound of latency), or at
  the end of input in batch;
* keys are remembered for ``ttl`` of event time after the event time (default
  48 h, longer than the 24 h allowed lateness); an event-time timer clears the
  state, so state does not grow without bound. A copy arriving after that is
  treated as new — which is why ``ttl`` must exceed the allowed lateness.

State cost per live key: the winning record until it is emitted (~0.5–1 KB
pickled), then a boolean and two timers (~100 bytes in RocksDB) until the TTL
expires. At 120K events/s and 48 h TTL that is ~2e10 keys × ~100 B ≈ 2 TB
of RocksDB state across the cluster: size the TTL against the lateness you
actually need.
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
from apache_beam.coders import BooleanCoder, PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.records import EVENT_US_KEY, KeyedRecord, check_dataset, content_digest, natural_key
from transforms.timeutil import timer_micros

DEFAULT_TTL = dt.timedelta(hours=48)


class _DeduplicateFn(beam.DoFn):
    CANDIDATE = ReadModifyWriteStateSpec("candidate", PickleCoder())
    EMITTED = ReadModifyWriteStateSpec("emitted", BooleanCoder())
    EMIT = TimerSpec("emit", TimeDomain.WATERMARK)
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, dataset: str, ttl_us: int):
        self._ttl_us = ttl_us
        self._duplicates = Metrics.counter("riskpipe.dedup", f"{dataset}.duplicates_dropped")
        self._conflicts = Metrics.counter("riskpipe.dedup", f"{dataset}.conflicting_duplicates")
        self._unique = Metrics.counter("riskpipe.dedup", f"{dataset}.unique")

    def process(
        self,
        element,
        candidate=beam.DoFn.StateParam(CANDIDATE),
        emitted=beam.DoFn.StateParam(EMITTED),
        emit_timer=beam.DoFn.TimerParam(EMIT),
        expire_timer=beam.DoFn.TimerParam(EXPIRE),
    ):
        _, record = element
        if emitted.read():
            self._duplicates.inc()
            return
        digest = content_digest(record)
        current = candidate.read()
        if current is None:
            candidate.write((digest, record))
            event_us = record[EVENT_US_KEY]
            emit_timer.set(Timestamp(micros=timer_micros(event_us)))
            expire_timer.set(Timestamp(micros=timer_micros(event_us + self._ttl_us)))
            return
        self._duplicates.inc()
        if digest != current[0]:
            self._conflicts.inc()
            if digest < current[0]:
                candidate.write((digest, record))

    @on_timer(EMIT)
    def _emit(self, candidate=beam.DoFn.StateParam(CANDIDATE), emitted=beam.DoFn.StateParam(EMITTED)):
        yield from self._flush(candidate, emitted)

    @on_timer(EXPIRE)
    def _expire(self, candidate=beam.DoFn.StateParam(CANDIDATE), emitted=beam.DoFn.StateParam(EMITTED)):
        # Runners may fire both timers in one watermark step in either order
        # (the batch runner does): flush a pending winner before forgetting the key.
        yield from self._flush(candidate, emitted)
        emitted.clear()

    def _flush(self, candidate, emitted):
        current = candidate.read()
        if current is None:
            return
        candidate.clear()
        emitted.write(True)
        self._unique.inc()
        # output timestamp = the firing timer's time, at or after the record's event time
        yield current[1]


class _PickWinnerFn(beam.DoFn):
    def __init__(self, dataset: str):
        self._duplicates = Metrics.counter("riskpipe.dedup", f"{dataset}.duplicates_dropped")
        self._conflicts = Metrics.counter("riskpipe.dedup", f"{dataset}.conflicting_duplicates")
        self._unique = Metrics.counter("riskpipe.dedup", f"{dataset}.unique")

    def process(self, element):
        _, copies = element
        digests = sorted(((content_digest(r), i, r) for i, r in enumerate(copies)), key=lambda d: d[:2])
        self._unique.inc()
        if len(digests) > 1:
            self._duplicates.inc(len(digests) - 1)
            self._conflicts.inc(len({d[0] for d in digests}) - 1)
        winner = digests[0][2]
        yield beam.window.TimestampedValue(winner, Timestamp(micros=winner[EVENT_US_KEY]))


class DeduplicateEvents(beam.PTransform):
    """Keep one record per natural key of ``dataset`` (see the module docstring)."""

    def __init__(self, dataset: str, ttl: dt.timedelta = DEFAULT_TTL):
        super().__init__()
        self._dataset = check_dataset(dataset)
        if ttl <= dt.timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        self._ttl_us = int(ttl.total_seconds() * 1_000_000)

    def expand(self, pcoll):
        dataset = self._dataset
        keyed = pcoll | "KeyByNaturalKey" >> beam.Map(lambda r: (natural_key(dataset, r), r))
        if pcoll.is_bounded:
            # Bounded input: every copy is known before the watermark moves, so the
            # stateful rule reduces to "smallest digest per key" — one GroupByKey,
            # far cheaper than per-key timers on a batch runner. Same winner.
            return (
                keyed
                | "GroupCopies" >> beam.GroupByKey()
                | "PickWinner" >> beam.ParDo(_PickWinnerFn(dataset))
            )
        return keyed | "Deduplicate" >> beam.ParDo(_DeduplicateFn(dataset, self._ttl_us)).with_input_types(
            KeyedRecord
        )
