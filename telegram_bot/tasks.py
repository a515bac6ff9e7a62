"""telegram_bot 的 Celery 入口：薄、幂等；重试与退避在这里，业务在 telegram_bot.services。

任务名是契约（approvals.effects 按名字投递），不要改名。
"""

from __future__ import annotations

import logging
import random

from celery import shared_task
from django.conf import settings

from approvals.effects import ANNOUNCE_TASK, REFRESH_TASK

from . import services
from .sender import TelegramSendError

logger = logging.getLogger(__name__)

MAX_RETRIES = 8
RECOVERY_TASK = "telegram_bot.tasks.telegram_recovery_sweep_task"
CLEANUP_TASK = "telegram_bot.tasks.processed_updates_cleanup_task"


def retry_countdown(retries: int, retry_after: float | None = None) -> int:
    """指数退避（5 s、10 s、20 s……封顶 CELERY_RETRY_BACKOFF_MAX）加抖动；不早于 Telegram 要求的 retry_after。"""
    cap = getattr(settings, "CELERY_RETRY_BACKOFF_MAX", 600)
    base = min(5 * (2 ** retries), cap)
    countdown = base * random.uniform(0.8, 1.2)
    if retry_after:
        countdown = max(countdown, retry_after + 1)
    return int(countdown) + 1


@shared_task(bind=True, name=ANNOUNCE_TASK, max_retries=MAX_RETRIES, acks_late=True, ignore_result=True)
def approval_announce_task(self, approval_id: int) -> None:
    """新审批：发送带按钮的审批消息。重复执行不会重复发送。"""
    if not services.telegram_configured():
        logger.info("未配置 Telegram，跳过审批 %s 的通知（配置后补发扫描会补上）", approval_id)
        return
    try:
        services.approval_announce(approval_id=approval_id)
    except services.MessageBusy:
        raise self.retry(countdown=retry_countdown(0))
    except TelegramSendError as exc:
        if exc.permanent:
            return  # 已记录在消息行与审批历史上
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries, exc.retry_after))


@shared_task(bind=True, name=REFRESH_TASK, max_retries=MAX_RETRIES, acks_late=True, ignore_result=True)
def approval_messages_refresh_task(self, approval_id: int) -> None:
    """审批状态或票数变了：把它的每条 Telegram 消息改成当前状态（终态移除按钮）。"""
    if not services.telegram_configured():
        return
    try:
        services.approval_messages_refresh(approval_id=approval_id)
    except services.MessageBusy:
        raise self.retry(countdown=retry_countdown(0))
    except TelegramSendError as exc:
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries, exc.retry_after))


@shared_task(name=RECOVERY_TASK, ignore_result=True)
def telegram_recovery_sweep_task(limit: int = 50) -> dict:
    """补发扫描：没发出去的审批消息补发，显示旧状态的消息补改，丢失或中途死掉的构建结果通知、超时通知重投。

    每类每次最多 limit 条。构建结果也放在这里：同一个节拍、同一个“Telegram 已配置”判断，不必再多一个 beat 条目。
    """
    if not services.telegram_configured():
        return {"announce": [], "refresh": [], "build_results": [], "timeout_notices": []}
    found = services.recovery_candidates(limit=limit)
    for approval_id in found["announce"]:
        approval_announce_task.delay(approval_id)
    for approval_id in found["refresh"]:
        approval_messages_refresh_task.delay(approval_id)
    if found["announce"] or found["refresh"]:
        logger.info("Telegram 补发扫描：补发 %d 条，补改 %d 条", len(found["announce"]), len(found["refresh"]))
    # 投递在各自的事务提交之后（notices 内部用 on_commit）
    found["build_results"] = notices.build_result_recover(limit=limit)["requeued"]
    found["timeout_notices"] = notices.timeout_notice_recover(limit=limit)
    return found


@shared_task(name=CLEANUP_TASK, ignore_result=True)
def processed_updates_cleanup_task() -> int:
    return services.processed_updates_cleanup()


from . import notices  # noqa: E402 — 注册提醒/通知任务（补发扫描也用到它）
