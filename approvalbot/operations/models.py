"""运维自己的状态：进程心跳。"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Heartbeat(models.Model):
    """进程心跳：beat 触发、worker 执行的心跳任务写这里，/health 据此判断 beat 与 worker 都在工作。"""

    name = models.CharField(_("名称"), max_length=50, unique=True)
    at = models.DateTimeField(_("时间"))

    class Meta:
        verbose_name = _("心跳")
        verbose_name_plural = _("心跳")

    def __str__(self) -> str:
        return f"{self.name} @ {self.at}"
