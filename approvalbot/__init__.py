"""确保 Django 启动时 Celery 应用也被加载，@shared_task 才能绑定到它。"""

from .celery import app as celery_app

__all__ = ("celery_app",)
