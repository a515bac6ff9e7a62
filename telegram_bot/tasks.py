"""telegram_bot 的全部 Celery 入口：薄、幂等。每个任务把通知放进发件箱并发出；失败后多久再试由发件箱的
重试策略决定（outbox.outbox_failed），任务只负责按那个时间再来。

任务名是契约（approvals.effects 按名字投递），不要改名。
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from django.db import transaction

from accounts.tasks import CONFIG_CHANGED_NOTIFY_TASK
from approvalbot.celery import retry_countdown
from approvalbot.operations.effects import ALERT_NOTIFY_TASK
from approvals.effects import (
    ANNOUNCE_TASK,
    BUILD_RESULT_NOTIFY_TASK,
    POLICY_NOTICE_TASK,
    REFRESH_TASK,
    REMINDER_DIGEST_TASK,
    TIMEOUT_NOTICE_TASK,
)
from approvals.models import Approval

from . import services
from .models import MessageKind, MessageState, TelegramMessage
from .notices import alerts, build_results, config, policy, reminders, timeouts
from .notices import approvals as approval_messages
from .outbox import MAX_ATTEMPTS, outbox_claim, outbox_due, outbox_held, outbox_send_each
from .sender import TelegramSender

logger = logging.getLogger(__name__)

DELIVER_TASK = "telegram_bot.tasks.outbox_deliver_task"
RECOVERY_TASK = "telegram_bot.tasks.telegram_recovery_sweep_task"
CLEANUP_TASK = "telegram_bot.tasks.processed_updates_cleanup_task"

# 一行一条消息的通知：怎样按行渲染
RENDERERS: dict[str, Callable[[TelegramMessage], str | None]] = {
    MessageKind.TIMEOUT: timeouts.timeout_render,
    MessageKind.BUILD_RESULT: build_results.build_result_render,
    MessageKind.CONFIG: config.config_render,
    MessageKind.ALERT: alerts.alert_render,
    MessageKind.POLICY: policy.policy_render,
}
TASK_OPTIONS: dict[str, Any] = {"bind": True, "max_retries": MAX_ATTEMPTS, "acks_late": True, "ignore_result": True}


def _again(task: Task, countdown: float | None) -> None:
    """发件箱说要再试：按它给的时间重新执行本任务（次数由 max_retries 与发件箱共同限制）。"""
    if countdown is not None and (task.request.retries or 0) < task.max_retries:
        raise task.retry(countdown=countdown)


def outbox_deliver(rows: list[TelegramMessage], *, sender: TelegramSender | None = None) -> float | None:
    """发出已认领的行，按类型分派。返回最早的重试秒数。"""
    sender = sender or TelegramSender()
    retry: float | None = None
    by_kind: dict[str, list[TelegramMessage]] = {}
    for row in rows:
        by_kind.setdefault(row.kind, []).append(row)
    for kind, kind_rows in by_kind.items():
        if kind == MessageKind.APPROVAL:
            again = approval_messages.approval_deliver(kind_rows, sender=sender)
        elif kind == MessageKind.REMINDER:
            again, leftover = reminders.reminders_deliver(kind_rows, sender=sender)
            if leftover:
                # 时间预算用完（已发的部分有记录）：新任务接着发剩下的，不占用错误重试次数
                outbox_deliver_task.apply_async(args=[leftover, ""], countdown=1)
        elif kind in RENDERERS:
            again = outbox_send_each(kind_rows, RENDERERS[kind], sender)
        else:
            again = outbox_send_each(kind_rows, lambda row: str(row.payload.get("html") or "") or None, sender)
        if again is not None:
            retry = again if retry is None else min(retry, again)
    return retry


def _send_owned(task: Task, row: TelegramMessage | None) -> None:
    """本任务刚放进发件箱的一行：立即认领并发出（不等重试时间：任务自己就是那个“再试”）。"""
    if row is None or row.state != MessageState.PENDING:
        return
    _again(task, outbox_deliver(outbox_claim([row.pk], due_only=False)))


@shared_task(name=ANNOUNCE_TASK, **TASK_OPTIONS)
def approval_announce_task(self: Task, approval_id: int) -> None:
    """新审批：发送带按钮的审批消息。重复执行不会重复发送。"""
    if not services.telegram_configured():
        logger.info("未配置 Telegram，跳过审批 %s 的通知（配置后补发扫描会补上）", approval_id)
        return
    try:
        countdown = approval_messages.approval_announce(approval_id=approval_id)
    except approval_messages.MessageBusy:
        countdown = retry_countdown(0)
    _again(self, countdown)


@shared_task(name=REFRESH_TASK, **TASK_OPTIONS)
def approval_messages_refresh_task(self: Task, approval_id: int) -> None:
    """审批状态或票数变了：把它的每条 Telegram 消息改成当前状态（终态移除按钮）。"""
    if not services.telegram_configured():
        return
    try:
        countdown = approval_messages.approval_messages_refresh(approval_id=approval_id)
    except approval_messages.MessageBusy:
        countdown = retry_countdown(0)
    _again(self, countdown)


@shared_task(name=REMINDER_DIGEST_TASK, **TASK_OPTIONS)
def reminder_digest_task(self: Task, chat_id: int | None, approval_ids: list[int]) -> None:
    """一个群同时到期的提醒合成一条摘要发出（X6）。重复执行不会重复提醒。"""
    if not services.telegram_configured():
        logger.info("未配置 Telegram，跳过 %d 条提醒", len(approval_ids))
        return
    ids = reminders.reminders_enqueue(chat_id=chat_id, approval_ids=approval_ids)
    _again(self, outbox_deliver(outbox_claim(ids, due_only=False)))


@shared_task(name=TIMEOUT_NOTICE_TASK, **TASK_OPTIONS)
def timeout_notice_task(self: Task, approval_id: int) -> None:
    """超时通知（R11），回复在原审批消息下。"""
    if services.telegram_configured():
        _send_owned(self, timeouts.timeout_enqueue(approval_id))


@shared_task(name=BUILD_RESULT_NOTIFY_TASK, **TASK_OPTIONS)
def build_result_notify_task(self: Task, build_result_id: int) -> None:
    """构建结果通知（B3–B8）。"""
    if services.telegram_configured():
        _send_owned(self, build_results.build_result_enqueue(build_result_id))


@shared_task(name=CONFIG_CHANGED_NOTIFY_TASK, **TASK_OPTIONS)
def config_changed_notify_task(self: Task, name: str, ok: bool, summary: str) -> None:
    """配置文件重新加载或被拒绝时通知默认群（C7）。"""
    if services.telegram_configured():
        _send_owned(self, config.config_notice_enqueue(name=name, ok=ok, summary=summary))


@shared_task(name=ALERT_NOTIFY_TASK, **TASK_OPTIONS)
def alert_notify_task(self: Task, key: str, payload: dict[str, Any], retry: bool = True) -> None:
    """运维告警或恢复通知（O3/O4）。worker 不可用时运维在 beat 进程里直接执行它（retry=False：
    失败不在这里就地重试，行留在发件箱里，由补发扫描按重试时间补发）。"""
    if not services.telegram_configured():
        return
    row = alerts.alert_enqueue(key=key, payload=payload)
    if row is None or row.state != MessageState.PENDING:
        return
    countdown = outbox_deliver(outbox_claim([row.pk], due_only=False))
    if retry:
        _again(self, countdown)


@shared_task(name=POLICY_NOTICE_TASK, **TASK_OPTIONS)
def policy_notice_task(self: Task, approval_id: int, notice: str) -> None:
    """发布策略通知：封版拒绝（🧊）、升级（📣，群里点名并私信被拉进来的人）。重复执行不会重复发送。"""
    if services.telegram_configured():
        rows = policy.policy_enqueue(approval_id, notice)
        _again(self, outbox_deliver(outbox_claim([r.pk for r in rows if r.state == MessageState.PENDING],
                                                 due_only=False)))


@shared_task(name=DELIVER_TASK, **TASK_OPTIONS)
def outbox_deliver_task(self: Task, row_ids: list[int], token: str = "") -> None:
    """发出补发扫描认领并交来的行（token 是那次认领的令牌；没有令牌时自己认领到期的行）。"""
    if not services.telegram_configured():
        return
    rows = outbox_held(row_ids, token) if token else outbox_claim(row_ids)
    countdown = outbox_deliver(rows)
    if countdown is not None:
        pending = [r.pk for r in rows if TelegramMessage.objects.filter(pk=r.pk, state=MessageState.PENDING).exists()]
        if pending and (self.request.retries or 0) < self.max_retries:
            raise self.retry(args=[pending, ""], countdown=countdown + 1)  # 晚一点到：行上记的时间已过


def _hand_over(row_ids: list[int], *, due_only: bool) -> list[int]:
    """补发扫描认领这些行（按类型与群分组），把令牌交给投递任务：并发的两次扫描只有一方投递。"""
    groups: dict[tuple[str, int | None], list[int]] = {}
    for pk, kind, chat_id in TelegramMessage.objects.filter(pk__in=row_ids).values_list("pk", "kind", "chat_id"):
        groups.setdefault((kind, chat_id), []).append(pk)
    handed: list[int] = []
    for ids in groups.values():
        claimed = outbox_claim(ids, due_only=due_only)
        if claimed:
            ids, token = [r.pk for r in claimed], claimed[0].lease_token
            transaction.on_commit(lambda ids=ids, token=token: outbox_deliver_task.delay(ids, token))
            handed += ids
    return handed


@shared_task(name=RECOVERY_TASK, ignore_result=True)
def telegram_recovery_sweep_task(limit: int = 50) -> dict[str, list[int]]:
    """补发扫描（每类每次最多 limit 条）：

    - 该有却没有的行（提交后投递任务时 broker 不可用）：审批消息、提醒、超时通知、构建结果通知——建好行，交给投递任务；
    - 到了重试时间、没人持有的待发行（任务的重试丢了、worker 死在发送途中、租约到期）；
    - 显示旧状态的审批消息（编辑任务丢失）。
    """
    found: dict[str, list[int]] = {"announce": [], "refresh": [], "reminders": [], "timeout_notices": [],
                                   "build_results": [], "policy_notices": [], "deliver": []}
    if not services.telegram_configured():
        return found
    owed = approval_messages.approvals_owed(limit=limit)
    found["refresh"] = owed["refresh"]
    for approval_id in found["refresh"]:
        approval_messages_refresh_task.delay(approval_id)
    new_rows: list[int] = []
    for approval_id in owed["announce"]:
        row = approval_messages.approval_enqueue(approval_id)
        if row is not None:
            found["announce"].append(approval_id)
            new_rows.append(row.pk)
    found["reminders"] = reminders.reminders_owed(limit=limit)
    by_chat: dict[int | None, list[int]] = {}
    for pk, chat_id in Approval.objects.filter(pk__in=found["reminders"]).values_list("pk", "chat_id"):
        by_chat.setdefault(chat_id, []).append(pk)
    for chat_id, ids in by_chat.items():
        new_rows += reminders.reminders_enqueue(chat_id=chat_id, approval_ids=ids)
    for name, owed_ids, enqueue in (
        ("timeout_notices", timeouts.timeouts_owed(limit=limit), timeouts.timeout_enqueue),
        ("build_results", build_results.build_results_owed(limit=limit), build_results.build_result_enqueue),
    ):
        for owed_id in owed_ids:
            row = enqueue(owed_id)
            if row is not None:
                found[name].append(owed_id)
                new_rows.append(row.pk)
    for approval_id, notice in policy.policy_owed(limit=limit):
        rows = policy.policy_enqueue(approval_id, notice)
        if rows:
            found["policy_notices"].append(approval_id)
            new_rows += [r.pk for r in rows if r.state == MessageState.PENDING]
    _hand_over(new_rows, due_only=False)
    found["deliver"] = _hand_over(outbox_due(limit=limit * 4), due_only=True)
    if any(found.values()):
        logger.info("Telegram 补发扫描：%s", {k: len(v) for k, v in found.items() if v})
    return found


@shared_task(name=CLEANUP_TASK, ignore_result=True)
def processed_updates_cleanup_task() -> int:
    return services.processed_updates_cleanup()
