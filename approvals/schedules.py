"""approvals 的周期任务声明（由 setup_periodic_tasks 同步到 beat）。"""

from django.conf import settings

from approvalbot.periodic import PeriodicTaskSpec, register

register(PeriodicTaskSpec(
    name="approvals.heartbeat",
    task="approvals.tasks.beat_heartbeat_task",
    every_seconds=settings.SWEEP_INTERVAL_SECONDS,
    description="记录 beat 仍在运行（/health 检查 beat 新鲜度）",
))
