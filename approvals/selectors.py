"""只读查询（selectors read）：统计、列表、详情。"""

from __future__ import annotations

from datetime import datetime
from statistics import median
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from .errors import ApprovalNotFound
from .models import Approval, ApprovalEvent, Status, Vote, normalize_public_id


def approval_get(public_id: str) -> Approval:
    """按对外编号取审批；编号人手输入，大小写与 I/O 混淆都容忍。"""
    normalized = normalize_public_id(public_id or "")
    if not normalized or len(normalized) > 16 or not normalized.isascii() or not normalized.isalnum():
        raise ApprovalNotFound(_("审批编号「%(id)s」格式不正确。") % {"id": (public_id or "")[:32]}, code="invalid_id")
    try:
        return Approval.objects.select_related("jenkins_server", "decided_by").get(public_id=normalized)
    except Approval.DoesNotExist:
        raise ApprovalNotFound(_("找不到审批「%(id)s」。") % {"id": normalized}) from None


def approval_list(
    *,
    status: str | None = None,
    project: str | None = None,
    environment: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    search: str | None = None,
) -> QuerySet[Approval]:
    """可过滤的审批列表（分页由调用方做，D10）。"""
    qs = Approval.objects.select_related("jenkins_server", "decided_by").order_by("-created_at", "-id")
    if status:
        qs = qs.filter(status=status)
    if project:
        qs = qs.filter(project=project)
    if environment:
        qs = qs.filter(environment=environment)
    if created_from:
        qs = qs.filter(created_at__gte=created_from)
    if created_to:
        qs = qs.filter(created_at__lt=created_to)
    if search:
        qs = qs.filter(
            Q(public_id__iexact=search) | Q(job_name__icontains=search) | Q(version__icontains=search)
            | Q(description__icontains=search)
        )
    return qs


def approval_detail(public_id: str) -> Approval:
    """一条审批连同投票与历史（/status <id>、/api/status/<id>）。"""
    approval = approval_get(public_id)
    return (
        Approval.objects.select_related("jenkins_server", "decided_by", "requester")
        .prefetch_related(
            Prefetch("votes", queryset=Vote.objects.select_related("approver").order_by("created_at", "id")),
            Prefetch("events", queryset=ApprovalEvent.objects.order_by("created_at", "id")),
        )
        .get(pk=approval.pk)
    )


def approval_stats(*, since: datetime | None = None) -> dict[str, Any]:
    """总数与各状态计数、今日数量、决定耗时中位数（D11、T5）。"""
    qs = Approval.objects.all()
    if since:
        qs = qs.filter(created_at__gte=since)
    counts = {row["status"]: row["n"] for row in qs.values("status").annotate(n=Count("id"))}
    by_status = {s.value: counts.get(s.value, 0) for s in Status}
    today_start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    # 中位数取最近 1000 条已决定审批：足够代表，且不随数据量增长变慢
    durations = [
        (decided - created).total_seconds()
        for created, decided in qs.filter(status__in=[Status.APPROVED, Status.REJECTED], decided_at__isnull=False)
        .order_by("-decided_at")
        .values_list("created_at", "decided_at")[:1000]
    ]
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "today": qs.filter(created_at__gte=today_start).count(),
        "median_decision_seconds": median(durations) if durations else None,
    }
