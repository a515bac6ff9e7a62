"""运维的周期任务。"""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from .models import Heartbeat

logger = logging.getLogger(__name__)

ALERTS_TASK = "operations.tasks.alerts_evaluate_task"
BACKUP_TASK = "operations.tasks.backup_daily_task"


@shared_task(name="operations.tasks.beat_heartbeat_task", ignore_result=True)
def beat_heartbeat_task() -> str:
    """beat 每个周期触发、worker 执行；/health 用最后时间判断两者都还活着。"""
    now = timezone.now()
    Heartbeat.objects.update_or_create(name="beat", defaults={"at": now})
    return now.isoformat()


# run_in_beat：调度它的 beat 在自己进程里执行（approvalbot.operations.beat），worker 或 broker 停了也照常检查
@shared_task(name=ALERTS_TASK, ignore_result=True, run_in_beat=True)
def alerts_evaluate_task() -> dict[str, list[str]]:
    """每分钟检查各组件，持续失败的发一次告警、恢复时发一次恢复通知（O3/O4）。"""
    from .alerts import alerts_evaluate

    result = alerts_evaluate()
    if result["alerted"] or result["recovered"]:
        logger.info("告警检查：%s", result)
    return result


# 备份可能比默认的任务时限（60/90 秒）长得多；仍要短于 broker 的 visibility_timeout（1 小时）
@shared_task(name=BACKUP_TASK, ignore_result=True, soft_time_limit=1800, time_limit=1900)
def backup_daily_task() -> str | None:
    """每几分钟由 beat 触发：到了 backup.time 之后当天备份一次（D7）。失败记在 BackupRun 上，由告警报告。"""
    from .backups import BackupError, backup_scheduled

    try:
        run = backup_scheduled()
    except BackupError:
        return None  # 已记录（BackupRun.error + ERROR 日志）；告警检查会报告
    return run.file_name if run else None
