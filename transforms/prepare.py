"""``PrepareDataset``: the shared front half of every job, for one dataset.

parse + schema evolution → event time → dedup → lateness routing. Every job
(curate, fraud features, finance, backfill, all) starts with exactly this
composite, in batch and in stream, so the rules in it are enforced once.
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam

from transforms.dedup import DEFAULT_TTL, DeduplicateEvents
from transforms.eventtime import AssignEventTime, RouteLateData
from transforms.parse import ParseRecords
from transforms.records import check_dataset


class PrepareDataset(beam.PTransform):
    """SourceRecords of one dataset → ``{"clean", "quarantine", "too_late"}`` PCollections.

    ``clean``: parsed, normalised, one record per natural key, within the
    allowed lateness, timestamped with event time. ``quarantine``: records
    that failed parsing, with reasons. ``too_late``: unique records beyond the
    allowed lateness (stream only), for the backfill job to reconcile.
    """

    def __init__(
        self,
        dataset: str,
        allowed_lateness: dt.timedelta | None = None,
        dedup_ttl: dt.timedelta = DEFAULT_TTL,
        lateness_shards: int = 16,
    ):
        super().__init__()
        self._dataset = check_dataset(dataset)
        self._allowed = allowed_lateness
        self._ttl = dedup_ttl
        self._shards = lateness_shards
        if allowed_lateness is not None and dedup_ttl <= allowed_lateness:
            raise ValueError(f"dedup_ttl ({dedup_ttl}) must exceed allowed_lateness ({allowed_lateness})")

    def expand(self, pcoll):
        parsed = pcoll | "ParseRecords" >> ParseRecords(self._dataset)
        routed = (
            parsed.parsed
            | "AssignEventTime" >> AssignEventTime()
            | "DeduplicateEvents" >> DeduplicateEvents(self._dataset, ttl=self._ttl)
            | "RouteLateData" >> RouteLateData(self._dataset, self._allowed, shards=self._shards)
        )
        return {"clean": routed.on_time, "quarantine": parsed.quarantine, "too_late": routed.too_late}
