"""统计页 /stats（X18）：只给后台 staff 看。过滤条件是 GET 表单；值不对时说清楚是哪一项（400），不会 500。

数字来自 approvals.analytics（与 /api/status、Telegram /stats 相同），图由 approvals.charts 在服务端画成 SVG。
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_safe

from .analytics import MAX_DAYS, PENDING_BUCKETS, REMINDER_BUCKETS, approval_analytics, filter_options, stats_filters
from .charts import Series, column_chart, count_label, duration_label, line_chart, row_chart
from .models import Status

CHART_ROWS = 12  # 横向柱图最多画这么多行（按数量排在前面的）；表格里列出全部


class StatsFilterForm(forms.Form):
    until = forms.DateField(label=gettext_lazy("截至"), required=False, input_formats=["%Y-%m-%d"])
    days = forms.IntegerField(label=gettext_lazy("天数"), required=False, min_value=1, max_value=MAX_DAYS)
    project = forms.CharField(label=gettext_lazy("项目"), required=False, max_length=200)
    environment = forms.CharField(label=gettext_lazy("环境"), required=False, max_length=64)


def _headline(data: dict[str, Any]) -> list[dict[str, str]]:
    """页首的几个大数字：Python 决定说什么，模板决定长什么样。"""
    by_status = data["by_status"]
    decisions = data["decisions"]
    pending = data["pending_now"]
    share = data["decided_without_reminder"]
    return [
        {"key": "created", "label": _("新建审批"), "value": str(data["created"])},
        {"key": "approved", "label": _("已同意"), "value": str(by_status[Status.APPROVED])},
        {"key": "rejected", "label": _("已拒绝"), "value": str(by_status[Status.REJECTED])},
        {"key": "timeout", "label": _("已超时"), "value": str(by_status[Status.TIMEOUT])},
        {"key": "median", "label": _("决定耗时中位数"), "value": duration_label(decisions["median_seconds"])},
        {"key": "p90", "label": _("决定耗时 P90"), "value": duration_label(decisions["p90_seconds"])},
        {"key": "pending", "label": _("当前待审批"), "value": str(pending["count"]),
         "note": _("最久 %(age)s") % {"age": duration_label(pending["oldest_seconds"])} if pending["count"] else ""},
        {"key": "freezes", "label": _("封版拒绝"), "value": str(data["freezes"])},
        {"key": "no-reminder", "label": _("无需提醒即决定"),
         "value": "-" if share is None else f"{round(share * 100)}%"},
    ]


def _pending_label(limit: int | None, previous: int | None) -> str:
    if limit is None:
        return _("≥ %(t)s") % {"t": duration_label(previous)}
    return _("< %(t)s") % {"t": duration_label(limit)}


def _charts(data: dict[str, Any]) -> dict[str, Any]:
    daily = data["daily"]
    outcomes = [Series(status.value, str(status.label), [day[status.value] for day in daily])
                for status in (Status.APPROVED, Status.REJECTED, Status.TIMEOUT, Status.CANCELLED, Status.PENDING)]

    def waits(rows: list[dict[str, Any]], name: str, label: str) -> Any:
        shown = rows[:CHART_ROWS]
        return row_chart([row[name] for row in shown], [
            Series("median", _("中位数"), [row["median_seconds"] or 0 for row in shown]),
            Series("p90", "P90", [row["p90_seconds"] or 0 for row in shown]),
        ], label=label)

    buckets = data["pending_now"]["buckets"]
    previous = [None, *PENDING_BUCKETS[:-1]]
    weekly = data["weekly"]
    reminders = data["reminders"]
    return {
        "daily": column_chart([day["date"].strftime("%m-%d") for day in daily], outcomes,
                              label=_("每天新建的审批（按结果）")),
        "per_project": waits(data["per_project"], "project", _("决定耗时：按项目")),
        "per_approver": waits(data["per_approver"], "name", _("响应耗时：按审批人")),
        "pending": row_chart([_pending_label(b["up_to_seconds"], p) for b, p in zip(buckets, previous, strict=True)],
                             [Series("pending", _("待审批"), [b["count"] for b in buckets])],
                             label=_("当前待审批已等待的时长"), duration=False, empty_text=_("现在没有待审批")),
        "weekly": line_chart([week["week"].strftime("%m-%d") for week in weekly], [
            Series("timeout", _("超时"), [week["timeouts"] for week in weekly]),
            Series("frozen", _("封版拒绝"), [week["freezes"] for week in weekly]),
        ], label=_("每周的超时与封版拒绝")),
        "reminders": column_chart(
            [f"{b['reminders']}+" if b["or_more"] else str(b["reminders"]) for b in reminders],
            [Series("reminders", _("审批数"), [b["count"] for b in reminders])],
            label=_("决定之前提醒了几次"), empty_text=_("范围内还没有决定")),
    }


def _tables(data: dict[str, Any]) -> dict[str, Any]:
    def rows(items: list[dict[str, Any]], name: str) -> list[list[str]]:
        return [[item[name], count_label(item["count"]), duration_label(item["median_seconds"]),
                 duration_label(item["p90_seconds"])] for item in items]

    return {
        "per_project": rows(data["per_project"], "project"),
        "per_approver": rows(data["per_approver"], "name"),
        "oldest": [{**item, "age": duration_label(item["age_seconds"])} for item in data["pending_now"]["oldest"]],
    }


@staff_member_required
@require_safe
def stats_page(request: HttpRequest) -> HttpResponse:
    form = StatsFilterForm(request.GET)
    context: dict[str, Any] = {"options": filter_options(), "max_days": MAX_DAYS, "reminder_cap": REMINDER_BUCKETS}
    if not form.is_valid():
        errors = [(form.fields[name].label, messages) for name, messages in form.errors.items()]
        return render(request, "approvals/stats.html",
                      {**context, "errors": errors, "values": request.GET.dict()}, status=400)
    filters = stats_filters(**form.cleaned_data)
    data = approval_analytics(filters)
    values = {"until": filters.until.isoformat(), "days": filters.days, "project": filters.project,
              "environment": form.cleaned_data["environment"] or ""}
    return render(request, "approvals/stats.html", {
        **context, "values": values, "data": data, "headline": _headline(data), "charts": _charts(data),
        "tables": _tables(data),
    })
