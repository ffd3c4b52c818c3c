"""When a notification may go out: quiet hours in the subscriber's time zone, mute, delays.

Quiet hours are wall-clock times in the subscriber's IANA zone, so the window's end is built
from the local *date* plus the end time (never "now + n hours"): a window that spans a DST
change still ends at 08:00 local time. A wall time that does not exist (the spring-forward
gap) resolves like ``zoneinfo`` does with ``fold=0`` (e.g. 02:30 → 03:30 EDT); one that
occurs twice (fall-back) ends at its first occurrence still ahead of us.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.durations import format_duration


def zone(name: str | None) -> ZoneInfo:
    """The subscriber's zone; UTC when unset or unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def quiet_until(prefs: Mapping[str, Any], tz_name: str | None, at: float) -> float | None:
    """The end of the subscriber's quiet hours if ``at`` falls inside them, else ``None``."""
    window = prefs.get("quiet_hours")
    if not isinstance(window, Mapping) or "start" not in window or "end" not in window:
        return None
    start, end = _hhmm(str(window["start"])), _hhmm(str(window["end"]))
    if start == end:
        return None
    tz = zone(tz_name)
    local = datetime.fromtimestamp(at, tz)
    wall = local.time().replace(tzinfo=None, fold=0)
    if start < end:
        inside = start <= wall < end
        end_day = local.date()
    else:  # the window spans midnight
        inside = wall >= start or wall < end
        end_day = local.date() + timedelta(days=1) if wall >= start else local.date()
    if not inside:
        return None
    for fold in (0, 1):
        moment = datetime.combine(end_day, end, tzinfo=tz).replace(fold=fold).timestamp()
        if moment > at:
            return moment
    return None  # the end already passed (the repeated hour of a fall-back night)


def muted_until(prefs: Mapping[str, Any], at: float) -> float | None:
    """``muted_until`` as epoch seconds when it lies after ``at``."""
    value = prefs.get("muted_until")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    epoch = moment.timestamp()
    return epoch if epoch > at else None


def local_time(epoch: float, tz_name: str | None, *, today: float | None = None) -> str:
    """``08:00 Asia/Shanghai``; with the date when it is a day or more after ``today``."""
    tz = zone(tz_name)
    moment = datetime.fromtimestamp(epoch, tz)
    label = moment.strftime("%H:%M")
    if today is None or epoch - today >= 86400:
        label = moment.strftime("%Y-%m-%d %H:%M")
    return f"{label} {tz.key}"


def duration(seconds: float) -> str:
    """``900`` → ``15m`` (config spelling)."""
    return format_duration(seconds)
