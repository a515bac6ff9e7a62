"""ASGI 入口：长轮询等待与 Telegram webhook 需要事件循环，生产用 uvicorn worker 跑它。"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvalbot.settings")
# ASGI 下 Django 每个请求可能在不同线程上，持久连接会变成“每线程一条”：web 进程不保持连接（Django 文档的建议）
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
application = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.SERVE_STATIC:
    # 嵌入式模式没有 nginx：由应用自己提供后台与日志页的静态文件
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    application = ASGIStaticFilesHandler(application)

# 长轮询在 Django 请求周期之外等待：唤醒上千个等待时不必逐个切回同步线程（jenkins_bridge/api/asgi.py）
from jenkins_bridge.api.asgi import longpoll_asgi  # noqa: E402

application = longpoll_asgi(application)
