from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JenkinsBridgeConfig(AppConfig):
    name = "jenkins_bridge"
    verbose_name = _("Jenkins 集成")

    def ready(self) -> None:
        # approvals.effects 按任务名投递：web 与 bot 进程里也要注册好任务，否则 delay 找不到
        from . import tasks  # noqa: F401

