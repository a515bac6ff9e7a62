"""审批消息：带按钮的那一条。发出后审批每变一次（票数、终态、Jenkins 操作失败）就改一次。

发件箱的一行由租约保护：同一时刻只有一个任务在发/改它；持有者发/改之后重新读库，内容又变了就再改一次——
两个任务乱序执行也不会让旧内容盖住新内容。
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from django.db.models import F, Prefetch, Q
from django.utils import timezone

from approvals.models import Approval, JenkinsActionState, Status, Vote

from ..keyboards import approval_keyboard
from ..messages import render_approval
from ..models import MessageKind, MessageState, TelegramMessage
from ..outbox import (
    RECOVERY_GRACE,
    RECOVERY_WINDOW,
    outbox_add,
    outbox_claim,
    outbox_edited,
    outbox_failed,
    outbox_give_up,
    outbox_key,
    outbox_release,
    outbox_sent,
)
from ..sender import TelegramSender, TelegramSendError
from .common import approval_chat, default_chat_id

logger = logging.getLogger(__name__)

SYNC_ROUNDS = 3


class MessageBusy(Exception):
    """另一个任务正持有这条消息的租约；调用方稍后重试即可。"""


def approval_load(approval_id: int) -> Approval | None:
    return (
        Approval.objects.select_related("requester", "jenkins_server", "decided_by")
        .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("approver").order_by("created_at", "id")))
        .filter(pk=approval_id)
        .first()
    )


def approval_state_key(approval: Approval) -> str:
    """消息内容所依据的审批状态的摘要。

    不直接对渲染结果取摘要：剩余时间、签名链接随时间变化，会让每次核对都以为内容变了。
    """
    votes = [(v.approver_id, v.decision, v.reason) for v in approval.votes.all()]
    state = [
        approval.status, approval.required_approvals, votes, approval.reason, approval.decided_by_name,
        approval.decided_at.isoformat() if approval.decided_at else None, approval.decision_channel,
        approval.jenkins_action_state == JenkinsActionState.FAILED, approval.jenkins_action_error[:300],
        approval.version, approval.operation, approval.description, approval.build_url, approval.expires_at.isoformat(),
        # 升级后消息多一行“已升级，请 … 协助审批”
        approval.escalated_at.isoformat() if approval.escalated_at else None, approval.escalated_to,
    ]
    return hashlib.sha256(json.dumps(state, ensure_ascii=False, default=str).encode()).hexdigest()


def approval_render(approval: Approval) -> tuple[str, Any, str]:
    """(HTML 文字, 按钮或 None, 状态摘要)。终态不带按钮。"""
    text = render_approval(approval)
    markup = approval_keyboard(approval.public_id) if approval.status == Status.PENDING else None
    return text, markup, approval_state_key(approval)


def message_sync(*, row: TelegramMessage, sender: TelegramSender) -> float | None:
    """让 Telegram 上的这条消息与审批的当前状态一致：还没发就发，内容变了就改。row 已被认领，结束时放开。

    返回暂时失败后多少秒再试（已按重试策略记在行上）；成功或永久失败返回 None。
    """
    try:
        for _round in range(SYNC_ROUNDS):
            approval = approval_load(row.approval_id)
            if approval is None:
                break
            text, markup, digest = approval_render(approval)
            if row.message_id is None:
                sent = sender.send_message(row.chat_id, text, reply_markup=markup)
                outbox_sent([row], sent, content_hash=digest, shown_status=approval.status)
                logger.info("审批 %s 的消息已发到 chat %s（message %s）", approval.public_id, sent.chat_id,
                            sent.message_id)
                row = _reclaim(row)
                if row is None:
                    return None
                continue  # 发送期间审批可能又变了：再核对一轮
            if digest == row.content_hash:
                break
            try:
                sender.edit_message_text(row.chat_id, row.message_id, text, reply_markup=markup)
            except TelegramSendError as exc:
                if exc.code != "chat_migrated" or not exc.migrate_to_chat_id:
                    raise
                # 旧群的消息不能再编辑：在新的超级群里重发一条，行指向新消息
                sent = sender.send_message(exc.migrate_to_chat_id, text, reply_markup=markup)
                outbox_sent([row], sent, content_hash=digest, shown_status=approval.status)
                row = _reclaim(row)
                if row is None:
                    return None
                continue
            outbox_edited(row, content_hash=digest, shown_status=approval.status)
            row.content_hash = digest
    except TelegramSendError as exc:
        (logger.error if exc.permanent else logger.warning)(
            "审批 %s 在 chat %s 的消息%s：%s", row.approval_id, row.chat_id,
            "永久失败" if exc.permanent else "暂时失败，将重试", exc)
        return outbox_failed([row], exc)
    outbox_release([row])
    return None


def _reclaim(row: TelegramMessage) -> TelegramMessage | None:
    """发送成功会放开租约；同步循环还要再核对一轮，重新认领（被别人接手就交给别人）。"""
    claimed = outbox_claim([row.pk], states=(MessageState.SENT,), due_only=False)
    return claimed[0] if claimed else None


def approval_row(approval: Approval, chat_id: int) -> TelegramMessage:
    """这条审批的审批消息那一行（每条审批一行：审批只发往一个群）。"""
    existing = TelegramMessage.objects.filter(approval=approval, kind=MessageKind.APPROVAL).order_by("pk").first()
    if existing is not None:
        return existing
    return outbox_add(key=outbox_key(MessageKind.APPROVAL, approval.pk), kind=MessageKind.APPROVAL, chat_id=chat_id,
                      approval_id=approval.pk)


def approval_enqueue(approval_id: int) -> TelegramMessage | None:
    """审批消息那一行（没有就建）；没有可发送的群时记为失败（no_chat），配置了群之后可以补发。"""
    approval = Approval.objects.filter(pk=approval_id).first()
    if approval is None:
        return None
    chat_id = approval_chat(approval)
    if chat_id is None:
        row = outbox_add(key=outbox_key(MessageKind.APPROVAL, approval.pk), kind=MessageKind.APPROVAL, chat_id=None,
                         approval_id=approval.pk)
        if row.state == MessageState.PENDING:
            logger.warning("审批 %s 没有可发送的 Telegram 群（规则未指定 chat_id，也没有默认群）", approval.public_id)
            outbox_give_up(outbox_claim([row.pk], due_only=False), code="no_chat")
        return None
    row = approval_row(approval, chat_id)
    if row.state == MessageState.FAILED and row.error_code == "no_chat":
        # 之前没有群，现在有了（配置了默认群）：补发
        TelegramMessage.objects.filter(pk=row.pk, state=MessageState.FAILED).update(
            state=MessageState.PENDING, chat_id=chat_id, error_code="", last_error="", permanent=False)
        row.refresh_from_db()
    return row


def approval_announce(*, approval_id: int, sender: TelegramSender | None = None) -> float | None:
    """发送审批消息；已发过的不会再发，只核对内容。可重复调用。

    返回暂时失败后多少秒再试；另一个任务正在发/改它时抛 MessageBusy。
    """
    row = approval_enqueue(approval_id)
    if row is None or row.state == MessageState.FAILED:
        return None
    claimed = outbox_claim([row.pk], states=(MessageState.PENDING, MessageState.SENT), due_only=False)
    if not claimed:
        raise MessageBusy(row.pk)
    return message_sync(row=claimed[0], sender=sender or TelegramSender())


def approval_messages_refresh(*, approval_id: int, sender: TelegramSender | None = None) -> float | None:
    """把审批的每一条已发消息改成当前状态。一条失败不影响其他条。

    返回暂时失败后多少秒再试；有消息正被别的任务持有时（其余都处理完后）抛 MessageBusy。
    """
    sender = sender or TelegramSender()
    rows = list(TelegramMessage.objects.filter(approval_id=approval_id, kind=MessageKind.APPROVAL,
                                               state=MessageState.SENT).values_list("pk", flat=True))
    retry: float | None = None
    busy = False
    for row_id in rows:
        claimed = outbox_claim([row_id], states=(MessageState.SENT,), due_only=False)
        if not claimed:
            busy = True
            continue
        again = message_sync(row=claimed[0], sender=sender)
        if again is not None:
            retry = again if retry is None else min(retry, again)
    if busy and retry is None:
        raise MessageBusy(approval_id)
    return retry


def approval_deliver(rows: list[TelegramMessage], *, sender: TelegramSender) -> float | None:
    """补发扫描找到的待发审批消息（已认领）。"""
    retry: float | None = None
    for row in rows:
        if row.chat_id is None:
            outbox_give_up([row], code="no_chat")
            continue
        again = message_sync(row=row, sender=sender)
        if again is not None:
            retry = again if retry is None else min(retry, again)
    return retry


def approvals_owed(*, limit: int, grace: timedelta = RECOVERY_GRACE) -> dict[str, list[int]]:
    """补发扫描要补救的审批（有界）：

    - announce：待审批、创建已超过 grace，却没有审批消息那一行（broker 丢了任务）；
    - refresh：消息显示的状态与审批实际状态不同（编辑任务丢失、Telegram 故障时改失败），限最近一天内决定的。
    """
    now = timezone.now()
    cutoff = now - grace
    pending = Approval.objects.filter(status=Status.PENDING, created_at__lte=cutoff, expires_at__gt=now)
    missing = pending.exclude(telegram_messages__kind=MessageKind.APPROVAL)
    if default_chat_id():
        # 当时没有群、现在配了默认群的，也补发
        missing = missing | pending.filter(telegram_messages__kind=MessageKind.APPROVAL,
                                           telegram_messages__error_code="no_chat")
    announce = list(missing.distinct().order_by("created_at", "id").values_list("pk", flat=True)[:limit])
    refresh = list(
        TelegramMessage.objects.filter(kind=MessageKind.APPROVAL, state=MessageState.SENT)
        .exclude(shown_status=F("approval__status"))
        .filter(Q(approval__decided_at__isnull=True) | Q(approval__decided_at__lte=cutoff,
                                                         approval__decided_at__gte=now - RECOVERY_WINDOW))
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("updated_at")
        .values_list("approval_id", flat=True)
        .distinct()[:limit]
    )
    return {"announce": announce, "refresh": refresh}
