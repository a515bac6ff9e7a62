"""telegram_bot 的周期任务声明（由 setup_periodic_tasks 同步到 beat）。"""

from django.conf import settings

from approvalbot.periodic import PeriodicTaskSpec, register

register(PeriodicTaskSpec(
    name="telegram_bot.recovery_sweep",
    task="telegram_bot.tasks.telegram_recovery_sweep_task",
    every_seconds=max(settings.SWEEP_INTERVAL_SECONDS * 2, 30),
    kwargs={"limit": 50},
    description="补发没有发出的审批消息、补改显示旧状态的消息、重投丢失的构建结果通知（broker 丢任务、worker 死掉或 Telegram 故障之后）",
))

register(PeriodicTaskSpec(
    name="telegram_bot.processed_updates_cleanup",
    task="telegram_bot.tasks.processed_updates_cleanup_task",
    crontab="17 4 * * *",
    description="清理 7 天前的已处理 update 记录（webhook 去重只需记住几天）",
))
