"""approvals 的 Celery 入口：薄、幂等，只调用服务。"""

from __future__ import annotations

import logging

from celery import shared_task

from .policy_sweeps import policy_sweep
from .retention import approvals_purge_old
from .sweeps import reminders_sweep, timeouts_sweep

logger = logging.getLogger(__name__)


@shared_task(name="approvals.tasks.reminder_sweep_task", ignore_result=True)
def reminder_sweep_task() -> int:
    """认领到期提醒并按群投递摘要。两个 beat 同时触发也安全：行在事务里被锁定认领。"""
    total = reminders_sweep()
    if total:
        logger.info("提醒扫描：%s 条审批到期", total)
    return total


@shared_task(name="approvals.tasks.timeout_sweep_task", ignore_result=True)
def timeout_sweep_task() -> int:
    """把过了截止时间的待审批置为超时，并按策略处理 Jenkins 与通知。"""
    total = timeouts_sweep()
    if total:
        logger.info("超时扫描：%s 条审批超时", total)
    return total


@shared_task(name="approvals.tasks.policy_sweep_task", ignore_result=True)
def policy_sweep_task() -> dict[str, int]:
    """发布策略：封版开始时拒绝规则要求拒绝的待审批（X4），无人决定时升级（X15）。重复触发无害。"""
    counts = policy_sweep()
    if any(counts.values()):
        logger.info("发布策略扫描：%s", counts)
    return counts


@shared_task(name="approvals.tasks.retention_purge_task", ignore_result=True)
def retention_purge_task() -> dict:
    """每天一次的保留期清理（D8/G6）。服务自带时间预算与分批，重复触发或两个 beat 同时触发都无害。"""
    return approvals_purge_old()
