"""Point-in-time fraud features: trailing event-time windows ending at each payment.

For a payment at event time ``t`` every feature aggregates the payments of the
same entity (card token, IP token, merchant) with event time in ``(t - W, t]``
— the window ends at ``t`` inclusive, so the payment counts itself and every
payment at the same instant; a payment exactly ``W`` earlier is outside.
Only curated (tokenized) values are used: features never see raw PII.

How it stays point-in-time correct in a stream: each entity key keeps its
recent history (24 h, the longest window) and a buffer of pending payments.
A payment is computed once the watermark passes its event time (an
event-time timer), when every on-time payment at or before ``t`` is known.
Python DoFns cannot read the watermark, so each entity key knows it only
through its own timers: its known watermark is the newest of its payments
already computed. A payment at or before the known watermark of its card, IP
or merchant is computed at once from the history and flagged ``late=true``:
rows already emitted for those later payments are not revised (and may miss
it) — the backfill job recomputes them exactly. A payment behind the real
watermark but newer than everything computed for its three entities is
computed as usual and not flagged: no emitted row is missing it. In
batch the watermark passes everything at end of input, so every row is exact
and none is late.

The three entity families are computed by separate keyed steps and joined
back by ``event_id``.
"""

from __future__ import annotations

import bisect

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.records import KeyedRecord
from transforms.timeutil import format_micros, now_micros, parse_rfc3339_micros, timer_micros

_MIN = 60 * 1_000_000
W5M, W1H, W24H = 5 * _MIN, 60 * _MIN, 24 * 60 * _MIN
HISTORY_US = W24H

#: family → (entity column, features computed from its history)
FAMILIES = {
    "card": "card_token",
    "ip": "ip_token",
    "merchant": "merchant_id",
}
FEATURE_COLUMNS = (
    "card_txn_count_5m",
    "card_txn_count_1h",
    "card_amount_sum_1h",
    "card_distinct_merchants_24h",
    "ip_txn_count_5m",
    "merchant_txn_count_1h",
)


def _window(history: list[tuple], t: int, width: int) -> list[tuple]:
    """Entries of ``history`` (sorted by time) with time in (t - width, t]."""
    lo = bisect.bisect_right(history, (t - width, "\uffff"))
    hi = bisect.bisect_right(history, (t, "\uffff"))
    return history[lo:hi]


def compute_family(family: str, history: list[tuple], t: int) -> dict[str, int]:
    """Features of one family for a payment at ``t``; history entries are (t, event_id, amount, merchant)."""
    if family == "card":
        h1 = _window(history, t, W1H)
        return {
            "card_txn_count_5m": len(_window(history, t, W5M)),
            "card_txn_count_1h": len(h1),
            "card_amount_sum_1h": sum(e[2] for e in h1),
            "card_distinct_merchants_24h": len({e[3] for e in _window(history, t, W24H)}),
        }
    if family == "ip":
        return {"ip_txn_count_5m": len(_window(history, t, W5M))}
    if family == "merchant":
        return {"merchant_txn_count_1h": len(_window(history, t, W1H))}
    raise ValueError(f"unknown feature family {family!r}")


def _family_fn(family: str) -> beam.DoFn:
    """A stateful DoFn for one family, with state and timer names of its own.

    Why a class per family: the portable direct runner confuses same-named
    timers of stateful DoFns that run in one fused stage (only one family's
    timers fired), so each family gets distinct names.
    """
    HISTORY = ReadModifyWriteStateSpec(f"{family}_history", PickleCoder())
    PENDING = ReadModifyWriteStateSpec(f"{family}_pending", PickleCoder())
    KNOWN_WM = ReadModifyWriteStateSpec(f"{family}_known_watermark_us", VarIntCoder())
    READY = TimerSpec(f"{family}_ready", TimeDomain.WATERMARK)

    class _FamilyFeaturesFn(beam.DoFn):
        """Per entity: history + pending payments; emits (event_id, (family, features, late))."""

        def __init__(self, family: str):
            self._family = family
            self._late = Metrics.counter("riskpipe.features", f"{family}.late_rows")

        def process(
            self,
            element,
            history=beam.DoFn.StateParam(HISTORY),
            pending=beam.DoFn.StateParam(PENDING),
            known_wm=beam.DoFn.StateParam(KNOWN_WM),
            ready=beam.DoFn.TimerParam(READY),
        ):
            _, (event_id, t, amount, merchant) = element
            entry = (t, event_id, amount, merchant)
            watermark = known_wm.read()
            if watermark is not None and t <= watermark:
                # the watermark already passed this payment: compute now, flag late
                hist = history.read() or []
                bisect.insort(hist, entry)
                history.write(self._prune(hist, watermark))
                self._late.inc()
                yield event_id, (self._family, compute_family(self._family, hist, t), True)
                return
            queue = pending.read() or []
            bisect.insort(queue, entry)
            pending.write(queue)
            ready.set(Timestamp(micros=timer_micros(queue[0][0])))

        @on_timer(READY)
        def _on_ready(
            self,
            fired=beam.DoFn.TimestampParam,
            history=beam.DoFn.StateParam(HISTORY),
            pending=beam.DoFn.StateParam(PENDING),
            known_wm=beam.DoFn.StateParam(KNOWN_WM),
            ready=beam.DoFn.TimerParam(READY),
        ):
            now = fired.micros
            queue = pending.read() or []
            cut = bisect.bisect_right(queue, (now, "\uffff"))
            due, rest = queue[:cut], queue[cut:]
            hist = history.read() or []
            for entry in due:
                bisect.insort(hist, entry)
            # every payment at or before a due time is now in the history (watermark passed it)
            for entry in due:
                yield entry[1], (self._family, compute_family(self._family, hist, entry[0]), False)
            horizon = now
            current = known_wm.read()
            if current is None or horizon > current:
                known_wm.write(horizon)
            history.write(self._prune(hist, horizon))
            if rest:
                pending.write(rest)
                ready.set(Timestamp(micros=timer_micros(rest[0][0])))
            else:
                pending.clear()

        @staticmethod
        def _prune(hist: list[tuple], watermark: int) -> list[tuple]:
            # entries older than the longest window before the watermark can no longer matter
            # (a later payment has t > watermark - allowed lateness is handled by the backfill)
            lo = bisect.bisect_left(hist, (watermark - HISTORY_US - 1, ""))
            return hist[lo:]

    _FamilyFeaturesFn.__name__ = f"_{family.title()}FeaturesFn"
    return _FamilyFeaturesFn(family)


def _assemble(got: dict) -> dict:
    row = dict(got["base"][1])
    late = False
    for family in FAMILIES:
        _, features, family_late = got[family]
        row.update(features)
        late = late or family_late
    row["late"] = late
    row["computed_at"] = format_micros(now_micros())
    return row


class _JoinFamiliesFn(beam.DoFn):
    """Collect the three family results of one event_id and emit the feature row."""

    PARTS = ReadModifyWriteStateSpec("parts", PickleCoder())

    def process(self, element, parts=beam.DoFn.StateParam(PARTS)):
        _, part = element
        got = parts.read() or {}
        got[part[0]] = part
        if len(got) < len(FAMILIES) + 1:
            parts.write(got)
            return
        parts.clear()
        yield _assemble(got)


def _family_batch(element, family: str):
    """Bounded input: all payments of one entity at once; same function as the stream path."""
    _, entries = element
    history = sorted((t, event_id, amount, merchant) for event_id, t, amount, merchant in entries)
    for entry in history:
        yield entry[1], (family, compute_family(family, history, entry[0]), False)


class ComputeFraudFeatures(beam.PTransform):
    """Curated payment rows → ``analytics.fraud_features`` rows (see the module docstring).

    Bounded input takes a GroupByKey path (all of an entity's payments at
    once, sorted) that computes the same rows with the same function as the
    keyed-state path used for unbounded input.
    """

    def expand(self, payments):
        bounded = payments.is_bounded

        def entity_input(row, column):
            t = parse_rfc3339_micros(row["created_at"])
            return row[column], (row["event_id"], t, row["amount_minor"], row["merchant_id"])

        parts = []
        for family, column in FAMILIES.items():
            keyed = payments | f"KeyBy_{family}" >> beam.Map(entity_input, column)
            if bounded:
                parts.append(
                    keyed
                    | f"Group_{family}" >> beam.GroupByKey()
                    | f"Features_{family}" >> beam.FlatMap(_family_batch, family)
                )
            else:
                parts.append(
                    keyed
                    | f"Features_{family}" >> beam.ParDo(_family_fn(family)).with_input_types(KeyedRecord)
                )
        base = payments | "Base" >> beam.Map(
            lambda r: (
                r["event_id"],
                (
                    "base",
                    {
                        "event_id": r["event_id"],
                        "card_token": r["card_token"],
                        "ip_token": r["ip_token"],
                        "merchant_id": r["merchant_id"],
                        "created_at": r["created_at"],
                    },
                ),
            )
        )
        flat = [*parts, base] | "FlattenParts" >> beam.Flatten()
        if bounded:
            return (
                flat
                | "GroupParts" >> beam.GroupByKey()
                | "JoinFamilies" >> beam.Map(lambda kv: _assemble({part[0]: part for part in kv[1]}))
            )
        return flat | "JoinFamilies" >> beam.ParDo(_JoinFamiliesFn()).with_input_types(KeyedRecord)
