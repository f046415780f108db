"""Fraud features and finance aggregates with hand-computed expectations, in batch and with TestStream.

Inputs are curated rows (tokens only). Every expected number below is worked
out by hand from the contract in ARCHITECTURE.md §4: feature windows are
``(t - W, t]`` on ``created_at``; finance buckets payments by ``created_at``
and chargebacks by ``received_at``, both in UTC hours.

Direct-runner notes for the streaming cases:
* a watermark timer at ``T`` fires once the watermark reaches ``T``, so an
  element at ``T`` is added while the watermark is still just below it;
* output of a timer that fires during ``advance_watermark_to_infinity()`` is
  dropped by ``assert_that``, so every stream first advances to a finite time
  past all timers;
* processing-time triggers do work with TestStream: ``advance_processing_time``
  moves the runner's test clock. But under a trigger that fires on processing
  time only (``Repeatedly(AfterProcessingTime)``), a pane still pending when
  the stream ends never fires and the direct runner spins forever; so the
  finance stream advances processing time after its last element, and the
  ``timeout`` mark turns a mistake into a failure rather than a hang.
"""

from __future__ import annotations

import datetime as dt
import itertools

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from io_connectors.tables import TABLES
from tests.unit.beamtest import HOUR_US, MIN_US, T0, streaming_pipeline
from transforms.features import ComputeFraudFeatures
from transforms.finance import AggregateFinanceHourly, EnrichChargebacks
from transforms.timeutil import format_micros, normalize_rfc3339, parse_rfc3339_micros

SEC_US = 1_000_000
MS_US = 1_000  # TestStream watermarks have millisecond precision
#: batch: beam.Create; stream: one payment per watermark step; stream_burst: all payments at once, newest
#: first, then one watermark jump over all of them (many timers due at once, pending kept out of order)
MODES = ("batch", "stream", "stream_burst")

FEATURE_ROW_COLUMNS = set(TABLES["analytics.fraud_features"].column_names)  # the table contract


# --------------------------------------------------------------------------- builders


def pay(event_id, at_us, card="tok_card_A", ip="tok_ip_A", merchant="m_1", amount=1000, currency="USD"):
    """A curated payment row (tokens and masks only, as ``curated.payment_event``)."""
    return {
        "event_id": event_id,
        "merchant_id": merchant,
        "amount_minor": amount,
        "currency": currency,
        "card_token": card,
        "ip_token": ip,
        "ip_prefix": "203.0.113.0/24",
        "billing_postal_masked": "941**",
        "billing_country": "US",
        "created_at": format_micros(at_us),
        "schema_version": 3,
        "ingested_at": format_micros(at_us + SEC_US),
    }


def cb(charge_id, received_us, reason_code="10.4"):
    """A clean chargeback record as it enters ``EnrichChargebacks``."""
    return {
        "charge_id": charge_id,
        "reason_code": reason_code,
        "received_at": format_micros(received_us),
        "evidence_status": "pending",
        "schema_version": 1,
        "ingested_at": format_micros(received_us + SEC_US),
    }


def enriched(chargeback, merchant, currency, amount):
    return {**chargeback, "merchant_id": merchant, "currency": currency, "amount_minor": amount}


def features(p, card5m, card1h, sum1h, merchants24h, ip5m, merchant1h, late=False):
    """The expected ``analytics.fraud_features`` row of payment ``p`` (without ``computed_at``)."""
    return {
        "event_id": p["event_id"],
        "card_token": p["card_token"],
        "ip_token": p["ip_token"],
        "merchant_id": p["merchant_id"],
        "created_at": p["created_at"],
        "card_txn_count_5m": card5m,
        "card_txn_count_1h": card1h,
        "card_amount_sum_1h": sum1h,
        "card_distinct_merchants_24h": merchants24h,
        "ip_txn_count_5m": ip5m,
        "merchant_txn_count_1h": merchant1h,
        "late": late,
    }


def hourly(merchant, currency, hour, payments, gross, chargebacks, chargeback_amount):
    return {
        "merchant_id": merchant,
        "currency": currency,
        "hour": hour,
        "payment_count": payments,
        "gross_amount_minor": gross,
        "chargeback_count": chargebacks,
        "chargeback_amount_minor": chargeback_amount,
    }


def ts(micros):
    return Timestamp(micros=micros)


def event_us(row):
    return parse_rfc3339_micros(row.get("created_at") or row["received_at"])


def at_event_time(row):
    return beam.window.TimestampedValue(row, ts(event_us(row)))


def without_computed_at(row):
    return {k: v for k, v in row.items() if k != "computed_at"}


def on_time_stream(rows):
    """Rows in event-time order, each added while the watermark is 1 ms below it; then past all timers."""
    stream = TestStream()
    ordered = sorted(rows, key=event_us)
    for at_us, group in itertools.groupby(ordered, key=event_us):
        stream.advance_watermark_to(ts(at_us - MS_US)).add_elements([at_event_time(r) for r in group])
    return stream.advance_watermark_to(ts(event_us(ordered[-1]) + HOUR_US)).advance_watermark_to_infinity()


def burst_stream(rows):
    newest_first = sorted(rows, key=event_us, reverse=True)
    return (
        TestStream()
        .advance_watermark_to(ts(event_us(newest_first[-1]) - MS_US))
        .add_elements([at_event_time(r) for r in newest_first])
        .advance_watermark_to(ts(event_us(newest_first[0]) + HOUR_US))
        .advance_watermark_to_infinity()
    )


def fraud_features(p, rows, mode):
    """``ComputeFraudFeatures`` over ``rows``: bounded (``beam.Create``) or unbounded (TestStream)."""
    sources = {"batch": beam.Create, "stream": on_time_stream, "stream_burst": burst_stream}
    source = sources[mode](rows)
    return p | "Payments" >> source | "Features" >> ComputeFraudFeatures()


def pipeline(mode):
    return TestPipeline() if mode == "batch" else streaming_pipeline()


# --------------------------------------------------------------------------- fraud features

# One card, two merchants, one IP: a burst of six payments in five minutes and one an hour later.
P1 = pay("p1", T0, merchant="m_1", amount=1000)
P2 = pay("p2", T0 + 30 * SEC_US, merchant="m_2", amount=2000)
P3 = pay("p3", T0 + MIN_US, merchant="m_1", amount=1500)
P4 = pay("p4", T0 + 2 * MIN_US, merchant="m_1", amount=500)
P5 = pay("p5", T0 + 4 * MIN_US + 59 * SEC_US, merchant="m_2", amount=2500)
P6 = pay("p6", T0 + 5 * MIN_US, merchant="m_1", amount=3000)
P7 = pay("p7", T0 + 61 * MIN_US, merchant="m_2", amount=700)
BURST = [P1, P2, P3, P4, P5, P6, P7]
BURST_FEATURES = [
    #         card5m card1h sum1h  merch24h ip5m merch1h
    features(P1, 1, 1, 1000, 1, 1, 1),
    features(P2, 2, 2, 3000, 2, 2, 1),
    features(P3, 3, 3, 4500, 2, 3, 2),
    features(P4, 4, 4, 5000, 2, 4, 3),
    # (t0-1s, t0+4m59s]: p1..p5
    features(P5, 5, 5, 7500, 2, 5, 2),
    # p1 is exactly 5 min earlier: outside the 5 min window, inside the hour
    features(P6, 5, 6, 10500, 2, 5, 4),
    # (t0+1m, t0+61m]: p3 at exactly -60 min is out; p4, p5, p6, p7 = 500+2500+3000+700; m_2: p5, p7
    features(P7, 1, 4, 6700, 2, 1, 2),
]


@pytest.mark.parametrize("mode", MODES)
def test_card_burst_features(mode):
    with pipeline(mode) as p:
        out = fraud_features(p, BURST, mode)
        assert_that(out | "Rows" >> beam.Map(without_computed_at), equal_to(BURST_FEATURES), label="rows")


@pytest.mark.parametrize("mode", MODES)
def test_output_holds_only_contract_columns_and_tokens(mode):
    # the input carries no raw value at all (no card_fingerprint, ip_address, ...): the transform
    # must run on token columns alone, and nothing but the contract columns may come out
    with pipeline(mode) as p:
        out = fraud_features(p, BURST, mode)
        assert_that(
            out | "Columns" >> beam.Map(lambda r: frozenset(r)),
            equal_to([frozenset(FEATURE_ROW_COLUMNS)] * len(BURST)),
            label="columns",
        )
        assert_that(
            out
            | "ComputedAtIsCanonical"
            >> beam.Map(lambda r: normalize_rfc3339(r["computed_at"]) == r["computed_at"]),
            equal_to([True] * len(BURST)),
            label="computed_at",
        )


# Window edges: same-instant payments count each other; exactly W earlier is outside (5 min and 24 h).
T1 = T0 + 10 * HOUR_US
Q1 = pay("q1", T1, card="tok_card_B", ip="tok_ip_B", merchant="m_1", amount=100)
Q2 = pay("q2", T1, card="tok_card_B", ip="tok_ip_B", merchant="m_2", amount=200)
Q3 = pay("q3", T1 + 5 * MIN_US, card="tok_card_B", ip="tok_ip_B", merchant="m_3", amount=300)
Q4 = pay("q4", T1 + 24 * HOUR_US, card="tok_card_B", ip="tok_ip_B", merchant="m_1", amount=400)
EDGES = [Q1, Q2, Q3, Q4]
EDGES_FEATURES = [
    #         card5m card1h sum1h merch24h ip5m merch1h
    features(Q1, 2, 2, 300, 2, 2, 1),
    features(Q2, 2, 2, 300, 2, 2, 1),
    # q1 and q2 are exactly 5 min earlier: out of the 5 min window, in the hour
    features(Q3, 1, 3, 600, 3, 1, 1),
    # q1, q2 exactly 24 h earlier: the 24 h window holds q3 (m_3) and q4 (m_1)
    features(Q4, 1, 1, 400, 2, 1, 1),
]


@pytest.mark.parametrize("mode", MODES)
def test_window_edges(mode):
    with pipeline(mode) as p:
        out = fraud_features(p, EDGES, mode)
        assert_that(out | "Rows" >> beam.Map(without_computed_at), equal_to(EDGES_FEATURES), label="rows")


# IP and merchant features across different cards.
T2 = T0 + 3 * HOUR_US
R1 = pay("r1", T2, card="tok_c1", ip="tok_ip_X", merchant="m_9", amount=100)
R2 = pay("r2", T2 + MIN_US, card="tok_c2", ip="tok_ip_X", merchant="m_9", amount=200)
R3 = pay("r3", T2 + 3 * MIN_US, card="tok_c3", ip="tok_ip_X", merchant="m_8", amount=300)
R4 = pay("r4", T2 + 4 * MIN_US, card="tok_c4", ip="tok_ip_Y", merchant="m_9", amount=400)
R5 = pay("r5", T2 + 6 * MIN_US, card="tok_c5", ip="tok_ip_X", merchant="m_9", amount=500)
R6 = pay("r6", T2 + 61 * MIN_US, card="tok_c1", ip="tok_ip_X", merchant="m_9", amount=600)
CROSS = [R1, R2, R3, R4, R5, R6]
CROSS_FEATURES = [
    #         card5m card1h sum1h merch24h ip5m merch1h
    features(R1, 1, 1, 100, 1, 1, 1),
    features(R2, 1, 1, 200, 1, 2, 2),
    features(R3, 1, 1, 300, 1, 3, 1),
    features(R4, 1, 1, 400, 1, 1, 3),
    # ip_X in (t2+1m, t2+6m]: r3, r5 (r2 exactly 5 min earlier is out)
    features(R5, 1, 1, 500, 1, 2, 4),
    # card c1 again: r1 is 61 min earlier; m_9 in (t2+1m, t2+61m]: r4, r5, r6
    features(R6, 1, 1, 600, 1, 1, 3),
]


@pytest.mark.parametrize("mode", MODES)
def test_ip_and_merchant_features_across_cards(mode):
    with pipeline(mode) as p:
        out = fraud_features(p, CROSS, mode)
        assert_that(out | "Rows" >> beam.Map(without_computed_at), equal_to(CROSS_FEATURES), label="rows")


def test_stream_late_payment_is_flagged_and_counts_what_is_known():
    card = {"card": "tok_card_L", "ip": "tok_ip_L", "merchant": "m_L"}
    l1 = pay("l1", T0, amount=100, **card)
    l2 = pay("l2", T0 + MIN_US, amount=200, **card)
    l3 = pay("l3", T0 + 2 * MIN_US, amount=300, **card)
    late = pay("l4", T0 + 90 * SEC_US, amount=400, **card)
    # also behind the watermark, but after every payment already computed for its card/IP/merchant
    behind = pay("l5", T0 + 5 * MIN_US, amount=50, **card)
    after = pay("l6", T0 + 12 * MIN_US, amount=500, **card)
    stream = (
        TestStream()
        .advance_watermark_to(ts(T0 - MS_US))
        .add_elements([at_event_time(l1)])
        .advance_watermark_to(ts(T0 + MIN_US - MS_US))
        .add_elements([at_event_time(l2)])
        .advance_watermark_to(ts(T0 + 2 * MIN_US - MS_US))
        .add_elements([at_event_time(l3)])
        .advance_watermark_to(ts(T0 + 10 * MIN_US))  # l1..l3 are computed here
        .add_elements([at_event_time(late), at_event_time(behind)])  # 8.5 and 5 min behind the watermark
        .advance_watermark_to(ts(T0 + 12 * MIN_US - MS_US))
        .add_elements([at_event_time(after)])
        .advance_watermark_to(ts(T0 + HOUR_US))
        .advance_watermark_to_infinity()
    )
    expected = [
        #         card5m card1h sum1h merch24h ip5m merch1h
        features(l1, 1, 1, 100, 1, 1, 1),
        features(l2, 2, 2, 300, 1, 2, 2),
        # emitted before l4 arrived: not revised (the backfill recomputes it)
        features(l3, 3, 3, 600, 1, 3, 3),
        # l1, l2 and itself; l3 is after it
        features(late, 3, 3, 700, 1, 3, 3, late=True),
        # (t0, t0+5m]: l2, l3, l4 and itself; no emitted row misses it, so it is not flagged
        features(behind, 4, 5, 1050, 1, 4, 5),
        # the late payments are in the history of later payments
        features(after, 1, 6, 1550, 1, 1, 6),
    ]
    with streaming_pipeline() as p:
        out = p | stream | ComputeFraudFeatures()
        assert_that(out | "Rows" >> beam.Map(without_computed_at), equal_to(expected), label="rows")


# --------------------------------------------------------------------------- finance


def finance_batch(p, payments, chargebacks):
    pays = p | "Payments" >> beam.Create(payments)
    cbs = p | "Chargebacks" >> beam.Create(chargebacks)
    curated = (pays, cbs) | "Enrich" >> EnrichChargebacks()
    return curated, (pays, curated) | "Finance" >> AggregateFinanceHourly()


def test_chargeback_counts_in_its_own_hour_with_the_payment_amount():
    payment = pay("pe_1", parse_rfc3339_micros("2026-11-02T23:40:00Z"), merchant="m_1", amount=5000)
    dispute = cb("pe_1", parse_rfc3339_micros("2026-11-04T09:15:00Z"))
    with TestPipeline() as p:
        curated, finance = finance_batch(p, [payment], [dispute])
        assert_that(curated, equal_to([enriched(dispute, "m_1", "USD", 5000)]), label="curated")
        assert_that(
            finance,
            equal_to(
                [
                    hourly("m_1", "USD", "2026-11-02T23:00:00.000000Z", 1, 5000, 0, 0),
                    hourly("m_1", "USD", "2026-11-04T09:00:00.000000Z", 0, 0, 1, 5000),
                ]
            ),
            label="finance",
        )


def test_currencies_are_kept_apart():
    payments = [
        pay("pe_1", T0 + 5 * MIN_US, merchant="m_1", currency="USD", amount=1000),
        pay("pe_2", T0 + 10 * MIN_US, merchant="m_1", currency="EUR", amount=2000),
        pay("pe_3", T0 + 15 * MIN_US, merchant="m_1", currency="USD", amount=500),
    ]
    with TestPipeline() as p:
        _, finance = finance_batch(p, payments, [cb("pe_2", T0 + 20 * MIN_US)])
        assert_that(
            finance,
            equal_to(
                [
                    hourly("m_1", "USD", "2026-11-02T00:00:00.000000Z", 2, 1500, 0, 0),
                    hourly("m_1", "EUR", "2026-11-02T00:00:00.000000Z", 1, 2000, 1, 2000),
                ]
            ),
        )


def test_offsets_land_in_the_utc_hour():
    def at(text):
        return parse_rfc3339_micros(normalize_rfc3339(text))

    payments = [
        pay("pe_1", at("2026-11-02T00:30:00+02:00"), amount=100),  # 2026-11-01T22:30Z
        pay("pe_2", at("2026-11-01T19:10:00-05:00"), amount=200),  # 2026-11-02T00:10Z
        pay("pe_3", at("2026-11-02T06:00:00+05:30"), amount=400),  # 2026-11-02T00:30Z
        pay("pe_4", at("2026-11-01T22:59:59.999999Z"), amount=800),
    ]
    # received 2026-11-02T01:00:00+01:00 = 2026-11-02T00:00Z
    dispute = {**cb("pe_1", T0), "received_at": normalize_rfc3339("2026-11-02T01:00:00+01:00")}
    with TestPipeline() as p:
        _, finance = finance_batch(p, payments, [dispute])
        assert_that(
            finance,
            equal_to(
                [
                    hourly("m_1", "USD", "2026-11-01T22:00:00.000000Z", 2, 900, 0, 0),
                    hourly("m_1", "USD", "2026-11-02T00:00:00.000000Z", 2, 600, 1, 100),
                ]
            ),
        )


# A chargeback that arrives before its payment, and one whose payment never comes.
EARLY_PAYMENT = pay("pe_9", T0 + 5 * MIN_US, merchant="m_2", amount=4000)
EARLY_DISPUTE = cb("pe_9", T0 + 70 * MIN_US)
ORPHAN_DISPUTE = cb("pe_missing", T0 + 75 * MIN_US)
ENRICHED_EARLY = enriched(EARLY_DISPUTE, "m_2", "USD", 4000)
ORPHAN_ROW = enriched(ORPHAN_DISPUTE, None, None, None)


def payments_and_chargebacks_from(p, stream):
    """Split one TestStream of ("payment" | "chargeback", row) into the two inputs."""
    both = p | "Source" >> stream
    return (
        both | "PaymentsOnly" >> beam.FlatMap(lambda kv: [kv[1]] if kv[0] == "payment" else []),
        both | "ChargebacksOnly" >> beam.FlatMap(lambda kv: [kv[1]] if kv[0] == "chargeback" else []),
    )


def tagged(kind, row):
    return beam.window.TimestampedValue((kind, row), ts(event_us(row)))


def test_batch_chargeback_before_payment_and_orphan():
    with TestPipeline() as p:
        # Create keeps no order that matters in batch, but list the chargebacks first anyway
        curated, finance = finance_batch(p, [EARLY_PAYMENT], [EARLY_DISPUTE, ORPHAN_DISPUTE])
        assert_that(curated, equal_to([ENRICHED_EARLY, ORPHAN_ROW]), label="curated")
        assert_that(
            finance,
            equal_to(
                [
                    hourly("m_2", "USD", "2026-11-02T00:00:00.000000Z", 1, 4000, 0, 0),
                    hourly("m_2", "USD", "2026-11-02T01:00:00.000000Z", 0, 0, 1, 4000),
                ]
            ),
            label="finance",
        )


def test_stream_chargeback_before_payment_and_orphan():
    stream = (
        TestStream()
        .advance_watermark_to(ts(T0 + 69 * MIN_US))
        .add_elements([tagged("chargeback", EARLY_DISPUTE), tagged("chargeback", ORPHAN_DISPUTE)])
        .advance_watermark_to(ts(T0 + 2 * HOUR_US))
        # the payment turns up an hour after its chargeback (its created_at is older still)
        .add_elements([tagged("payment", EARLY_PAYMENT)])
        .advance_watermark_to(ts(T0 + 30 * HOUR_US))  # past both unmatched timers (received + 24 h)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        pays, cbs = payments_and_chargebacks_from(p, stream)
        curated = (pays, cbs) | "Enrich" >> EnrichChargebacks()
        # exactly one row each: the early chargeback is not also emitted as unmatched
        assert_that(curated, equal_to([ENRICHED_EARLY, ORPHAN_ROW]), label="curated")


def test_stream_unmatched_chargebacks_are_emitted_once_each_after_their_own_wait():
    c1 = cb("pe_k1", T0 + 10 * HOUR_US)  # waits until +34 h
    c0 = cb("pe_k1", T0 + HOUR_US)  # arrives after c1 although received earlier: waits until +25 h
    d1 = cb("pe_k2", T0 + 2 * HOUR_US)  # waits until +26 h
    d2 = cb("pe_k2", T0 + 26 * HOUR_US)  # a second dispute after d1 was emitted: waits until +50 h
    k1_payment = pay("pe_k1", T0, merchant="m_1", amount=900)
    stream = (
        TestStream()
        .advance_watermark_to(ts(T0 + 10 * HOUR_US - MS_US))
        .add_elements([tagged("chargeback", c1), tagged("chargeback", d1)])
        .add_elements([tagged("chargeback", c0)])
        .advance_watermark_to(ts(T0 + 26 * HOUR_US))  # c0's and d1's waits are over, c1's is not
        .add_elements([tagged("payment", k1_payment), tagged("chargeback", d2)])
        .advance_watermark_to(ts(T0 + 60 * HOUR_US))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        pays, cbs = payments_and_chargebacks_from(p, stream)
        curated = (pays, cbs) | "Enrich" >> EnrichChargebacks()
        assert_that(
            curated,
            equal_to(
                [
                    enriched(c0, None, None, None),  # then replaced (MERGE) by the enriched row
                    enriched(c0, "m_1", "USD", 900),
                    enriched(c1, "m_1", "USD", 900),  # never emitted unmatched: its payment came in time
                    enriched(d1, None, None, None),  # once, not again when d2's wait is over
                    enriched(d2, None, None, None),
                ]
            ),
        )


def test_stream_chargebacks_without_payment_are_forgotten_after_the_ttl():
    gone = cb("pe_gone", T0)  # unmatched at +1 h, forgotten at +2 h
    slow = cb("pe_slow", T0 + 30 * MIN_US)  # unmatched at +1.5 h, forgotten at +2.5 h
    stream = (
        TestStream()
        .advance_watermark_to(ts(T0 - MS_US))
        .add_elements([tagged("chargeback", gone), tagged("chargeback", slow)])
        .advance_watermark_to(ts(T0 + 2 * HOUR_US + 15 * MIN_US))
        .add_elements(
            [
                tagged("payment", pay("pe_gone", T0 - 10 * MIN_US, amount=100)),
                tagged("payment", pay("pe_slow", T0 - 10 * MIN_US, amount=200)),
            ]
        )
        .advance_watermark_to(ts(T0 + 5 * HOUR_US))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        pays, cbs = payments_and_chargebacks_from(p, stream)
        enrich = EnrichChargebacks(unmatched_wait=dt.timedelta(hours=1), payment_ttl=dt.timedelta(hours=2))
        curated = (pays, cbs) | "Enrich" >> enrich
        assert_that(
            curated,
            equal_to(
                [
                    enriched(gone, None, None, None),
                    enriched(slow, None, None, None),
                    enriched(slow, "m_1", "USD", 200),  # its payment came within the TTL
                ]
            ),
        )


class _WithPaneFn(beam.DoFn):
    def process(self, row, pane=beam.DoFn.PaneInfoParam):
        yield (row["merchant_id"], row["currency"], row["hour"]), pane.index, row


def final_panes_equal_to(expected, first_panes=None):
    """Matcher over (key, pane index, row): the last pane of each key equals ``expected``.

    Every pane restates the running total of its key (accumulating): per key
    the pane indexes run 0, 1, ... and no count goes down from one pane to the
    next. ``first_panes`` pins pane 0 of some keys (an early, partial total).
    How many panes follow depends on the trigger, so only the last is pinned.
    """

    def _match(actual):
        by_key = {}
        for key, index, row in actual:
            by_key.setdefault(key, []).append((index, row))
        for key, panes in by_key.items():
            panes.sort(key=lambda pane: pane[0])
            indexes = [index for index, _ in panes]
            if indexes != list(range(len(panes))):
                raise BeamAssertException(f"{key}: pane indexes {indexes}")
            for (_, before), (_, after) in itertools.pairwise(panes):
                if any(after[c] < before[c] for c in ("payment_count", "chargeback_count")):
                    raise BeamAssertException(f"{key}: pane went down {before} -> {after}")
        for key, row in (first_panes or {}).items():
            got = by_key.get(key, [(None, None)])[0][1]
            if got != row:
                raise BeamAssertException(f"{key}: first pane {got} != {row}")
        equal_to(expected)([panes[-1][1] for panes in by_key.values()])

    return _match


@pytest.mark.timeout(120)
def test_stream_finance_accumulating_panes_end_with_exact_totals():
    hour0, hour1 = "2026-11-02T00:00:00.000000Z", "2026-11-02T01:00:00.000000Z"
    p1 = pay("pe_1", T0 + 10 * MIN_US, merchant="m_1", currency="USD", amount=1000)
    p2 = pay("pe_2", T0 + 20 * MIN_US, merchant="m_1", currency="USD", amount=2000)
    p3 = pay("pe_3", T0 + 30 * MIN_US, merchant="m_1", currency="EUR", amount=700)
    p4 = pay("pe_4", T0 + 50 * MIN_US, merchant="m_1", currency="USD", amount=500)
    refresh = 30
    stream = (
        TestStream()
        .advance_watermark_to(ts(T0))
        .add_elements([tagged("payment", p1), tagged("payment", p2), tagged("payment", p3)])
        .advance_processing_time(refresh + 1)  # first panes
        .advance_watermark_to(ts(T0 + 39 * MIN_US))
        .add_elements([tagged("chargeback", cb("pe_1", T0 + 40 * MIN_US))])  # matched at once
        .advance_watermark_to(ts(T0 + 49 * MIN_US))
        .add_elements([tagged("payment", p4)])
        .advance_processing_time(refresh + 1)  # restated panes
        .advance_watermark_to(ts(T0 + 69 * MIN_US))
        .add_elements([tagged("chargeback", EARLY_DISPUTE), tagged("chargeback", ORPHAN_DISPUTE)])
        .advance_watermark_to(ts(T0 + 2 * HOUR_US))
        .add_elements([tagged("payment", EARLY_PAYMENT)])  # after its chargeback
        .advance_watermark_to(ts(T0 + 30 * HOUR_US))  # the orphan is emitted unmatched (and not counted)
        .advance_processing_time(refresh + 1)  # fire what is pending: see the module docstring
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        pays, cbs = payments_and_chargebacks_from(p, stream)
        curated = (pays, cbs) | "Enrich" >> EnrichChargebacks()
        finance = (pays, curated) | "Finance" >> AggregateFinanceHourly(refresh_seconds=refresh)
        assert_that(
            finance | "WithPane" >> beam.ParDo(_WithPaneFn()),
            final_panes_equal_to(
                [
                    hourly("m_1", "USD", hour0, 3, 3500, 1, 1000),
                    hourly("m_1", "EUR", hour0, 1, 700, 0, 0),
                    hourly("m_2", "USD", hour0, 1, 4000, 0, 0),
                    hourly("m_2", "USD", hour1, 0, 0, 1, 4000),
                ],
                # fired by the first processing-time advance, before p4 and the chargeback
                first_panes={("m_1", "USD", hour0): hourly("m_1", "USD", hour0, 2, 3000, 0, 0)},
            ),
        )
