"""/api/status 的查询参数与回答形状（统计数字与审批分析）。"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from django.utils.translation import gettext_lazy
from rest_framework import serializers

from approvals.analytics import MAX_DAYS

from .fields import Described, DocumentedField, TextField, WholeNumberField
from .serializers import ENVIRONMENT_HELP

_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", re.ASCII)


class LocalDateField(DocumentedField, serializers.DateField):
    """本地日期（TIME_ZONE）：只认 YYYY-MM-DD 这一种写法，与文档的 format: date 一致。"""

    def to_internal_value(self, value: Any) -> date:
        if not isinstance(value, str) or not _DATE.match(value):
            self.fail("invalid", format="YYYY-MM-DD")
        return super().to_internal_value(value)

    def openapi_schema(self, location: str) -> dict[str, Any]:
        return {"type": "string", "format": "date"}


class StatusFilterSerializer(serializers.Serializer):
    """/api/status 的统计范围（查询串，都可省略）：截至 until 的 days 天（本地日期，含两端），可按项目、环境过滤。"""

    until = LocalDateField(required=False, help_text=gettext_lazy(
        "截至哪一天（含），缺省为今天；早于 1970-01-02 或晚于 9999-12-30 的按这两天计"))
    days = WholeNumberField(required=False, min_value=1, max_value=MAX_DAYS,
                            help_text=gettext_lazy("统计多少天（含 until 当天），缺省 30"))
    project = TextField(required=False, max_length=200, trim_whitespace=False, help_text=gettext_lazy("项目名"))
    environment = TextField(required=False, max_length=64, trim_whitespace=False, help_text=ENVIRONMENT_HELP)


class PeriodSerializer(serializers.Serializer):
    since = serializers.DateField()
    until = serializers.DateField()
    days = serializers.IntegerField()


class StatsScopeSerializer(serializers.Serializer):
    project = serializers.CharField(allow_null=True)
    environment = serializers.CharField(allow_null=True, help_text=gettext_lazy("归一化后的环境名"))


class WaitSummarySerializer(serializers.Serializer):
    count = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True)
    p90_seconds = serializers.FloatField(allow_null=True)


class DecisionTimesSerializer(WaitSummarySerializer):
    sampled = serializers.BooleanField(help_text=gettext_lazy("决定太多时只按最近的一部分计算"))


class ProjectTimesSerializer(WaitSummarySerializer):
    project = serializers.CharField()


class ApproverTimesSerializer(WaitSummarySerializer):
    approver = serializers.CharField(help_text=gettext_lazy("审批人用户名"))
    name = serializers.CharField(help_text=gettext_lazy("显示名"))


class DayCountsSerializer(serializers.Serializer):
    date = serializers.DateField()
    pending = serializers.IntegerField()
    approved = serializers.IntegerField()
    rejected = serializers.IntegerField()
    timeout = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class WeekCountsSerializer(serializers.Serializer):
    week = serializers.DateField(help_text=gettext_lazy("这一周的周一"))
    timeouts = serializers.IntegerField()
    freezes = serializers.IntegerField()


class ReminderBucketSerializer(serializers.Serializer):
    reminders = serializers.IntegerField()
    or_more = serializers.BooleanField(help_text=gettext_lazy("true 表示“这么多次及以上”"))
    count = serializers.IntegerField()


class PendingBucketSerializer(serializers.Serializer):
    up_to_seconds = serializers.IntegerField(allow_null=True, help_text=gettext_lazy(
        "已等待不到这么多秒（不小于上一桶的上限）；null 是最后一桶，没有上限"))
    count = serializers.IntegerField()


class PendingItemSerializer(serializers.Serializer):
    id = serializers.CharField()
    project = serializers.CharField()
    environment = serializers.CharField()
    age_seconds = serializers.FloatField()


class PendingNowSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    oldest_seconds = serializers.FloatField(allow_null=True)
    buckets = PendingBucketSerializer(many=True)
    oldest = PendingItemSerializer(many=True, help_text=gettext_lazy("等得最久的几条"))


class StatusAnalyticsSerializer(Described, serializers.Serializer):
    openapi_description = gettext_lazy(
        "范围内新建的审批的分析；pending_now 是此刻的待审批（按项目、环境过滤，不受日期范围影响）。")

    period = PeriodSerializer()
    filters = StatsScopeSerializer()
    created = serializers.IntegerField(help_text=gettext_lazy("范围内新建的审批数"))
    by_status = serializers.DictField(child=serializers.IntegerField())
    decisions = DecisionTimesSerializer(help_text=gettext_lazy("从申请到同意或拒绝的秒数（封版拒绝不算）"))
    per_project = ProjectTimesSerializer(many=True)
    per_approver = ApproverTimesSerializer(many=True, help_text=gettext_lazy("从申请到这位审批人投票的秒数"))
    daily = DayCountsSerializer(many=True, help_text=gettext_lazy("每天新建的审批，按现在的状态"))
    weekly = WeekCountsSerializer(many=True)
    timeouts = serializers.IntegerField()
    freezes = serializers.IntegerField(help_text=gettext_lazy("封版期间被拒绝的审批数"))
    reminders = ReminderBucketSerializer(many=True, help_text=gettext_lazy("已同意或已拒绝的审批决定前被提醒的次数"))
    decided_without_reminder = serializers.FloatField(allow_null=True, min_value=0, max_value=1)
    pending_now = PendingNowSerializer()


class StatusReplySerializer(Described, serializers.Serializer):
    openapi_description = gettext_lazy(
        "total、by_status、today、median_decision_seconds 是全部历史，不受查询参数影响；analytics 是所选范围的分析。")

    total = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())
    today = serializers.IntegerField()
    median_decision_seconds = serializers.FloatField(allow_null=True)
    analytics = StatusAnalyticsSerializer()
