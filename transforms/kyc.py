"""``LatestKycProfile``: the newest version of each user's KYC profile.

KYC updates arrive out of order. The highest ``version`` wins; equal versions
are ordered by ``updated_at`` (canonical UTC text, so text order is time
order). A record is emitted only if it is newer than every record seen for its
user, so an old version arriving late changes nothing. In batch the arrival
order is arbitrary and a superseded version may be emitted before its
successor: the sink writes by ``user_id`` keeping the highest
(``version``, ``updated_at``), so the table ends identical in both modes.

State per user: one (version, updated_at) pair, kept for the job's life
(profiles are long-lived; erasure removes it with the user).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from transforms.records import KeyedRecord


def kyc_order(record) -> tuple[int, str]:
    return (record["version"], record["updated_at"])


class _LatestVersionFn(beam.DoFn):
    NEWEST = ReadModifyWriteStateSpec("newest", PickleCoder())

    def __init__(self):
        self._emitted = Metrics.counter("riskpipe.kyc", "newer_versions")
        self._stale = Metrics.counter("riskpipe.kyc", "stale_versions_ignored")

    def process(self, element, newest=beam.DoFn.StateParam(NEWEST)):
        _, record = element
        order = kyc_order(record)
        seen = newest.read()
        if seen is not None and order <= tuple(seen):
            self._stale.inc()
            return
        newest.write(order)
        self._emitted.inc()
        yield record


class _PickNewestFn(beam.DoFn):
    def __init__(self):
        self._emitted = Metrics.counter("riskpipe.kyc", "newer_versions")
        self._stale = Metrics.counter("riskpipe.kyc", "stale_versions_ignored")

    def process(self, element):
        _, versions = element
        versions = list(versions)
        self._emitted.inc()
        self._stale.inc(len(versions) - 1)
        yield max(versions, key=kyc_order)


class LatestKycProfile(beam.PTransform):
    """Emit a KYC record only when it is newer than everything seen for its user."""

    def expand(self, pcoll):
        keyed = pcoll | "KeyByUser" >> beam.Map(lambda r: (r["user_id"], r))
        if pcoll.is_bounded:
            # bounded input: the newest per user is known at once (one row per user)
            return keyed | "GroupVersions" >> beam.GroupByKey() | "PickNewest" >> beam.ParDo(_PickNewestFn())
        return keyed | "KeepNewest" >> beam.ParDo(_LatestVersionFn()).with_input_types(KeyedRecord)
