"""给人看的时间：按 TIME_ZONE 的本地时间显示（库里存的是 UTC）。"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.formats import date_format


def format_time(value: datetime) -> str:
    return date_format(timezone.localtime(value), "Y-m-d H:i:s")
