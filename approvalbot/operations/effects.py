"""运维请别的 app 做的事（按任务名投递，导入时不依赖对方）：告警与恢复通知由 telegram_bot 实现。"""

ALERT_NOTIFY_TASK = "telegram_bot.tasks.alert_notify_task"
