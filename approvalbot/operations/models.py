"""运维自己的状态：进程心跳、beat 的主备租约、备份记录、告警状态。

这些行都按条件更新（谁改到行谁做事）：两个 beat、两个 worker、进程重启都不会重复备份、重复告警。
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Heartbeat(models.Model):
    """进程心跳：beat 触发、worker 执行的心跳任务写 "beat"，每个 worker 自己写 "worker:<主机名>"。"""

    name = models.CharField(_("名称"), max_length=50, unique=True)
    at = models.DateTimeField(_("时间"))

    class Meta:
        verbose_name = _("心跳")
        verbose_name_plural = _("心跳")

    def __str__(self) -> str:
        return f"{self.name} @ {self.at}"


class Lease(models.Model):
    """一个只能有一个持有者的角色（"beat"：谁在调度周期任务）。持有者按时续期，过期后别人可以接手。"""

    name = models.CharField(_("名称"), max_length=50, unique=True)
    holder = models.CharField(_("持有者"), max_length=200, blank=True)
    expires_at = models.DateTimeField(_("到期时间"))
    acquired_at = models.DateTimeField(_("接手时间"), null=True, blank=True)
    renewed_at = models.DateTimeField(_("续期时间"), null=True, blank=True)

    class Meta:
        verbose_name = _("租约")
        verbose_name_plural = _("租约")

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or '-'}"


class BackupStatus(models.TextChoices):
    RUNNING = "running", _("进行中")
    OK = "ok", _("成功")
    FAILED = "failed", _("失败")


class BackupTrigger(models.TextChoices):
    SCHEDULED = "scheduled", _("每日定时")
    MANUAL = "manual", _("手动")


class BackupRun(models.Model):
    """一次备份。每日定时备份以当天日期（TIME_ZONE）为 slot，唯一：两个 beat/worker 同一天只备份一次。"""

    trigger = models.CharField(_("触发方式"), max_length=10, choices=BackupTrigger.choices)
    slot = models.DateField(_("定时备份日期"), null=True, blank=True, unique=True)
    status = models.CharField(_("状态"), max_length=10, choices=BackupStatus.choices, default=BackupStatus.RUNNING)
    attempts = models.PositiveSmallIntegerField(_("尝试次数"), default=1)
    started_at = models.DateTimeField(_("开始时间"))
    finished_at = models.DateTimeField(_("结束时间"), null=True, blank=True)
    file_name = models.CharField(_("文件"), max_length=255, blank=True)
    size = models.PositiveBigIntegerField(_("字节数"), default=0)
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    error = models.TextField(_("错误"), blank=True)

    class Meta:
        verbose_name = _("备份记录")
        verbose_name_plural = _("备份记录")
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["status", "finished_at"], name="backuprun_status_idx")]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M} {self.status} {self.file_name}"


class AlertState(models.Model):
    """一个组件的告警状态：从什么时候开始失败、告警发了没有、什么时候恢复。

    告警与恢复通知各只发一次：发之前用条件更新认领（alerted_at 从空变成时间、failing_since 从这个值变成空）。
    """

    component = models.CharField(_("组件"), max_length=120, unique=True)
    failing_since = models.DateTimeField(_("开始失败"), null=True, blank=True)
    problem = models.TextField(_("问题"), blank=True)
    alerted_at = models.DateTimeField(_("告警时间"), null=True, blank=True)
    recovered_at = models.DateTimeField(_("最近恢复"), null=True, blank=True)
    checked_at = models.DateTimeField(_("最近检查"), null=True, blank=True)

    class Meta:
        verbose_name = _("告警状态")
        verbose_name_plural = _("告警状态")
        ordering = ["component"]

    def __str__(self) -> str:
        return f"{self.component}: {'failing' if self.failing_since else 'ok'}"
