"""Celery 应用：所有慢操作与外部调用（Telegram、Jenkins）都在 worker 里跑。"""

from __future__ import annotations

import os

from celery import Celery, Task

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
