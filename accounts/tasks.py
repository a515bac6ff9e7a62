"""accounts 的 Celery 入口：配置文件热加载（C5–C8）。"""

from __future__ import annotations

import logging

from celery import shared_task

from approvalbot.celery import enqueue_on_commit

from .config import LoadResult, config_reload

logger = logging.getLogger(__name__)

# 由 telegram_bot 实现：config_changed_notify_task(name, ok, summary)
CONFIG_CHANGED_NOTIFY_TASK = "telegram_bot.tasks.config_changed_notify_task"


def config_change_notify(result: LoadResult) -> None:
    """C7：配置变化（生效或被拒）记一行日志，提交后再发 Telegram 通知。"""
    if result.ok:
        logger.info("配置已更新：%s", result.describe())
    else:
        logger.error("配置被拒绝：%s", result.describe())
    # broker 故障不能影响已生效的配置：投递失败只记日志（日志里已有这次变化）
    enqueue_on_commit(CONFIG_CHANGED_NOTIFY_TASK, result.name, result.ok, result.describe())


@shared_task(name="accounts.tasks.config_reload_task", ignore_result=True)
def config_reload_task() -> dict[str, str]:
    """beat 每 30 秒触发：文件内容变了才重新校验与应用，坏文件被拒绝、旧配置继续生效。幂等。

    被拒绝的内容记在 ConfigState.refused_checksum：哪个 worker、重启前后，同一份坏内容都只报一次。
    """
    outcome: dict[str, str] = {}
    for result in config_reload(apply=True, force=False):
        outcome[result.name] = result.status
        for warning in result.warnings:
            logger.warning("%s", warning)
        if result.status in ("applied", "refused"):
            config_change_notify(result)
    return outcome
