"""超时通知（R11）：回复在原审批消息下，说清截止时间、票数、策略与下一步，点名没投票的人、负责人与发起人。

原审批消息本身的编辑由审批消息的刷新负责。
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Prefetch
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Approver, TimeoutPolicy
from approvals.display import format_time
from approvals.eligibility import Eligibility
from approvals.models import Approval, Status, Vote

from ..messages import next_step_text, render_telegram
from ..models import MessageKind, TelegramMessage
from ..outbox import RECOVERY_WINDOW, outbox_add, outbox_key
from .common import mention_list, reply_target, voted_approve

# 超时后这么久还没有超时通知那一行：提交后投递任务时 broker 不可用，补发扫描补上
OWED_AFTER = timedelta(minutes=5)


def render_timeout_notice(approval: Approval, *, owners: list[Approver], waiting: list[Approver]) -> str:
    """超时通知（R11，templates/telegram/notices/timeout.html）：哪条审批、截止时间、票数、按哪种策略处理、接下来会怎样。"""
    people = [*owners]
    if approval.requester is not None:
        people.append(approval.requester)
    deadline = _("截止 %(t)s 前没有足够的同意票（%(got)d/%(need)d）。") % {
        "t": format_time(approval.expires_at), "got": len(voted_approve(approval)), "need": approval.required_approvals,
    }
    return render_telegram("telegram/notices/timeout.html", {
        "approval": approval, "deadline": deadline, "rejects": approval.timeout_policy == TimeoutPolicy.REJECT,
        "next_step": next_step_text(approval),
        "waiting": mention_list(waiting) if waiting else None,
        "people": mention_list(people) if people else None,
    })


def timeout_enqueue(approval_id: int) -> TelegramMessage | None:
    """放进发件箱（每条审批一行）；审批并未超时则什么也不做。"""
    approval = Approval.objects.filter(pk=approval_id, status=Status.TIMEOUT).first()
    if approval is None:
        return None
    chat_id, reply_to = reply_target(approval)
    return outbox_add(key=outbox_key(MessageKind.TIMEOUT, approval.pk), kind=MessageKind.TIMEOUT, chat_id=chat_id,
                      approval_id=approval.pk, reply_to=reply_to)


def timeout_render(row: TelegramMessage) -> str | None:
    approval = (Approval.objects.select_related("requester")
                .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("approver").order_by("id")))
                .filter(pk=row.approval_id, status=Status.TIMEOUT).first())
    if approval is None:
        return None
    eligibility = Eligibility()
    return render_timeout_notice(approval, owners=eligibility.owners(approval.project, approval.environment),
                                 waiting=eligibility.waiting(approval))


def timeouts_owed(*, limit: int) -> list[int]:
    """超时了却没有超时通知那一行的审批（最近一天内）。"""
    now = timezone.now()
    return list(
        Approval.objects.filter(status=Status.TIMEOUT, decided_at__lte=now - OWED_AFTER,
                                decided_at__gte=now - RECOVERY_WINDOW)
        .exclude(telegram_messages__kind=MessageKind.TIMEOUT)
        .order_by("decided_at").values_list("pk", flat=True)[:limit]
    )
