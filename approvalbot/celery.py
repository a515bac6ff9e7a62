"""Celery 应用：所有慢操作与外部调用（Telegram、Jenkins）都在 worker 里跑。"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, Task
from celery.signals import task_failure, task_postrun, task_prerun, task_retry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvalbot.settings")


class LocalizedTask(Task):
    """任务没有请求、也没有具体的读者：一律用 TELEGRAM_LANGUAGE 渲染文字（群消息、提醒、写进库的错误说明）。

    在 __call__ 里切换，worker 与 eager（测试里在机器人处理器线程中执行）两种情况都生效；
    override 退出时恢复调用方原来的语言。
    """

    def __call__(self, *args, **kwargs):
        from django.utils import translation

        from telegram_bot.language import bot_language

        with translation.override(bot_language()):
            return super().__call__(*args, **kwargs)


app = Celery("approvalbot", task_cls=LocalizedTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


RETRY_BASE_SECONDS = 5


def retry_countdown(attempt: int, retry_after: float | None = None) -> float:
    """第 attempt 次（从 0 数）失败后等多久再试：指数退避 5、10、20… 秒，封顶 CELERY_RETRY_BACKOFF_MAX，
    带抖动（[0.8, 1] 倍：许多任务同时失败时不在同一秒一起重试）；不早于对方要求的 retry_after。

    Jenkins 操作与 Telegram 发件箱共用这一个策略。封顶值必须小于 broker 的 visibility_timeout。
    """
    import random

    from django.conf import settings

    ceiling = min(float(settings.CELERY_RETRY_BACKOFF_MAX), RETRY_BASE_SECONDS * (2 ** max(attempt, 0)))
    countdown = random.uniform(ceiling * 0.8, ceiling)
    if retry_after:
        countdown = max(countdown, float(retry_after) + 1)
    return round(countdown, 1)


def enqueue_on_commit(task_name: str, *args: object) -> None:
    """事务提交后按名字投递任务：调用方不必在导入时依赖实现任务的 app（approvals 不依赖 telegram_bot）。

    投递失败（broker 不可用）只记录：状态已提交，不会丢；各 app 的补发扫描按数据库里的状态补上。
    任务还没注册（对应 app 未安装）时记警告后跳过。
    """
    import logging

    from django.db import transaction

    def send() -> None:
        task = app.tasks.get(task_name)
        if task is None:
            logging.getLogger(__name__).warning("任务 %s 未注册，跳过（参数 %s）", task_name, args)
            return
        try:
            task.delay(*args)
        except Exception:
            logging.getLogger(__name__).exception("投递任务 %s 失败（参数 %s）", task_name, args)

    transaction.on_commit(send)


# ---------------------------------------------------------------- 任务指标（approvalbot/metrics.py）
# 信号在执行任务的进程里触发（worker 子进程、eager 时的调用方、beat 里执行的告警检查）；多进程模式下各写各的文件
_task_started: dict[str, float] = {}


@task_prerun.connect
def _task_prerun(task_id: str | None = None, task: Task | None = None, **kwargs: Any) -> None:
    if task_id:
        _task_started[task_id] = time.monotonic()
    if task is not None and not getattr(task.request, "is_eager", False):
        # CELERY_DB_REUSE_MAX 让连接跨任务保留：过期的（CONN_MAX_AGE）或坏掉的（数据库重启）在这里丢掉，
        # 与 Django 在每个请求开始时做的一样；eager 时任务跑在调用方的事务里，不能动连接
        from django.db import close_old_connections

        close_old_connections()


@task_postrun.connect
def _task_postrun(task_id: str | None = None, task: Task | None = None, state: str | None = None,
                  **kwargs: Any) -> None:
    started = _task_started.pop(task_id, None) if task_id else None
    if started is not None and task is not None:
        from approvalbot.metrics import CELERY_TASK_DURATION

        CELERY_TASK_DURATION.labels(task=task.name, state=(state or "UNKNOWN").lower()).observe(
            time.monotonic() - started)


@task_failure.connect
def _task_failure(sender: Task | None = None, **kwargs: Any) -> None:
    from approvalbot.metrics import CELERY_TASK_FAILURES

    CELERY_TASK_FAILURES.labels(task=getattr(sender, "name", "unknown")).inc()


@task_retry.connect
def _task_retry(sender: Task | None = None, **kwargs: Any) -> None:
    from approvalbot.metrics import CELERY_TASK_RETRIES

    CELERY_TASK_RETRIES.labels(task=getattr(sender, "name", "unknown")).inc()
