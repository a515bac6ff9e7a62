"""telegram_bot 的写操作（消息之外）：update 去重、按钮拒绝后的“请回复理由”提示。

发往 Telegram 的消息都在发件箱（outbox）与各类通知（notices/）里。
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import PendingPage, ProcessedUpdate, ReasonPrompt


def telegram_configured() -> bool:
    return bool(settings.TELEGRAM_BOT_TOKEN)


def update_mark_processed(*, bot_id: int, update_id: int) -> bool:
    """记录一个 update；已记录过返回 False（重投或重放，忽略）。"""
    try:
        with transaction.atomic():
            ProcessedUpdate.objects.create(bot_id=bot_id, update_id=update_id)
    except IntegrityError:
        return False
    return True


def processed_updates_cleanup(*, older_than_days: int = 7) -> int:
    """update id 只需要记住几天（Telegram 最多保留 24 小时未确认的 update）；旧的待办列表消息也不必再翻页。"""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = ProcessedUpdate.objects.filter(received_at__lt=cutoff).delete()
    PendingPage.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def pending_page_record(*, chat_id: int, message_id: int, owner_telegram_id: int) -> None:
    PendingPage.objects.get_or_create(chat_id=chat_id, message_id=message_id,
                                      defaults={"owner_telegram_id": owner_telegram_id})


def pending_page_owner(*, chat_id: int, message_id: int) -> int | None:
    """这条消息是不是机器人发出的待办列表；是的话返回它主人的 Telegram 数字 ID。"""
    return (PendingPage.objects.filter(chat_id=chat_id, message_id=message_id)
            .values_list("owner_telegram_id", flat=True).first())


def reason_prompt_record(
    *, approval_id: int, approver_id: int, telegram_user_id: int, chat_id: int, message_id: int
) -> None:
    """记下发出的“请回复理由”提示：之后回复它的人必须是拒绝者本人。"""
    ReasonPrompt.objects.get_or_create(
        chat_id=chat_id, message_id=message_id,
        defaults={"approval_id": approval_id, "approver_id": approver_id, "telegram_user_id": telegram_user_id},
    )


def reason_prompt_claim(*, chat_id: int, message_id: int, user_id: int) -> tuple[ReasonPrompt | None, str]:
    """认领对某条提示的回复（一条提示只能回复一次）。返回 (提示, 问题)：

    问题为 "not_prompt"（回复的不是提示）、"not_owner"（不是拒绝者本人）、"answered"（已处理过）或 ""。
    """
    prompt = (ReasonPrompt.objects.select_related("approval", "approver")
              .filter(chat_id=chat_id, message_id=message_id).first())
    if prompt is None:
        return None, "not_prompt"
    if prompt.telegram_user_id != user_id:
        return prompt, "not_owner"
    if not ReasonPrompt.objects.filter(pk=prompt.pk, answered_at__isnull=True).update(answered_at=timezone.now()):
        return prompt, "answered"
    return prompt, ""
