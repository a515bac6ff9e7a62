"""WSGI 入口（管理后台、runserver 调试用；生产推荐 ASGI）。"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvalbot.settings")
application = get_wsgi_application()
