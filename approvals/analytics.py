"""审批分析（X18、D11）：决定耗时、待审批时长、超时与封版拒绝、提醒次数，按项目、审批人、日、周汇总。

统计页（/stats）、/api/status 与 Telegram 的 /stats 用同一份数字。计数都在数据库里聚合（按本地日分组，
SQLite 与 MariaDB 一样；MariaDB 需要加载时区表，见 README）；中位数与 P90 两个库都没有可移植的写法，
只取“耗时”这一列到 Python 里算，行数有上限（MAX_SAMPLES）。

时间范围是“截至 until 的 days 天”（本地日期，含两端）：两个参数各自合法时组合起来也总是合法，
不存在“开始晚于结束”这种文档无法描述的错误。除“当前待审批”外，所有数字都针对范围内新建的审批。
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.environments import normalize_environment
from accounts.models import Approver

from .freeze import FROZEN
from .models import Approval, Status, Vote

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 30
MAX_DAYS = 366
# 超出这个范围的日期按边界计：更早不可能有数据，更晚会让时区换算越过 datetime 的上限
MIN_DAY = date(1970, 1, 2)
MAX_DAY = date(9999, 12, 30)
# 当前待审批按等了多久分桶（秒，上限不含）；最后一桶没有上限
PENDING_BUCKETS: tuple[int | None, ...] = (15 * 60, 3600, 4 * 3600, 86400, None)
# 提醒次数 0–9 各一桶，10 次及以上合为一桶
REMINDER_BUCKETS = 10
# 参与中位数/P90 的最多行数（取最近的）；一年的发布审批远少于此
MAX_SAMPLES = 50_000
OLDEST_PENDING_SHOWN = 5
DECIDED = (Status.APPROVED, Status.REJECTED)


@dataclass(frozen=True)
class StatsFilters:
    """统计的范围：本地日期 since..until（含两端），可选的项目与环境（归一化后）。"""

    since: date
    until: date
    project: str = ""
    environment: str = ""

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    def created_bounds(self) -> tuple[datetime, datetime]:
        """范围对应的 [开始, 结束) 时刻（带时区）。"""
        tz = timezone.get_current_timezone()
        start = timezone.make_aware(datetime.combine(self.since, time.min), tz)
        end = timezone.make_aware(datetime.combine(self.until + timedelta(days=1), time.min), tz)
        return start, end


def stats_filters(
    *, until: date | None = None, days: int | None = None, project: str | None = "", environment: str | None = ""
) -> StatsFilters:
    """由（已按格式校验过的）参数得到统计范围。days 缺省 30，必须在 1–MAX_DAYS 之间。"""
    days = DEFAULT_DAYS if days is None else days
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1..{MAX_DAYS}")
    end = min(max(until or timezone.localdate(), MIN_DAY), MAX_DAY)
    start = max(end - timedelta(days=days - 1), MIN_DAY)
    return StatsFilters(since=start, until=end, project=project or "",
                        environment=normalize_environment(environment))


def quantile(values: Sequence[float], q: float) -> float | None:
    """已排序数值的分位数，相邻两名之间线性插值（与 numpy 的默认算法相同）；q=0.5 即中位数。"""
    if not values:
        return None
    position = (len(values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def _summary(values: list[float]) -> dict[str, Any]:
    values.sort()
    return {"count": len(values), "median_seconds": quantile(values, 0.5), "p90_seconds": quantile(values, 0.9)}


def _scoped(queryset: QuerySet, filters: StatsFilters, prefix: str = "") -> QuerySet:
    if filters.project:
        queryset = queryset.filter(**{prefix + "project": filters.project})
    if filters.environment:
        queryset = queryset.filter(**{prefix + "environment": filters.environment})
    return queryset


def approvals_in_period(filters: StatsFilters) -> QuerySet[Approval]:
    """范围内新建的审批（不带默认排序：排序字段会混进 GROUP BY）。"""
    start, end = filters.created_bounds()
    return _scoped(Approval.objects.filter(created_at__gte=start, created_at__lt=end), filters).order_by()


def _decisions(queryset: QuerySet[Approval]) -> QuerySet[Approval]:
    """有人做出的决定：同意与拒绝，不含封版拒绝（那不是人的决定，也不等人、不提醒）。"""
    return queryset.filter(status__in=DECIDED).exclude(reason_code=FROZEN)


def _waits(rows: Iterable[tuple[Any, timedelta | None]]) -> tuple[dict[Any, list[float]], list[float], bool]:
    """(分组键, 耗时) 行 → 每组的秒数、全部秒数、是否因超过上限而只取了最近的部分。"""
    groups: dict[Any, list[float]] = defaultdict(list)
    overall: list[float] = []
    for n, (key, wait) in enumerate(rows):
        if n >= MAX_SAMPLES:  # 调用方多取了一行：有这一行就说明超过了上限
            return groups, overall, True
        seconds = max((wait or timedelta()).total_seconds(), 0.0)  # 时钟回拨也不出负数
        groups[key].append(seconds)
        overall.append(seconds)
    return groups, overall, False


def _daily(queryset: QuerySet[Approval], filters: StatsFilters) -> tuple[list[dict], list[dict]]:
    """每天按结果的数量，与每周的超时、封版拒绝数（周一为一周之始）。一条分组查询，最多 366 行。"""
    counts = {status: Count("id", filter=Q(status=status)) for status in Status.values}
    counts["frozen"] = Count("id", filter=Q(status=Status.REJECTED, reason_code=FROZEN))
    rows = (queryset.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
            .values("day").annotate(**{f"n_{key}": value for key, value in counts.items()}))
    by_day: dict[date, dict[str, int]] = {}
    for row in rows:
        if row["day"] is None:  # MariaDB 没有时区表时 CONVERT_TZ 得到 NULL：不能悄悄丢掉这些审批
            logger.error("按本地日期分组失败（MariaDB 需要加载时区表：mysql_tzinfo_to_sql），%s 条审批未计入", row)
            continue
        by_day[row["day"]] = {key: row[f"n_{key}"] for key in counts}
    daily = []
    weekly: dict[date, dict[str, Any]] = {}
    day = filters.since
    while day <= filters.until:
        values = by_day.get(day, {})
        daily.append({"date": day, **{status: values.get(status, 0) for status in Status.values}})
        monday = day - timedelta(days=day.weekday())
        week = weekly.setdefault(monday, {"week": monday, "timeouts": 0, "freezes": 0})
        week["timeouts"] += values.get(Status.TIMEOUT, 0)
        week["freezes"] += values.get("frozen", 0)
        day += timedelta(days=1)
    return daily, list(weekly.values())


def _reminders(decisions: QuerySet[Approval]) -> list[dict[str, Any]]:
    """决定之前提醒了几次：0–9 次各一桶，最后一桶是 10 次及以上。"""
    buckets = [0] * (REMINDER_BUCKETS + 1)
    for row in decisions.values("reminder_count").annotate(n=Count("id")):
        buckets[min(row["reminder_count"], REMINDER_BUCKETS)] += row["n"]
    return [{"reminders": n, "or_more": n == REMINDER_BUCKETS, "count": count} for n, count in enumerate(buckets)]


def pending_now(filters: StatsFilters, *, now: datetime) -> dict[str, Any]:
    """此刻仍在等待的审批（按项目/环境过滤，不受日期范围影响）：数量、最久等了多久、按时长分桶、最久的几条。"""
    pending = _scoped(Approval.objects.filter(status=Status.PENDING), filters).order_by()
    limits = [limit for limit in PENDING_BUCKETS if limit is not None]
    # 每个上限一个“等待不到这么久”的累计计数，一条聚合查询算完
    younger = {f"under_{limit}": Count("id", filter=Q(created_at__gt=now - timedelta(seconds=limit)))
               for limit in limits}
    totals = pending.aggregate(count=Count("id"), oldest=Min("created_at"), **younger)
    buckets, below = [], 0
    for limit in PENDING_BUCKETS:
        cumulative = totals["count"] if limit is None else totals[f"under_{limit}"]
        buckets.append({"up_to_seconds": limit, "count": cumulative - below})
        below = cumulative
    oldest = [
        {"id": row["public_id"], "project": row["project"], "environment": row["environment"],
         "age_seconds": max((now - row["created_at"]).total_seconds(), 0.0)}
        for row in pending.order_by("created_at", "id").values("public_id", "project", "environment", "created_at")
        [:OLDEST_PENDING_SHOWN]
    ]
    return {
        "count": totals["count"],
        "oldest_seconds": max((now - totals["oldest"]).total_seconds(), 0.0) if totals["oldest"] else None,
        "buckets": buckets,
        "oldest": oldest,
    }


def approval_analytics(filters: StatsFilters, *, now: datetime | None = None) -> dict[str, Any]:
    """统计页、/api/status 与 /stats 的全部数字（X18）。耗时以秒计；没有数据的中位数/P90 为 None。"""
    now = now or timezone.now()
    created = approvals_in_period(filters)
    counts = {row["status"]: row["n"] for row in created.values("status").annotate(n=Count("id"))}
    by_status = {status: counts.get(status, 0) for status in Status.values}
    decisions = _decisions(created)

    wait = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())
    per_project, overall, sampled = _waits(
        decisions.annotate(wait=wait).order_by("-decided_at", "-id").values_list("project", "wait")[:MAX_SAMPLES + 1])
    vote_wait = ExpressionWrapper(F("created_at") - F("approval__created_at"), output_field=DurationField())
    per_voter, _all_votes, votes_sampled = _waits(
        Vote.objects.filter(approval__in=created.values("pk")).annotate(wait=vote_wait)
        .order_by("-created_at", "-id").values_list("approver_id", "wait")[:MAX_SAMPLES + 1])
    approvers = Approver.objects.in_bulk(list(per_voter))

    daily, weekly = _daily(created, filters)
    reminders = _reminders(decisions)
    decided_count = sum(bucket["count"] for bucket in reminders)
    return {
        "period": {"since": filters.since, "until": filters.until, "days": filters.days},
        "filters": {"project": filters.project or None, "environment": filters.environment or None},
        "created": sum(by_status.values()),
        "by_status": by_status,
        "decisions": {**_summary(overall), "sampled": sampled or votes_sampled},
        "per_project": sorted(
            ({"project": project, **_summary(values)} for project, values in per_project.items()),
            key=lambda row: (-row["count"], row["project"])),
        "per_approver": sorted(
            ({"approver": approvers[pk].username, "name": approvers[pk].label, **_summary(values)}
             for pk, values in per_voter.items()),
            key=lambda row: (-row["count"], row["approver"])),
        "daily": daily,
        "weekly": weekly,
        "timeouts": by_status[Status.TIMEOUT],
        "freezes": sum(week["freezes"] for week in weekly),
        "reminders": reminders,
        "decided_without_reminder": reminders[0]["count"] / decided_count if decided_count else None,
        "pending_now": pending_now(filters, now=now),
    }


def filter_options(limit: int = 500) -> dict[str, list[str]]:
    """表单的候选值：出现过的项目与环境（都有索引）。"""
    base = Approval.objects.order_by()
    return {
        "projects": list(base.values_list("project", flat=True).distinct().order_by("project")[:limit]),
        "environments": list(base.exclude(environment="").values_list("environment", flat=True).distinct()
                             .order_by("environment")[:limit]),
    }
