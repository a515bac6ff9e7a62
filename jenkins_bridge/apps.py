from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JenkinsBridgeConfig(AppConfig):
    name = "jenkins_bridge"
    verbose_name = _("Jenkins 集成")
