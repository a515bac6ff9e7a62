"""ASGI 入口：长轮询等待与 Telegram webhook 需要事件循环，生产用 uvicorn worker 跑它。"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvalbot.settings")
application = get_asgi_application()
