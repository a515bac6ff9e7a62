"""副作用出口：事务提交后按任务名投递 Celery 任务。

approvals 不在导入时依赖 telegram_bot / jenkins_bridge（DESIGN：箭头单向），只按名字投递；
投递丢了（broker 不可用）由各自的补发扫描按数据库里的状态补上。
"""

from __future__ import annotations

from approvalbot.celery import enqueue_on_commit

# 任务名是契约：实现方在各自 app 的 tasks.py 里用这些 name 注册
ANNOUNCE_TASK = "telegram_bot.tasks.approval_announce_task"  # 新审批：发送带按钮的消息
REFRESH_TASK = "telegram_bot.tasks.approval_messages_refresh_task"  # 状态/票数变化：编辑所有消息
JENKINS_RESUME_TASK = "jenkins_bridge.tasks.approval_resume_task"  # 决定后：继续/中止 Jenkins
BUILD_RESULT_NOTIFY_TASK = "telegram_bot.tasks.build_result_notify_task"  # 构建结果通知
REMINDER_DIGEST_TASK = "telegram_bot.tasks.reminder_digest_task"  # (chat_id, [approval pk…])：一群一条提醒摘要
TIMEOUT_NOTICE_TASK = "telegram_bot.tasks.timeout_notice_task"  # 超时通知（R11）
POLICY_NOTICE_TASK = "telegram_bot.tasks.policy_notice_task"  # (approval pk, 通知种类)：封版拒绝、升级


def approval_created(approval_id: int) -> None:
    enqueue_on_commit(ANNOUNCE_TASK, approval_id)


def approval_changed(approval_id: int) -> None:
    enqueue_on_commit(REFRESH_TASK, approval_id)


def approvals_closed(approval_ids: list[int], *, jenkins_action: bool, timed_out: bool = False) -> None:
    """进入终态：先继续/中止 Jenkins（流水线在等），再改消息、发超时通知。"""
    for approval_id in approval_ids:
        if jenkins_action:
            enqueue_on_commit(JENKINS_RESUME_TASK, approval_id)
        enqueue_on_commit(REFRESH_TASK, approval_id)
        if timed_out:
            enqueue_on_commit(TIMEOUT_NOTICE_TASK, approval_id)


def build_result_received(build_result_id: int) -> None:
    enqueue_on_commit(BUILD_RESULT_NOTIFY_TASK, build_result_id)


def reminders_due(chat_id: int | None, approval_ids: list[int]) -> None:
    enqueue_on_commit(REMINDER_DIGEST_TASK, chat_id, approval_ids)


def policy_notice(approval_id: int, notice: str) -> None:
    """发布策略的通知：notice 是 "frozen"（封版中的申请被拒绝）、"frozen_pending"（封版开始时拒绝了待审批）
    或 "escalated"（升级，群里点名并私信被拉进来的人）。"""
    enqueue_on_commit(POLICY_NOTICE_TASK, approval_id, notice)
