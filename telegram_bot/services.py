"""telegram_bot 的写操作：审批消息的发送、编辑与补发；update 去重。任务与处理器都只调用这里。

每一行 TelegramMessage 由“租约”保护：同一时刻只有一个任务在发/改它；持有者在发/改之后重新读库，
内容又变了就再改一次——两个任务乱序执行也不会让旧内容盖住新内容。
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Prefetch, Q
from django.utils import timezone

from accounts.app_config import app_defaults
from approvals.models import Approval, ApprovalEvent, Channel, EventKind, Status, Vote
from approvals.services import event_record

from .keyboards import approval_keyboard
from .messages import render_approval
from .models import MessageKind, MessageState, ProcessedUpdate, TelegramMessage
from .sender import SentMessage, TelegramSender, TelegramSendError, chat_resolve

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120  # 大于一次同步里最坏的网络等待（节流 ≤10 s + 超时 15 s，最多 3 轮）
SYNC_ROUNDS = 3


class MessageBusy(Exception):
    """另一个任务正持有这条消息的租约；调用方稍后重试即可。"""


def telegram_configured() -> bool:
    return bool(settings.TELEGRAM_BOT_TOKEN)


# ---------------------------------------------------------------- 渲染


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
        approval.jenkins_action_state == "failed", approval.jenkins_action_error[:300],
        approval.version, approval.operation, approval.description, approval.build_url, approval.expires_at.isoformat(),
    ]
    return hashlib.sha256(json.dumps(state, ensure_ascii=False, default=str).encode()).hexdigest()


def approval_render(approval: Approval) -> tuple[str, Any, str]:
    """(HTML 文字, 按钮或 None, 状态摘要)。终态不带按钮。"""
    text = render_approval(approval)
    markup = approval_keyboard(approval.public_id) if approval.status == Status.PENDING else None
    return text, markup, approval_state_key(approval)


def approval_target_chats(approval: Approval) -> list[int]:
    """审批消息发往哪里：规则指定的群（创建时已快照到 approval.chat_id），否则默认群；沿迁移找到现用 id。"""
    chat_id = approval.chat_id or app_defaults().get("chat_id")
    return [chat_resolve(int(chat_id))] if chat_id else []


# ---------------------------------------------------------------- 租约与行状态


def _lease_claim(row_id: int) -> Any:
    now = timezone.now()
    until = now + timedelta(seconds=LEASE_SECONDS)
    changed = (
        TelegramMessage.objects.filter(pk=row_id)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=until)
    )
    return until if changed == 1 else None


def _lease_release(row_id: int, until: Any) -> None:
    TelegramMessage.objects.filter(pk=row_id, lease_until=until).update(lease_until=None)


def _row_sent(row: TelegramMessage, sent: SentMessage, digest: str, status: str, *, approval: Approval) -> None:
    now = timezone.now()
    first = row.message_id is None
    TelegramMessage.objects.filter(pk=row.pk).update(
        chat_id=sent.chat_id, message_id=sent.message_id, state=MessageState.SENT, content_hash=digest,
        shown_status=status, sent_at=now, attempts=F("attempts") + 1, error_code="", last_error="", updated_at=now,
    )
    details = {"chat_id": sent.chat_id, "message_id": sent.message_id}
    if sent.migrated_from:
        details["migrated_from"] = sent.migrated_from
    if not first:
        details["resent"] = True
    event_record(approval=approval, kind=EventKind.NOTIFIED, channel=Channel.TELEGRAM, details=details)
    logger.info("审批 %s 的消息已发到 chat %s（message %s）", approval.public_id, sent.chat_id, sent.message_id)


def _row_edited(row: TelegramMessage, digest: str, status: str) -> None:
    now = timezone.now()
    TelegramMessage.objects.filter(pk=row.pk).update(
        content_hash=digest, shown_status=status, edited_at=now, error_code="", last_error="", updated_at=now,
    )


def _row_failed(row_id: int, exc: TelegramSendError) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {
        "error_code": exc.code, "last_error": exc.message[:2000], "last_error_at": now,
        "attempts": F("attempts") + 1, "updated_at": now,
    }
    if exc.permanent:
        fields["state"] = MessageState.FAILED
    TelegramMessage.objects.filter(pk=row_id).update(**fields)
    row = TelegramMessage.objects.select_related("approval").get(pk=row_id)
    if exc.permanent:
        logger.error("审批 %s 在 chat %s 的消息永久失败：%s", row.approval.public_id, row.chat_id, exc)
        event_record(
            approval=row.approval, kind=EventKind.NOTIFY_FAILED, channel=Channel.TELEGRAM,
            details={"chat_id": row.chat_id, "code": exc.code, "error": exc.message[:500]},
        )
    else:
        logger.warning("审批 %s 在 chat %s 的消息暂时失败，将重试：%s", row.approval.public_id, row.chat_id, exc)


# ---------------------------------------------------------------- 同步一条消息


def message_sync(*, row_id: int, sender: TelegramSender | None = None) -> TelegramMessage:
    """让 Telegram 上的这条消息与审批的当前状态一致：还没发就发，内容变了就改。

    抛 MessageBusy（别人在处理，稍后重试）或 TelegramSendError（已记录到行上；暂时性的由任务重试）。
    """
    sender = sender or TelegramSender()
    lease = _lease_claim(row_id)
    if lease is None:
        raise MessageBusy(row_id)
    try:
        for _round in range(SYNC_ROUNDS):
            row = TelegramMessage.objects.get(pk=row_id)
            if row.state == MessageState.FAILED:
                break
            approval = approval_load(row.approval_id)
            if approval is None:
                break
            text, markup, digest = approval_render(approval)
            if row.state == MessageState.PENDING or row.message_id is None:
                sent = sender.send_message(row.chat_id, text, reply_markup=markup)
                _row_sent(row, sent, digest, approval.status, approval=approval)
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
                _row_sent(row, sent, digest, approval.status, approval=approval)
                continue
            _row_edited(row, digest, approval.status)
        return TelegramMessage.objects.get(pk=row_id)
    except TelegramSendError as exc:
        _row_failed(row_id, exc)
        raise
    finally:
        _lease_release(row_id, lease)


def _row_for(approval: Approval, chat_id: int) -> TelegramMessage:
    lookup = {"approval": approval, "chat_id": chat_id, "kind": MessageKind.APPROVAL}
    row = TelegramMessage.objects.filter(**lookup).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return TelegramMessage.objects.create(**lookup)
    except IntegrityError:
        return TelegramMessage.objects.get(**lookup)


def _record_no_chat(approval: Approval) -> None:
    if ApprovalEvent.objects.filter(approval=approval, kind=EventKind.NOTIFY_FAILED).exists():
        return
    logger.warning("审批 %s 没有可发送的 Telegram 群（规则未指定 chat_id，也没有 TELEGRAM_DEFAULT_CHAT_ID）",
                   approval.public_id)
    event_record(approval=approval, kind=EventKind.NOTIFY_FAILED, channel=Channel.TELEGRAM,
                 details={"code": "no_chat"})


def approval_announce(*, approval_id: int, sender: TelegramSender | None = None) -> list[TelegramMessage]:
    """发送审批消息（每个目标聊天一条）；已发过的不会再发，只核对内容。可重复调用。"""
    approval = approval_load(approval_id)
    if approval is None:
        logger.warning("要发送的审批 %s 不存在", approval_id)
        return []
    chats = approval_target_chats(approval)
    if not chats:
        _record_no_chat(approval)
        return []
    sender = sender or TelegramSender()
    rows = []
    for chat_id in chats:
        row = _row_for(approval, chat_id)
        if row.state == MessageState.FAILED:
            continue
        rows.append(message_sync(row_id=row.pk, sender=sender))
    return rows


def approval_messages_refresh(*, approval_id: int, sender: TelegramSender | None = None) -> int:
    """把审批的每一条已发消息改成当前状态。返回检查过的消息数。

    一条失败不影响其他条；最后把暂时性错误（或租约冲突）抛给任务去重试。
    """
    sender = sender or TelegramSender()
    rows = list(
        TelegramMessage.objects.filter(approval_id=approval_id, kind=MessageKind.APPROVAL, state=MessageState.SENT)
        .values_list("pk", flat=True)
    )
    retry: Exception | None = None
    for row_id in rows:
        try:
            message_sync(row_id=row_id, sender=sender)
        except MessageBusy as exc:
            retry = retry or exc
        except TelegramSendError as exc:
            if not exc.permanent:
                retry = retry or exc
    if retry is not None:
        raise retry
    return len(rows)


# ---------------------------------------------------------------- 补发扫描


def recovery_candidates(*, limit: int = 50, grace_seconds: int = 60, stale_seconds: int = 300) -> dict[str, list[int]]:
    """找出需要补救的审批（有界）：

    - announce：待审批、创建已超过 grace 秒，却没有任何审批消息（broker 丢了任务、发送时 Telegram 不可用）；
      以及消息行卡在“待发送”超过 stale 秒（任务重试次数用尽）。
    - refresh：消息显示的状态与审批实际状态不同（编辑任务丢失）。
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=grace_seconds)
    missing = Approval.objects.filter(status=Status.PENDING, created_at__lte=cutoff, expires_at__gt=now).exclude(
        telegram_messages__kind=MessageKind.APPROVAL
    )
    if not app_defaults().get("chat_id"):
        missing = missing.filter(chat_id__isnull=False)
    announce = list(missing.order_by("created_at", "id").values_list("pk", flat=True)[:limit])
    stuck = (
        TelegramMessage.objects.filter(
            kind=MessageKind.APPROVAL, state=MessageState.PENDING, updated_at__lte=now - timedelta(seconds=stale_seconds),
            approval__status=Status.PENDING,
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("updated_at")
        .values_list("approval_id", flat=True)[:limit]
    )
    announce += [pk for pk in stuck if pk not in announce][: max(limit - len(announce), 0)]
    refresh = list(
        TelegramMessage.objects.filter(kind=MessageKind.APPROVAL, state=MessageState.SENT)
        .exclude(shown_status=F("approval__status"))
        .filter(Q(approval__decided_at__isnull=True) | Q(approval__decided_at__lte=cutoff))
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("updated_at")
        .values_list("approval_id", flat=True)
        .distinct()[:limit]
    )
    return {"announce": announce, "refresh": refresh}


# ---------------------------------------------------------------- update 去重


def update_mark_processed(*, bot_id: int, update_id: int) -> bool:
    """记录一个 update；已记录过返回 False（重投或重放，忽略）。"""
    try:
        with transaction.atomic():
            ProcessedUpdate.objects.create(bot_id=bot_id, update_id=update_id)
    except IntegrityError:
        return False
    return True


def processed_updates_cleanup(*, older_than_days: int = 7) -> int:
    """update id 只需要记住几天（Telegram 最多保留 24 小时未确认的 update）。"""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = ProcessedUpdate.objects.filter(received_at__lt=cutoff).delete()
    return deleted
