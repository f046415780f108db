"""Chargeback enrichment and hourly finance aggregates.

``EnrichChargebacks`` gives each chargeback the merchant, currency and amount
of the payment it disputes (``charge_id`` = payment ``event_id``), whichever
of the two arrives first. A chargeback whose payment has not been seen after
``unmatched_wait`` of event time (or by the end of a batch) is emitted with
NULL merchant/amount and counted; if the payment turns up later the enriched
row follows and the sink's MERGE replaces the incomplete one. Payment state is
kept ``payment_ttl`` of event time (the dispute window) and cleared by a
timer. Each (chargeback, payment) pair is enriched exactly once, so the
aggregate below never counts a chargeback twice.

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

from transforms.timeutil import hour_start, parse_rfc3339_micros

CHARGEBACK_COLUMNS = (
    "charge_id",
    "reason_code",
    "received_at",
    "evidence_status",
    "schema_version",
    "ingested_at",
)


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
            expire.set(Timestamp(micros=value[3] + self._ttl))
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
            unmatched.set(Timestamp(micros=parse_rfc3339_micros(value["received_at"]) + self._wait))

    @on_timer(UNMATCHED)
    def _on_unmatched(
        self, payment=beam.DoFn.StateParam(PAYMENT), chargebacks=beam.DoFn.StateParam(CHARGEBACKS)
    ):
        if payment.read() is not None:
            return
        for cb in chargebacks.read() or []:
            self._unmatched.inc()
            yield _enriched(cb, None)

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
        return flat | "Enrich" >> beam.ParDo(_EnrichFn(self._wait_us, self._ttl_us))


class AggregateFinanceHourly(beam.PTransform):
    """(curated payment rows, curated chargeback rows) → ``analytics.finance_hourly`` rows."""

    def __init__(self, refresh_seconds: float = 30.0):
        super().__init__()
        if refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be > 0, got {refresh_seconds}")
        self._refresh = refresh_seconds

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
                trigger=trigger.Repeatedly(trigger.AfterProcessingTime(self._refresh)),
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
