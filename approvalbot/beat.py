"""beat 的调度器：启动时把 settings.CELERY_BEAT_SCHEDULE 装进 django-celery-beat 的表。

只运行 `celery -A approvalbot beat` 就会调度全部周期任务，没有可以忘掉的部署步骤。
代码里的条目以 settings.BEAT_MANAGED_PREFIX 命名；代码里删掉的条目在下次 beat 启动时停用（保留行，留下运维痕迹），
后台手工建的周期任务（没有这个前缀）不受影响。两个 beat 同时启动也安全：写入是按名字的 update_or_create。
"""

from __future__ import annotations

import logging

from django.conf import settings
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)


def disable_removed(wanted: set[str]) -> list[str]:
    """停用代码里已删除的托管条目；返回被停用的名字。"""
    stale = list(PeriodicTask.objects.filter(name__startswith=settings.BEAT_MANAGED_PREFIX, enabled=True)
                 .exclude(name__in=wanted).values_list("name", flat=True))
    if stale:
        PeriodicTask.objects.filter(name__in=stale).update(enabled=False)
        # 批量 update 不触发信号：手动标记“调度已变”，其他正在运行的 beat 会重新读表
        PeriodicTasks.update_changed()
        logger.warning("周期任务已从代码中删除，已停用：%s", ", ".join(stale))
    return stale


class Scheduler(DatabaseScheduler):
    """DatabaseScheduler + 托管条目的安装与停用。settings.CELERY_BEAT_SCHEDULER 指向它的子类
    approvalbot.operations.beat.LeaderScheduler（多个 beat 时只有持有租约的那个调度）。"""

    def setup_schedule(self) -> None:
        entries = self.app.conf.beat_schedule or {}
        # 先停用再读表：停用的条目不会进入本进程的调度
        disable_removed({name for name in entries if name.startswith(settings.BEAT_MANAGED_PREFIX)})
        self.install_default_entries(self.schedule)
        self.update_from_dict(entries)
