"""accounts 的周期任务声明（由 setup_periodic_tasks 同步到 beat）。"""

from approvalbot.periodic import PeriodicTaskSpec, register

register(PeriodicTaskSpec(
    name="accounts.config_reload",
    task="accounts.tasks.config_reload_task",
    every_seconds=30,
    description="配置文件变化时重新校验并加载 users.json 与 app.json（C5/C6）；坏文件被拒绝，旧配置继续生效（C8）",
))
