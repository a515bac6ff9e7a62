"""发布策略通知（MessageKind.POLICY）：封版拒绝（🧊，X4）与升级（📣，X15）。

封版拒绝：一行，回复在审批消息下（封版中新建的申请没有审批消息，就发到审批的群）。
升级：群里一行点名被拉进来的人；能私信的人（有数字 Telegram id）每人再一行私信。
每一行都有自己的幂等键，任务重跑、补发都不会重复；发送时按数据库现状渲染，已经不需要的（升级后已被决定）就不发。
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Approver
from approvals.display import format_time
from approvals.escalation import escalation_reason_text
from approvals.freeze import FROZEN, FROZEN_PENDING
from approvals.models import Approval, ApprovalEvent, EventKind, Status

from ..messages import next_step_text, render_telegram
from ..models import MessageKind, TelegramMessage
from ..outbox import RECOVERY_GRACE, RECOVERY_WINDOW, outbox_add, outbox_key
from .common import mention_list, reply_target

ESCALATED = "escalated"
ESCALATED_PRIVATE = "escalated_private"
NOTICES = (FROZEN, FROZEN_PENDING, ESCALATED)


def policy_enqueue(approval_id: int, notice: str) -> list[TelegramMessage]:
    """放进发件箱：封版拒绝一行；升级群里一行、每个能私信的人一行。审批不是这个状态时什么也不做。"""
    approval = Approval.objects.filter(pk=approval_id).first()
    if approval is None or notice not in NOTICES:
        return []
    kind = MessageKind.POLICY
    if notice in (FROZEN, FROZEN_PENDING):
        if approval.reason_code != FROZEN:
            return []
        chat_id, reply_to = reply_target(approval)
        return [outbox_add(key=outbox_key(kind, FROZEN, approval.pk), kind=kind, chat_id=chat_id,
                           approval_id=approval.pk, reply_to=reply_to, payload={"notice": notice})]
    if approval.escalated_at is None:
        return []
    chat_id, reply_to = reply_target(approval)
    rows = [outbox_add(key=outbox_key(kind, ESCALATED, approval.pk), kind=kind, chat_id=chat_id,
                       approval_id=approval.pk, reply_to=reply_to, payload={"notice": ESCALATED})]
    people = Approver.objects.filter(pk__in=approval.escalated_to or [], telegram_id__isnull=False, is_active=True)
    for person in people.order_by("pk"):
        rows.append(outbox_add(key=outbox_key(kind, ESCALATED, approval.pk, person.pk), kind=kind,
                               chat_id=person.telegram_id, approval_id=approval.pk,
                               payload={"notice": ESCALATED_PRIVATE, "approver": person.pk}))
    return rows


def policy_owed(*, limit: int) -> list[tuple[int, str]]:
    """该有策略通知却一行都没有的审批（投递通知任务时 broker 不可用）：(审批 pk, 通知种类)。"""
    now = timezone.now()
    window = {"gte": now - RECOVERY_WINDOW, "lte": now - RECOVERY_GRACE}
    missing = Approval.objects.exclude(telegram_messages__kind=MessageKind.POLICY)
    at_start = ApprovalEvent.objects.filter(approval=OuterRef("pk"), kind=EventKind.FROZEN, details__pending=True)
    frozen = (missing.filter(reason_code=FROZEN, decided_at__gte=window["gte"], decided_at__lte=window["lte"])
              .annotate(at_start=Exists(at_start)).order_by("decided_at").values_list("pk", "at_start")[:limit])
    escalated = (missing.filter(status=Status.PENDING, escalated_at__gte=window["gte"],
                                escalated_at__lte=window["lte"]).order_by("escalated_at").values_list("pk", flat=True)[:limit])
    return ([(pk, FROZEN_PENDING if pending else FROZEN) for pk, pending in frozen]
            + [(pk, ESCALATED) for pk in escalated])


def _freeze_text(approval: Approval) -> str:
    ends = format_time(approval.freeze_ends_at) if approval.freeze_ends_at else "-"
    return _("「%(window)s」至 %(ends)s") % {"window": approval.freeze_name or "-", "ends": ends}


def policy_render(row: TelegramMessage) -> str | None:
    approval = Approval.objects.select_related("requester").filter(pk=row.approval_id).first()
    if approval is None:
        return None
    notice = (row.payload or {}).get("notice")
    if notice in (FROZEN, FROZEN_PENDING):
        if approval.reason_code != FROZEN:
            return None
        return render_telegram("telegram/notices/frozen.html", {
            "approval": approval, "freeze": _freeze_text(approval), "next_step": next_step_text(approval),
            "at_start": notice == FROZEN_PENDING})
    if notice not in (ESCALATED, ESCALATED_PRIVATE) or approval.status != Status.PENDING:
        return None  # 已经有了结果：不必再请人帮忙
    people = list(Approver.objects.filter(pk__in=approval.escalated_to or []).order_by("username"))
    hint = _("点击审批消息上的按钮，或发送 /approve %(id)s、/reject %(id)s 理由") % {"id": approval.public_id}
    return render_telegram("telegram/notices/escalation.html", {
        "approval": approval, "why": escalation_reason_text(approval), "now": timezone.now(), "hint": hint,
        "private": notice == ESCALATED_PRIVATE, "people": mention_list(people) if people else None})

