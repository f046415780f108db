"""RFC 3339 parsing and the one UTC text form riskpipe writes.

Every timestamp that leaves ``ParseRecords`` is UTC text with microseconds and
a ``Z`` suffix (``2026-11-02T10:15:00.000000Z``): fixed width, so text order is
time order in Parquet, DuckDB and Snowflake alike, and nobody has to guess an
offset again. Parsing is strict: a value that is not RFC 3339 is a data error,
not something to repair silently.
"""

from __future__ import annotations

import datetime as dt
import re

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICROS = 1_000_000
HOUR_US = 3600 * MICROS


def parse_rfc3339_micros(text: str) -> int:
    """Microseconds since the epoch (UTC) of an RFC 3339 timestamp; ``ValueError`` if invalid."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError("not RFC 3339")
    year, month, day, hour, minute, second, frac, offset = match.groups()
    if int(second) > 59:  # leap seconds are not representable downstream; treat as invalid
        raise ValueError("second out of range")
    if offset in ("Z", "z"):
        tz = dt.timezone.utc
    else:
        sign = 1 if offset[0] == "+" else -1
        off_h, off_m = int(offset[1:3]), int(offset[4:6])
        if off_h > 23 or off_m > 59:
            raise ValueError("offset out of range")
        tz = dt.timezone(sign * dt.timedelta(hours=off_h, minutes=off_m))
    moment = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz)
    micros = int((frac or "0")[:6].ljust(6, "0"))
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * MICROS + micros


def format_micros(micros: int) -> str:
    """The canonical UTC text of ``micros`` since the epoch."""
    moment = _EPOCH + dt.timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize_rfc3339(text: str) -> str:
    return format_micros(parse_rfc3339_micros(text))


def hour_start(micros: int) -> str:
    """The canonical UTC text of the start of the hour that holds ``micros``."""
    return format_micros(micros - micros % HOUR_US)


def now_micros() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * MICROS)


def timer_micros(micros: int) -> int:
    """``micros`` rounded UP to a whole millisecond: runners keep timers and watermarks in ms.

    A timer set at a sub-millisecond time fires at the truncated millisecond,
    i.e. possibly *before* the watermark passed the event; rounding up keeps
    "fired ⇒ the watermark passed the event" true.
    """
    return -((-micros) // 1000) * 1000
