"""jenkins_bridge 的周期任务声明（由 setup_periodic_tasks 同步到 beat）。"""

from django.conf import settings

from approvalbot.periodic import PeriodicTaskSpec, register

register(PeriodicTaskSpec(
    name="jenkins_bridge.action_recovery",
    task="jenkins_bridge.tasks.jenkins_action_recovery_task",
    every_seconds=60,
    description="补发 broker 丢失的 Jenkins 继续/中止操作",
))
register(PeriodicTaskSpec(
    name="jenkins_bridge.build_mirror",
    task="jenkins_bridge.tasks.jenkins_build_mirror_task",
    every_seconds=max(settings.SWEEP_INTERVAL_SECONDS, 60),
    description="X12：发现已结束或已在 Jenkins 中处理的构建，关闭对应审批",
))
