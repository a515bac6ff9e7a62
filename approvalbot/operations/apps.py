from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OperationsConfig(AppConfig):
    name = "approvalbot.operations"
    label = "operations"
    verbose_name = _("运维")

    def ready(self) -> None:
        # worker 就绪后开始写心跳（celery 信号；其他进程里这些信号不会触发）
        from . import worker  # noqa: F401
