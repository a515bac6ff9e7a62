"""运维的周期任务。"""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from .models import Heartbeat


@shared_task(name="operations.tasks.beat_heartbeat_task", ignore_result=True)
def beat_heartbeat_task() -> str:
    """beat 每个周期触发、worker 执行；/health 用最后时间判断两者都还活着。"""
    now = timezone.now()
    Heartbeat.objects.update_or_create(name="beat", defaults={"at": now})
    return now.isoformat()
