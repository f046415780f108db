"""Chargeback enrichment and hourly finance aggregates.

``EnrichChargebacks`` gives each chargeback the merchant, currency and amount
of the payment it disputes (``charge_id`` = payment ``event_id``), whichever
of the two arrives first. A chargeback whose payment has not been seen after
``unmatched_wait`` of event time (or by the end of a batch) is emitted with
NULL merchant/amount and counted; if the payment turns up later the enriched
row follows and the sink's MERGE replaces the incomplete one. Payment state is
kept ``payment_ttl`` of event time (the dispute window) and cleared by a
timer; so are the chargebacks of a payment never seen (``payment_ttl`` after
the newest of them). Each (chargeback, payment) pair is enriched exactly once,
and each chargeback is emitted unmatched at most once, so the aggregate below
never counts a chargeback twice.

``AggregateFinanceHourly``: per (``merchant_id``, ``currency``, ``hour``):
payments bucketed by ``created_at``, chargebacks by ``received_at``. In
stream the global window fires accumulating panes every
``refresh_seconds`` of processing time, so each pane restates the full total
of its key — a late chargeback restates its hour and the MERGE by key is
idempotent. In batch the single final pane is exact.
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.records import KeyedRecord
from transforms.timeutil import hour_start, parse_rfc3339_micros, timer_micros

CHARGEBACK_COLUMNS = (
    "charge_id",
    "reason_code",
    "received_at",
    "evidence_status",
    "schema_version",
    "ingested_at",
)
#: marks a stored chargeback already emitted unmatched (never copied into a row: see ``_enriched``)
_SENT = "_unmatched_sent"


def _enriched(chargeback: dict, payment: tuple | None) -> dict:
    row = {c: chargeback.get(c) for c in CHARGEBACK_COLUMNS}
    merchant, currency, amount = payment if payment is not None else (None, None, None)
    row.update(merchant_id=merchant, currency=currency, amount_minor=amount)
    return row


class _EnrichFn(beam.DoFn):
    PAYMENT = ReadModifyWriteStateSpec("payment", PickleCoder())
    CHARGEBACKS = ReadModifyWriteStateSpec("chargebacks", PickleCoder())
    UNMATCHED = TimerSpec("unmatched", TimeDomain.WATERMARK)
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, unmatched_wait_us: int, payment_ttl_us: int):
        self._wait = unmatched_wait_us
        self._ttl = payment_ttl_us
        self._matched = Metrics.counter("riskpipe.finance", "chargebacks_matched")
        self._unmatched = Metrics.counter("riskpipe.finance", "chargebacks_unmatched")

    def process(
        self,
        element,
        payment=beam.DoFn.StateParam(PAYMENT),
        chargebacks=beam.DoFn.StateParam(CHARGEBACKS),
        unmatched=beam.DoFn.TimerParam(UNMATCHED),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ):
        _, (kind, value) = element
        if kind == "payment":
            if payment.read() is not None:
                return  # payments are deduplicated upstream; a replayed one changes nothing
            payment.write(value[:3])
            expire.set(Timestamp(micros=timer_micros(value[3] + self._ttl)))
            for cb in chargebacks.read() or []:
                self._matched.inc()
                yield _enriched(cb, value[:3])
            return
        stored = chargebacks.read() or []
        stored.append(value)
        chargebacks.write(stored)
        known = payment.read()
        if known is not None:
            self._matched.inc()
            yield _enriched(value, known)
        else:
            # The one timer keeps the earliest deadline still waiting: setting it to this chargeback's
            # own deadline let an out-of-order one (older received_at) cut the others' wait short.
            unmatched.set(Timestamp(micros=min(self._deadline(cb) for cb in stored if not cb.get(_SENT))))
            # Without a payment nothing else clears this key: forget its chargebacks after the TTL
            # too (a payment that turns up sets its own, earlier, expiry).
            newest = max(parse_rfc3339_micros(cb["received_at"]) for cb in stored)
            expire.set(Timestamp(micros=timer_micros(newest + self._ttl)))

    def _deadline(self, chargeback: dict) -> int:
        # whole ms, as the timer will fire: the ``deadline <= fired`` test below must hold when it does
        return timer_micros(parse_rfc3339_micros(chargeback["received_at"]) + self._wait)

    @on_timer(UNMATCHED)
    def _on_unmatched(
        self,
        fired=beam.DoFn.TimestampParam,
        payment=beam.DoFn.StateParam(PAYMENT),
        chargebacks=beam.DoFn.StateParam(CHARGEBACKS),
        unmatched=beam.DoFn.TimerParam(UNMATCHED),
    ):
        if payment.read() is not None:
            return
        # Each chargeback is emitted unmatched once, when its own wait is over; it stays in state
        # (marked) so that a payment arriving later still enriches it. Re-emitting every stored
        # chargeback at each firing counted the earlier ones again.
        stored, waiting = [], []
        for cb in chargebacks.read() or []:
            if not cb.get(_SENT) and self._deadline(cb) <= fired.micros:
                self._unmatched.inc()
                yield _enriched(cb, None)
                cb = {**cb, _SENT: True}
            elif not cb.get(_SENT):
                waiting.append(self._deadline(cb))
            stored.append(cb)
        chargebacks.write(stored)
        if waiting:
            unmatched.set(Timestamp(micros=min(waiting)))

    @on_timer(EXPIRE)
    def _on_expire(
        self, payment=beam.DoFn.StateParam(PAYMENT), chargebacks=beam.DoFn.StateParam(CHARGEBACKS)
    ):
        payment.clear()
        chargebacks.clear()
        return []


class _EnrichBatchFn(beam.DoFn):
    """Bounded input: the payment and its chargebacks meet in one group."""

    def __init__(self):
        self._matched = Metrics.counter("riskpipe.finance", "chargebacks_matched")
        self._unmatched = Metrics.counter("riskpipe.finance", "chargebacks_unmatched")

    def process(self, element):
        _, items = element
        payment = next((value[:3] for kind, value in items if kind == "payment"), None)
        for kind, value in items:
            if kind == "chargeback":
                (self._matched if payment is not None else self._unmatched).inc()
                yield _enriched(value, payment)


class EnrichChargebacks(beam.PTransform):
    """(curated payment rows, clean chargeback records) → ``curated.chargeback`` rows."""

    def __init__(
        self,
        unmatched_wait: dt.timedelta = dt.timedelta(hours=24),
        payment_ttl: dt.timedelta = dt.timedelta(days=200),
    ):
        super().__init__()
        if unmatched_wait <= dt.timedelta(0) or payment_ttl <= unmatched_wait:
            raise ValueError("need 0 < unmatched_wait < payment_ttl")
        self._wait_us = int(unmatched_wait.total_seconds() * 1e6)
        self._ttl_us = int(payment_ttl.total_seconds() * 1e6)

    def expand(self, inputs):
        payments, chargebacks = inputs
        keyed_payments = payments | "KeyPayments" >> beam.Map(
            lambda r: (
                r["event_id"],
                (
                    "payment",
                    (
                        r["merchant_id"],
                        r["currency"],
                        r["amount_minor"],
                        parse_rfc3339_micros(r["created_at"]),
                    ),
                ),
            )
        )
        keyed_chargebacks = chargebacks | "KeyChargebacks" >> beam.Map(
            lambda r: (r["charge_id"], ("chargeback", {c: r.get(c) for c in CHARGEBACK_COLUMNS}))
        )
        flat = (keyed_payments, keyed_chargebacks) | "FlattenForJoin" >> beam.Flatten()
        if payments.is_bounded and chargebacks.is_bounded:
            return flat | "GroupById" >> beam.GroupByKey() | "Enrich" >> beam.ParDo(_EnrichBatchFn())
        return flat | "Enrich" >> beam.ParDo(_EnrichFn(self._wait_us, self._ttl_us)).with_input_types(
            KeyedRecord
        )


class AggregateFinanceHourly(beam.PTransform):
    """(curated payment rows, curated chargeback rows) → ``analytics.finance_hourly`` rows."""

    def __init__(self, refresh_seconds: int = 30, refresh_count: int | None = None):
        super().__init__()
        if refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be > 0, got {refresh_seconds}")
        if refresh_count is not None and refresh_count < 1:
            raise ValueError(f"refresh_count must be >= 1, got {refresh_count}")
        self._refresh = refresh_seconds
        # The portable direct runner that runs unbounded file sources has no processing-time
        # clock for triggers (it fails with a missing clock; TestStream runs do have one):
        # there, early panes fire every ``refresh_count`` elements instead.
        self._refresh_count = refresh_count

    def expand(self, inputs):
        payments, chargebacks = inputs
        pay = payments | "PaymentAmounts" >> beam.Map(
            lambda r: (
                (r["merchant_id"], r["currency"], hour_start(parse_rfc3339_micros(r["created_at"]))),
                (1, r["amount_minor"], 0, 0),
            )
        )
        cbs = (
            chargebacks
            | "MatchedOnly" >> beam.Filter(lambda r: r["merchant_id"] is not None)
            | "ChargebackAmounts"
            >> beam.Map(
                lambda r: (
                    (r["merchant_id"], r["currency"], hour_start(parse_rfc3339_micros(r["received_at"]))),
                    (0, 0, 1, r["amount_minor"]),
                )
            )
        )
        merged = (pay, cbs) | "FlattenAmounts" >> beam.Flatten()
        if not merged.is_bounded:
            merged = merged | "RefreshPanes" >> beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.AfterWatermark(
                    early=trigger.AfterCount(self._refresh_count)
                    if self._refresh_count
                    else trigger.AfterProcessingTime(int(self._refresh))
                ),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            )
        return (
            merged
            | "SumPerHour" >> beam.CombinePerKey(_sum_tuples)
            | "ToRows"
            >> beam.Map(
                lambda kv: {
                    "merchant_id": kv[0][0],
                    "currency": kv[0][1],
                    "hour": kv[0][2],
                    "payment_count": kv[1][0],
                    "gross_amount_minor": kv[1][1],
                    "chargeback_count": kv[1][2],
                    "chargeback_amount_minor": kv[1][3],
                }
            )
        )


def _sum_tuples(values) -> tuple[int, int, int, int]:
    totals = [0, 0, 0, 0]
    for value in values:
        for i in range(4):
            totals[i] += value[i]
    return tuple(totals)
