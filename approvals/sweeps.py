"""beat 驱动的扫描：到期提醒的认领与超时。每批在一个事务里完成，两个 beat 同时扫也不会重复处理一行。

超时与决定、取消走同一个终态入口（services.close_many）；正被人决定的行用 SKIP LOCKED 跳过，下一轮再看。
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, DateTimeField, F, Value, When
from django.utils import timezone

from . import effects
from .models import Approval, ApprovalEvent, Channel, EventKind, Status
from .reminders import gap_minutes, policy_values
from .services import expire_rows, lock_rows

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500
# 单次扫描最多处理的批数：积压很多时分几轮处理，避免一次任务超过时间限制
SWEEP_MAX_BATCHES = 40


def run_in_batches(step: Callable[[], int | None], *, batch: int, max_batches: int | None = None,
                   deadline: float | None = None) -> tuple[int, bool]:
    """反复调用 step（每次至多处理 batch 行，返回处理了几行；返回 None 表示必须停下）。

    不足一批说明做完了。返回 (总行数, 是否做完)；批数或时间预算用完时没做完的留给下一次运行。
    """
    total = 0
    batches = 0
    while True:
        if (deadline is not None and time.monotonic() >= deadline) or (max_batches is not None
                                                                         and batches >= max_batches):
            return total, False
        done = step()
        if done is None:
            return total, False
        total += done
        batches += 1
        if done < batch:
            return total, True


@transaction.atomic
def approvals_claim_due_reminders(*, now: datetime | None = None, limit: int = SWEEP_BATCH) -> dict[int | None, list[int]]:
    """认领一批到期提醒：推进 next_reminder_at、计数加一、写历史，返回 {chat_id: [approval pk…]}。

    整批在一个事务里用很少的查询完成：锁行一条；按（第几次提醒、间隔）分组，每组一条 UPDATE，
    下一次时间在数据库里按各行的计划时间推算；历史一条 bulk_create。同一行不会被两次扫描各发一次。
    真正发送在提交后按群合并为一条摘要（X6）。
    """
    now = now or timezone.now()
    rows = list(
        lock_rows(
            Approval.objects.filter(status=Status.PENDING, next_reminder_at__lte=now, expires_at__gt=now)
            .order_by("next_reminder_at", "id")
            .values_list("id", "reminder_count", "reminder_policy", "chat_id")[:limit],
            skip_locked=True,
        )
    )
    if not rows:
        return {}
    by_chat: dict[int | None, list[int]] = {}
    groups: dict[tuple[int, float | None], list[int]] = {}
    events = []
    for pk, count, policy, chat_id in rows:
        number = count + 1
        _interval, _backoff, max_count = policy_values(policy)
        gap = gap_minutes(policy, number + 1) if number < max_count else None
        groups.setdefault((number, gap), []).append(pk)
        by_chat.setdefault(chat_id, []).append(pk)
        events.append(ApprovalEvent(approval_id=pk, kind=EventKind.REMINDER, channel=Channel.SYSTEM,
                                    details={"number": number, "chat_id": chat_id}))
    for (number, gap), ids in groups.items():
        if gap is None:
            next_at = Value(None, output_field=DateTimeField())
        else:
            # 以计划时间而不是发送时间推算下一次，扫描偶尔迟到不会让时间表漂移；截止之后不再提醒
            shifted = F("next_reminder_at") + timedelta(minutes=gap)
            next_at = Case(When(expires_at__gt=shifted, then=shifted), default=None, output_field=DateTimeField())
        Approval.objects.filter(pk__in=ids).update(reminder_count=number, next_reminder_at=next_at)
    ApprovalEvent.objects.bulk_create(events, batch_size=limit)
    for chat_id, ids in by_chat.items():
        effects.reminders_due(chat_id, ids)
    return by_chat


@transaction.atomic
def approvals_expire_due(*, now: datetime | None = None, limit: int = SWEEP_BATCH) -> list[int]:
    """超时扫描（R9–R11）：把一批过了截止时间的待审批置为 timeout，按各自快照的策略决定是否动 Jenkins。

    与决定赛跑：决定方持有行锁时本扫描跳过该行（SKIP LOCKED），下一轮再看；谁先改到行谁赢，只落一个结果。
    """
    now = now or timezone.now()
    return expire_rows(Approval.objects.all(), now=now, skip_locked=True, limit=limit)


# 本进程是否已说过“没有配置 Telegram，不发提醒”：beat 每 30 秒一次，说一次就够
_told_no_notifier = False


def notifier_configured() -> bool:
    """提醒只经 Telegram 送达：没有 Bot token 时发不出去，也就不该记为“已提醒”。"""
    return bool(settings.TELEGRAM_BOT_TOKEN)


def reminders_sweep(*, now: datetime | None = None) -> int:
    """一次提醒扫描：按批认领，直到没有到期的或批数用完。

    没有配置 Telegram 时什么都不认领：不加 reminder_count、不写提醒历史，到期的提醒留在原处，
    配置好 Telegram（重启 worker 与 beat）后照常发出。
    """
    global _told_no_notifier
    if not notifier_configured():
        if not _told_no_notifier:
            _told_no_notifier = True
            logger.warning("没有设置 TELEGRAM_BOT_TOKEN：提醒不发送，也不计入提醒次数与审批历史；"
                           "设置后重启 worker 与 beat，到期的提醒照常发出")
        return 0
    _told_no_notifier = False
    now = now or timezone.now()
    total, _complete = run_in_batches(
        lambda: sum(len(ids) for ids in approvals_claim_due_reminders(now=now).values()),
        batch=SWEEP_BATCH, max_batches=SWEEP_MAX_BATCHES)
    return total


def timeouts_sweep(*, now: datetime | None = None) -> int:
    """一次超时扫描：按批关闭过期的待审批。"""
    now = now or timezone.now()
    total, _complete = run_in_batches(lambda: len(approvals_expire_due(now=now)), batch=SWEEP_BATCH,
                                      max_batches=SWEEP_MAX_BATCHES)
    return total
