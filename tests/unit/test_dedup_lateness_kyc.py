"""Dedup, lateness routing and KYC latest-version, in batch and with TestStream."""

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from tests.unit.beamtest import HOUR_US, MIN_US, T0, chargeback, kyc, payment, streaming_pipeline, timestamped
from transforms.dedup import DeduplicateEvents
from transforms.eventtime import AssignEventTime, RouteLateData
from transforms.kyc import LatestKycProfile
from transforms.records import content_digest


def ts(micros):
    return Timestamp(micros=micros)


def test_dedup_batch_keeps_one_per_key_regardless_of_order():
    a = payment("pe_1", T0, ingested_at="2026-11-02T00:00:01.000000Z")
    retry = payment("pe_1", T0, ingested_at="2026-11-02T05:00:00.000000Z")
    b = payment("pe_2", T0 + MIN_US)
    for order in ([a, retry, b], [b, retry, a]):
        with TestPipeline() as p:
            out = p | beam.Create(order) | AssignEventTime() | DeduplicateEvents("payment_event")
            assert_that(out | beam.Map(lambda r: r["event_id"]), equal_to(["pe_1", "pe_2"]))


def test_dedup_winner_is_chosen_by_content_not_arrival():
    first = payment("pe_1", T0, amount=500)
    conflicting = payment("pe_1", T0, amount=700)
    expected = min((first, conflicting), key=content_digest)["amount"]
    for order in ([first, conflicting], [conflicting, first]):
        with TestPipeline() as p:
            out = p | beam.Create(order) | AssignEventTime() | DeduplicateEvents("payment_event")
            assert_that(out | beam.Map(lambda r: r["amount"]), equal_to([expected]))


def test_dedup_chargeback_key_includes_received_at():
    records = [chargeback("pe_1", T0), chargeback("pe_1", T0), chargeback("pe_1", T0 + HOUR_US)]
    with TestPipeline() as p:
        out = p | beam.Create(records) | AssignEventTime() | DeduplicateEvents("chargeback")
        assert_that(
            out | beam.Map(lambda r: r["received_at"]),
            equal_to([records[0]["received_at"], records[2]["received_at"]]),
        )


def test_streaming_duplicate_arriving_30h_later_is_removed():
    first = payment("pe_1", T0)
    other = payment("pe_2", T0 + 30 * HOUR_US)
    retry = payment("pe_1", T0, ingested_at="2026-11-03T06:00:00.000000Z")
    stream = (
        TestStream()
        .advance_watermark_to(ts(T0 - MIN_US))
        .add_elements([timestamped(first)])
        .advance_watermark_to(ts(T0 + MIN_US))  # the first copy is emitted here
        .add_elements([timestamped(other)])
        .advance_watermark_to(ts(T0 + 30 * HOUR_US + MIN_US))
        .add_elements([timestamped(retry)])  # 30 h later: still remembered (TTL 48 h)
        .advance_watermark_to(ts(T0 + 31 * HOUR_US))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | DeduplicateEvents("payment_event")
        assert_that(out | beam.Map(lambda r: r["event_id"]), equal_to(["pe_1", "pe_2"]))


def test_streaming_duplicate_after_ttl_is_treated_as_new():
    first = payment("pe_1", T0)
    retry = payment("pe_1", T0)
    stream = (
        TestStream()
        .advance_watermark_to(ts(T0 - MIN_US))
        .add_elements([timestamped(first)])
        .advance_watermark_to(ts(T0 + 3 * HOUR_US))  # past the emit timer and the 2 h TTL: state cleared
        .add_elements([timestamped(retry)])
        .advance_watermark_to(ts(T0 + 4 * HOUR_US))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | DeduplicateEvents("payment_event", ttl=dt.timedelta(hours=2))
        assert_that(out | beam.Map(lambda r: r["event_id"]), equal_to(["pe_1", "pe_1"]))


def test_chargeback_23h_late_is_accepted_and_25h_late_goes_to_too_late():
    base = T0 + 10 * HOUR_US
    leading = chargeback("pe_lead", base)
    late_23h = chargeback("pe_23", base - 23 * HOUR_US)
    late_25h = chargeback("pe_25", base - 25 * HOUR_US)
    stream = (
        TestStream()
        .advance_watermark_to(ts(base - MIN_US))
        .add_elements([timestamped(leading)])
        .advance_watermark_to(ts(base + MIN_US))
        .add_elements([timestamped(late_23h), timestamped(late_25h)])
        .advance_watermark_to(ts(base + 2 * MIN_US))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        routed = p | stream | RouteLateData("chargeback", shards=1)
        assert_that(
            routed.on_time | "OnTimeIds" >> beam.Map(lambda r: r["charge_id"]),
            equal_to(["pe_lead", "pe_23"]),
            label="on_time",
        )
        assert_that(
            routed.too_late | "LateIds" >> beam.Map(lambda r: r["charge_id"]),
            equal_to(["pe_25"]),
            label="too_late",
        )


def test_nothing_is_too_late_in_batch():
    records = [chargeback("a", T0 + 48 * HOUR_US), chargeback("b", T0)]
    with TestPipeline() as p:
        routed = p | beam.Create(records) | AssignEventTime() | RouteLateData("chargeback", shards=1)
        assert_that(
            routed.on_time | beam.Map(lambda r: r["charge_id"]), equal_to(["a", "b"]), label="on_time"
        )
        assert_that(routed.too_late, equal_to([]), label="too_late")


def test_kyc_version_2_after_version_3_changes_nothing():
    v1, v2, v3 = (
        kyc("u1", v, T0 + v * HOUR_US, status)
        for v, status in ((1, "pending"), (2, "review"), (3, "verified"))
    )
    stream = (
        TestStream()
        .advance_watermark_to(ts(T0))
        .add_elements([timestamped(v1)])
        .add_elements([timestamped(v3)])
        .add_elements([timestamped(v2)])
        .advance_watermark_to(ts(T0 + 10 * HOUR_US))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | LatestKycProfile()
        assert_that(
            out | beam.Map(lambda r: (r["version"], r["verification_status"])),
            equal_to([(1, "pending"), (3, "verified")]),
        )


def test_kyc_equal_versions_are_ordered_by_updated_at():
    older = kyc("u1", 2, T0, "review")
    newer = kyc("u1", 2, T0 + HOUR_US, "verified")
    with TestPipeline() as p:
        out = p | beam.Create([newer, older]) | LatestKycProfile()
        assert_that(out | beam.Map(lambda r: r["verification_status"]), equal_to(["verified"]))


def test_constructor_arguments_are_validated():
    with pytest.raises(ValueError, match="ttl must be positive"):
        DeduplicateEvents("payment_event", ttl=dt.timedelta(0))
    with pytest.raises(ValueError, match="unknown dataset"):
        DeduplicateEvents("payments")
    with pytest.raises(ValueError, match="shards"):
        RouteLateData("chargeback", shards=0)
