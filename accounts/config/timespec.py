"""封版窗口的时间写法（app.json 的 freeze.windows）：校验（schema.py）与写库（apply.py）共用这一份解析。

- 每周时间："fri 18:00"、"Friday 18:00"、"周五 18:00"、"星期五 18:00"；
- 一次性时间："2026-12-24 18:00"（按窗口的时区理解）或带时区的 ISO 8601（"2026-12-24T18:00:00+08:00"）；
- 时区：IANA 名称，如 "Asia/Shanghai"。
"""

from __future__ import annotations

import re
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAYS: dict[str, int] = {}
for _day, _names in enumerate((
    ("mon", "monday", "周一", "星期一"),
    ("tue", "tuesday", "周二", "星期二"),
    ("wed", "wednesday", "周三", "星期三"),
    ("thu", "thursday", "周四", "星期四"),
    ("fri", "friday", "周五", "星期五"),
    ("sat", "saturday", "周六", "星期六"),
    ("sun", "sunday", "周日", "周天", "星期日", "星期天"),
)):
    for _name in _names:
        _WEEKDAYS[_name] = _day

_WEEKLY_RE = re.compile(r"^\s*(\S+?)\s*(\d{1,2}):(\d{2})\s*$")


def parse_weekly(text: str) -> tuple[int, time] | None:
    """"fri 18:00" → (4, 18:00)；写法不对返回 None。"""
    match = _WEEKLY_RE.match(text or "")
    if not match:
        return None
    day = _WEEKDAYS.get(match[1].lower())
    hour, minute = int(match[2]), int(match[3])
    if day is None or hour > 23 or minute > 59:
        return None
    return day, time(hour, minute)


def format_weekly(day: int, at: time) -> str:
    return f"{WEEKDAY_KEYS[day]} {at.hour:02d}:{at.minute:02d}"


def parse_local(text: str) -> datetime | None:
    """"2026-12-24 18:00" 或带时区的 ISO 8601；不带时区的原样返回（naive），由调用方按窗口时区理解。"""
    value = (text or "").strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}[ T]\d{1,2}:\d{2}", value):
        return None  # 只写日期容易误解（结束日当天算不算？），要求写到时分
    try:
        return datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        return None


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def aware(value: datetime, tz: ZoneInfo) -> datetime:
    """不带时区的时间按 tz 的墙上时间理解。"""
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)
