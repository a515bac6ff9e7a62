"""approvals 的周期任务声明（由 setup_periodic_tasks 同步到 beat）。"""

from django.conf import settings

from approvalbot.periodic import PeriodicTaskSpec, register

register(PeriodicTaskSpec(
    name="approvals.heartbeat",
    task="approvals.tasks.beat_heartbeat_task",
    every_seconds=settings.SWEEP_INTERVAL_SECONDS,
    description="记录 beat 与 worker 仍在运行（/health 检查新鲜度）",
))
register(PeriodicTaskSpec(
    name="approvals.reminder_sweep",
    task="approvals.tasks.reminder_sweep_task",
    every_seconds=settings.SWEEP_INTERVAL_SECONDS,
    description="到期提醒：按群合并为一条摘要（R1–R8、X6）",
))
register(PeriodicTaskSpec(
    name="approvals.timeout_sweep",
    task="approvals.tasks.timeout_sweep_task",
    every_seconds=settings.SWEEP_INTERVAL_SECONDS,
    description="超时处理：按规则策略拒绝并终止构建，或仅标记（R9–R11）",
))
register(PeriodicTaskSpec(
    name="approvals.retention_purge",
    task="approvals.tasks.retention_purge_task",
    crontab="30 3 * * *",
    description="保留期清理：按 config/app.json 的 retention 删除过期的审批、历史、构建结果，构建日志先归档再删（D8、G6）",
))
