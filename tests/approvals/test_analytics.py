"""审批分析（X18）的数字：在已知的数据上，中位数、P90、每日与每周计数、提醒分布、待审批时长都与手算一致。

已知数据（本地时间 Asia/Shanghai，“现在”是 2026-03-10 12:00）：
shop-backend / production：A1 同意 10 分钟（bob 6 分钟、erin 10 分钟投票，0 次提醒），A2 同意 30 分钟（bob 20、erin 30，2 次），
A3 在本地 03-06 00:30（UTC 还是 03-05）新建、60 分钟后被 bob 拒绝（1 次），A4 超时（6 次提醒，不算决定）；
pay-api / test：B1 同意 5 分钟（bob 5），B2 拒绝 240 分钟（erin 240，3 次），B3 取消；
待审批：P1 shop-backend 等了 10 分钟，P2 pay-api 2 小时，P3 pay-api 3 天；范围外：O1（1 月 1 日）。
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from django.utils import timezone

from approvals.analytics import (
    MAX_DAYS,
    approval_analytics,
    pending_now,
    quantile,
    stats_filters,
)
from approvals.freeze import FROZEN
from approvals.models import Approval, Status, Vote

pytestmark = pytest.mark.django_db

NOW_LOCAL = (2026, 3, 10, 12, 0)
MIN = 60
HOUR = 3600


def local(*parts: int) -> datetime:
    return timezone.make_aware(datetime(*parts), timezone.get_fixed_timezone(8 * 60))


NOW = local(*NOW_LOCAL)


def make_row(make_approval, *, project: str, environment: str, created: datetime, status: str = Status.PENDING,
             after_minutes: float | None = None, reminders: int = 0, votes=(), **fields) -> Approval:
    """经服务建一条审批，再把时间、结果、提醒次数（及 fields）改成已知的值（每条用自己的任务名，互不取代）。"""
    make_row.n = getattr(make_row, "n", 0) + 1
    approval = make_approval(job_name=f"{project}-job{make_row.n}", project=project, environment=environment)
    decided = created + timedelta(minutes=after_minutes) if after_minutes is not None else None
    Approval.objects.filter(pk=approval.pk).update(created_at=created, status=status, decided_at=decided,
                                                   reminder_count=reminders, **fields)
    for approver, decision, minutes in votes:
        vote = Vote.objects.create(approval=approval, approver=approver, decision=decision, channel="api")
        Vote.objects.filter(pk=vote.pk).update(created_at=created + timedelta(minutes=minutes))
    return approval


def known_data(make_approval, people) -> dict[str, Approval]:
    bob, erin = people["approver"], people["approver2"]
    rows = {
        "A1": dict(project="shop-backend", environment="production", created=local(2026, 3, 2, 9, 0),
                   status=Status.APPROVED, after_minutes=10, votes=[(bob, "approve", 6), (erin, "approve", 10)]),
        "A2": dict(project="shop-backend", environment="production", created=local(2026, 3, 3, 10, 0),
                   status=Status.APPROVED, after_minutes=30, reminders=2,
                   votes=[(bob, "approve", 20), (erin, "approve", 30)]),
        "A3": dict(project="shop-backend", environment="production", created=local(2026, 3, 6, 0, 30),
                   status=Status.REJECTED, after_minutes=60, reminders=1, votes=[(bob, "reject", 60)]),
        "A4": dict(project="shop-backend", environment="production", created=local(2026, 3, 6, 12, 0),
                   status=Status.TIMEOUT, after_minutes=120, reminders=6),
        "B1": dict(project="pay-api", environment="test", created=local(2026, 3, 4, 8, 0),
                   status=Status.APPROVED, after_minutes=5, votes=[(bob, "approve", 5)]),
        "B2": dict(project="pay-api", environment="test", created=local(2026, 3, 8, 8, 0),
                   status=Status.REJECTED, after_minutes=240, reminders=3, votes=[(erin, "reject", 240)]),
        "B3": dict(project="pay-api", environment="test", created=local(2026, 3, 9, 8, 0),
                   status=Status.CANCELLED, after_minutes=15),
        "P1": dict(project="shop-backend", environment="production", created=NOW - timedelta(minutes=10)),
        "P2": dict(project="pay-api", environment="test", created=NOW - timedelta(hours=2)),
        "P3": dict(project="pay-api", environment="test", created=NOW - timedelta(days=3)),
        "O1": dict(project="shop-backend", environment="production", created=local(2026, 1, 1, 9, 0),
                   status=Status.APPROVED, after_minutes=1, votes=[(bob, "approve", 1)]),
    }
    return {key: make_row(make_approval, **values) for key, values in rows.items()}


@pytest.fixture
def data(make_approval, people):
    return known_data(make_approval, people)


def two_weeks(**kwargs):
    return stats_filters(until=date(2026, 3, 10), days=14, **kwargs)


def test_quantile_interpolates_between_ranks():
    assert quantile([], 0.5) is None
    assert quantile([7.0], 0.9) == 7.0
    assert quantile([1.0, 2.0], 0.5) == 1.5
    assert quantile([300.0, 600.0, 1800.0, 3600.0, 14400.0], 0.9) == pytest.approx(10080.0)


def test_totals_and_decision_times_on_known_data(data):
    result = approval_analytics(two_weeks(), now=NOW)
    assert result["period"] == {"since": date(2026, 2, 25), "until": date(2026, 3, 10), "days": 14}
    assert result["filters"] == {"project": None, "environment": None}
    assert result["created"] == 10  # O1 在范围之外
    assert result["by_status"] == {"pending": 3, "approved": 3, "rejected": 2, "timeout": 1, "cancelled": 1}
    # 决定 = 同意与拒绝：5、10、30、60、240 分钟
    assert result["decisions"] == {"count": 5, "median_seconds": 30 * MIN, "p90_seconds": pytest.approx(10080.0),
                                   "sampled": False}


def test_median_and_p90_per_project(data):
    per_project = approval_analytics(two_weeks(), now=NOW)["per_project"]
    assert [row["project"] for row in per_project] == ["shop-backend", "pay-api"]  # 决定多的在前
    shop, pay = per_project
    assert (shop["count"], shop["median_seconds"], shop["p90_seconds"]) == (3, 30 * MIN, pytest.approx(3240.0))
    assert (pay["count"], pay["median_seconds"], pay["p90_seconds"]) == (2, 7350.0, pytest.approx(12990.0))


def test_median_and_p90_per_approver_count_their_votes(data):
    per_approver = approval_analytics(two_weeks(), now=NOW)["per_approver"]
    assert [(row["approver"], row["name"], row["count"]) for row in per_approver] == [("bob", "Bob", 4),
                                                                                    ("erin", "Erin", 3)]
    bob, erin = per_approver
    # bob：5、6、20、60 分钟；erin：10、30、240 分钟
    assert (bob["median_seconds"], bob["p90_seconds"]) == (780.0, pytest.approx(2880.0))
    assert (erin["median_seconds"], erin["p90_seconds"]) == (1800.0, pytest.approx(11880.0))


def test_per_day_counts_by_outcome_use_the_local_day(data):
    daily = approval_analytics(two_weeks(), now=NOW)["daily"]
    assert len(daily) == 14 and daily[0]["date"] == date(2026, 2, 25) and daily[-1]["date"] == date(2026, 3, 10)
    nonzero = {row["date"]: {k: v for k, v in row.items() if k != "date" and v} for row in daily}
    assert {day: counts for day, counts in nonzero.items() if counts} == {
        date(2026, 3, 2): {"approved": 1},
        date(2026, 3, 3): {"approved": 1},
        date(2026, 3, 4): {"approved": 1},
        date(2026, 3, 6): {"rejected": 1, "timeout": 1},  # A3 在 UTC 还是 3 月 5 日
        date(2026, 3, 7): {"pending": 1},
        date(2026, 3, 8): {"rejected": 1},
        date(2026, 3, 9): {"cancelled": 1},
        date(2026, 3, 10): {"pending": 2},
    }


def test_timeouts_per_week(data):
    result = approval_analytics(two_weeks(), now=NOW)
    assert result["weekly"] == [
        {"week": date(2026, 2, 23), "timeouts": 0, "freezes": 0},
        {"week": date(2026, 3, 2), "timeouts": 1, "freezes": 0},
        {"week": date(2026, 3, 9), "timeouts": 0, "freezes": 0},
    ]
    assert (result["timeouts"], result["freezes"]) == (1, 0)


def test_freezes_per_week_are_not_counted_as_decisions(data, make_approval):
    # 封版期间的申请当场被拒；封版开始时还在等的也被拒（等过、也提醒过）
    make_row(make_approval, project="shop-backend", environment="production", created=local(2026, 3, 3, 11, 0),
             status=Status.REJECTED, after_minutes=0.5, reason_code=FROZEN)
    make_row(make_approval, project="pay-api", environment="test", created=local(2026, 3, 9, 9, 0),
             status=Status.REJECTED, after_minutes=90, reminders=2, reason_code=FROZEN)
    result = approval_analytics(two_weeks(), now=NOW)
    assert [week["freezes"] for week in result["weekly"]] == [0, 1, 1]
    assert (result["freezes"], result["by_status"]["rejected"]) == (2, 4)
    # 决定耗时与提醒分布与没有封版拒绝时一样
    assert result["decisions"]["count"] == 5 and result["decisions"]["median_seconds"] == 30 * MIN
    assert [row["count"] for row in result["per_project"]] == [3, 2]
    assert [bucket["count"] for bucket in result["reminders"][:4]] == [2, 1, 1, 1]



def test_reminders_needed_before_a_decision(data):
    result = approval_analytics(two_weeks(), now=NOW)
    counts = {bucket["reminders"]: bucket["count"] for bucket in result["reminders"]}
    assert counts == {0: 2, 1: 1, 2: 1, 3: 1, 4: 0, 5: 0, 6: 0, 7: 0, 8: 0, 9: 0, 10: 0}  # A4 超时，不算
    assert [bucket["or_more"] for bucket in result["reminders"]] == [False] * 10 + [True]
    assert result["decided_without_reminder"] == pytest.approx(0.4)


def test_many_reminders_fall_into_the_last_bucket(make_approval, people):
    make_row(make_approval, project="x", environment="test", created=NOW - timedelta(hours=1),
             status=Status.APPROVED, after_minutes=1, reminders=37)
    buckets = approval_analytics(two_weeks(), now=NOW)["reminders"]
    assert buckets[-1] == {"reminders": 10, "or_more": True, "count": 1}


def test_pending_age_now(data):
    pending = approval_analytics(two_weeks(), now=NOW)["pending_now"]
    assert pending["count"] == 3
    assert pending["oldest_seconds"] == 3 * 86400
    assert pending["buckets"] == [
        {"up_to_seconds": 15 * MIN, "count": 1},
        {"up_to_seconds": HOUR, "count": 0},
        {"up_to_seconds": 4 * HOUR, "count": 1},
        {"up_to_seconds": 24 * HOUR, "count": 0},
        {"up_to_seconds": None, "count": 1},
    ]
    assert [(row["id"], row["age_seconds"]) for row in pending["oldest"]] == [
        (data["P3"].public_id, 3 * 86400), (data["P2"].public_id, 2 * HOUR), (data["P1"].public_id, 10 * MIN)]


def test_pending_now_ignores_the_date_range_but_not_the_project(data):
    old_range = stats_filters(until=date(2026, 1, 31), days=31, project="pay-api")
    pending = pending_now(old_range, now=NOW)
    assert pending["count"] == 2 and pending["oldest_seconds"] == 3 * 86400


def test_project_filter(data):
    result = approval_analytics(two_weeks(project="pay-api"), now=NOW)
    assert result["filters"]["project"] == "pay-api"
    assert result["created"] == 5
    assert result["by_status"] == {"pending": 2, "approved": 1, "rejected": 1, "timeout": 0, "cancelled": 1}
    assert [(row["project"], row["median_seconds"]) for row in result["per_project"]] == [("pay-api", 7350.0)]
    assert [(row["approver"], row["median_seconds"]) for row in result["per_approver"]] == [
        ("bob", 300.0), ("erin", 14400.0)]
    assert result["pending_now"]["count"] == 2


def test_environment_filter_accepts_aliases(data):
    result = approval_analytics(two_weeks(environment="生产"), now=NOW)
    assert result["filters"]["environment"] == "production"
    assert result["created"] == 5  # A1–A4、P1
    assert result["decisions"]["count"] == 3 and result["decisions"]["median_seconds"] == 30 * MIN
    assert result["pending_now"]["count"] == 1


def test_date_range_is_inclusive_local_days(data):
    # 只有 3 月 6 日（本地）：A3 与 A4
    result = approval_analytics(stats_filters(until=date(2026, 3, 6), days=1), now=NOW)
    assert result["created"] == 2 and result["by_status"]["rejected"] == 1 and result["by_status"]["timeout"] == 1
    assert [row["date"] for row in result["daily"]] == [date(2026, 3, 6)]


def test_empty_range_has_no_medians(data):
    result = approval_analytics(stats_filters(until=date(2025, 6, 30), days=7), now=NOW)
    assert result["created"] == 0
    assert result["decisions"] == {"count": 0, "median_seconds": None, "p90_seconds": None, "sampled": False}
    assert result["per_project"] == [] and result["per_approver"] == []
    assert result["decided_without_reminder"] is None
    assert len(result["daily"]) == 7 and all(row["approved"] == 0 for row in result["daily"])


def test_default_range_is_the_last_30_days_up_to_today():
    filters = stats_filters()
    assert filters.until == timezone.localdate() and filters.days == 30


@pytest.mark.parametrize("days", [0, -1, MAX_DAYS + 1])
def test_days_out_of_range_is_refused(days):
    with pytest.raises(ValueError):
        stats_filters(days=days)


def test_extreme_dates_are_clamped_instead_of_overflowing(db):
    early = stats_filters(until=date(1, 1, 1), days=MAX_DAYS)
    assert early.since == early.until == date(1970, 1, 2)
    late = stats_filters(until=date(9999, 12, 31), days=MAX_DAYS)
    assert late.until == date(9999, 12, 30) and late.days == MAX_DAYS
    for filters in (early, late):
        assert approval_analytics(filters)["created"] == 0


def test_query_count_does_not_grow_with_the_data(data, django_assert_max_num_queries):
    with django_assert_max_num_queries(9):
        approval_analytics(two_weeks(), now=NOW)
