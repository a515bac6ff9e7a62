"""Celery 应用：所有慢操作与外部调用（Telegram、Jenkins）都在 worker 里跑。"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvalbot.settings")

app = Celery("approvalbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
