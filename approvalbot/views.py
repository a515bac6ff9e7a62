"""首页（/）：后台用户看到待审批（截止时间、票数；能投票的直接同意/拒绝）、最近的决定、各组件是否正常与常用链接；
未登录的访问者看到一段说明与登录入口。

审批经 approvals.selectors 与 approvals.eligibility 读取；投票表单提交到 approvals:decide（与后台同一条路）。
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from accounts.models import Approver
from approvalbot.operations.alerts import component_label
from approvals.eligibility import Eligibility
from approvals.models import Approval, Status, Vote
from approvals.selectors import approval_list
from approvals.web import DecisionForm, account_not_linked_message, why_cannot_vote

PENDING_LIMIT = 50
RECENT_LIMIT = 10

STATUS_LABELS = {
    "ok": gettext_lazy("正常"),
    "degraded": gettext_lazy("部分异常"),
    "error": gettext_lazy("故障"),
    "stale": gettext_lazy("没有按时运行"),
    "unknown": gettext_lazy("未知"),
    "not_configured": gettext_lazy("未配置"),
    "disabled": gettext_lazy("未启用"),
}


@dataclass
class PendingRow:
    approval: Approval
    received: int
    votes: list[Vote] = field(default_factory=list)
    overdue: bool = False
    can_vote: bool = False
    why_not: str = ""


def _pending_rows(approver: Approver | None) -> tuple[list[PendingRow], int]:
    queryset = approval_list(status=Status.PENDING)
    total = queryset.count()
    approvals = list(
        queryset.order_by("expires_at", "id")
        .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("approver").order_by("created_at", "id")))
        [:PENDING_LIMIT]
    )
    eligibility = Eligibility()
    now = timezone.now()
    rows = []
    for approval in approvals:
        votes = list(approval.votes.all())
        why_not = why_cannot_vote(approval, approver, eligibility)
        rows.append(PendingRow(
            approval=approval,
            received=approval.approvals_received,
            votes=votes,
            overdue=approval.expires_at <= now,
            can_vote=not why_not,
            why_not=why_not,
        ))
    return rows, total


def _components() -> tuple[str, list[dict[str, Any]]]:
    from approvalbot.operations.health import health_report

    report = health_report()
    items = []
    for name, data in report["components"].items():
        status = data.get("status", "unknown")
        detail = data.get("message") or data.get("error") or ""
        if name == "telegram" and status == "not_configured":
            detail = _("没有设置 TELEGRAM_BOT_TOKEN：不发消息，也不发提醒")
        if name == "jenkins" and status == "not_configured":
            detail = _("没有设置 JENKINS_URL，后台也没有配置 Jenkins 服务器")
        items.append({"name": name, "label": component_label(name), "status": status,
                      "status_label": STATUS_LABELS.get(status, status), "detail": str(detail)[:200]})
    return report["status"], items


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not (user.is_authenticated and user.is_staff):
        return render(request, "home.html", {
            "anonymous": True, "login_url": f"{reverse('admin:login')}?next={reverse('home')}",
        })
    approver = getattr(user, "approver", None)
    rows, pending_total = _pending_rows(approver)
    overall, components = _components()
    recent = list(approval_list().exclude(status=Status.PENDING).order_by("-decided_at", "-id")[:RECENT_LIMIT])
    return render(request, "home.html", {
        "anonymous": False,
        "rows": rows,
        "pending_total": pending_total,
        "pending_limit": PENDING_LIMIT,
        "recent": recent,
        "overall": overall,
        "overall_label": STATUS_LABELS.get(overall, overall),
        "components": components,
        "not_linked": account_not_linked_message(user) if approver is None else "",
        "form": DecisionForm(),
    })
