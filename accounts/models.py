"""谁可以做什么：角色、审批人身份、项目规则。

来自 config/users.json 的记录标记 source=file，重新加载时只动这些；后台手工建的（source=admin）永不被覆盖。
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

# 一次审批最长等多久（7 天）：规则、配置文件与 API 都以它为上限
MAX_TIMEOUT_MINUTES = 7 * 24 * 60


class Source(models.TextChoices):
    FILE = "file", _("配置文件")
    ADMIN = "admin", _("管理后台")


class Role(models.Model):
    key = models.SlugField(_("标识"), max_length=64, unique=True, allow_unicode=True)
    name = models.CharField(_("名称"), max_length=100)
    is_admin = models.BooleanField(_("管理员"), default=False, help_text=_("管理员拥有全部权限（P4）"))
    can_use_bot = models.BooleanField(_("可使用机器人"), default=True)
    can_approve = models.BooleanField(_("可审批"), default=True)
    is_active = models.BooleanField(_("启用"), default=True)
    source = models.CharField(_("来源"), max_length=10, choices=Source.choices, default=Source.ADMIN)

    class Meta:
        verbose_name = _("角色")
        verbose_name_plural = _("角色")
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name or self.key


class Approver(models.Model):
    """一个人的审批身份。以数字 Telegram id 识别（X13），用户名只用于首次绑定。"""

    username = models.CharField(_("用户名"), max_length=150, unique=True)
    display_name = models.CharField(_("显示名"), max_length=150, blank=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("后台账号"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="approver",
    )
    role = models.ForeignKey(Role, verbose_name=_("角色"), on_delete=models.PROTECT, related_name="approvers")
    # Telegram 用户 id 最多 52 位，必须 BigInteger
    telegram_id = models.BigIntegerField(_("Telegram 数字 ID"), null=True, blank=True, unique=True)
    telegram_username = models.CharField(
        _("Telegram 用户名"), max_length=64, blank=True, db_index=True, help_text=_("不带 @，小写")
    )
    telegram_bound_at = models.DateTimeField(_("绑定时间"), null=True, blank=True)
    email = models.EmailField(_("邮箱"), blank=True)
    jenkins_user = models.CharField(_("Jenkins 用户 ID"), max_length=150, blank=True, db_index=True)
    projects = models.JSONField(
        _("可审批项目"), default=list, blank=True, help_text=_("项目名或通配模式列表；空表示不限")
    )
    environments = models.JSONField(
        _("可审批环境"), default=list, blank=True, help_text=_("环境列表；空表示不限")
    )
    is_active = models.BooleanField(_("启用"), default=True)
    source = models.CharField(_("来源"), max_length=10, choices=Source.choices, default=Source.ADMIN)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("审批人")
        verbose_name_plural = _("审批人")
        ordering = ["username"]

    def __str__(self) -> str:
        return self.label

    def save(self, *args, **kwargs) -> None:
        # 用户名统一去 @、小写，绑定与查找才不会因写法不同而错过
        self.telegram_username = self.telegram_username.lstrip("@").lower()
        super().save(*args, **kwargs)

    @property
    def label(self) -> str:
        """给人看的名字：显示名优先，否则用户名。"""
        return self.display_name or self.username


class TimeoutPolicy(models.TextChoices):
    REJECT = "reject", _("超时即拒绝并终止构建")
    MARK = "mark", _("仅标记超时")


class ProjectRule(models.Model):
    """项目（及可选环境）→ 审批人、负责人、群、票数、超时与提醒策略。

    environment 为空的是项目基础规则；同项目带环境的行覆盖其非空字段（P6：生产更严格）。
    is_default=True 的行在没有任何项目匹配时使用（P8）。
    """

    project = models.CharField(_("项目"), max_length=200, db_index=True)
    environment = models.CharField(_("环境"), max_length=32, blank=True, default="")
    aliases = models.JSONField(_("别名"), default=list, blank=True)
    patterns = models.JSONField(_("匹配模式"), default=list, blank=True, help_text=_("如 folder/shop-*"))
    approvers = models.ManyToManyField(Approver, verbose_name=_("审批人"), blank=True, related_name="approver_rules")
    approver_roles = models.ManyToManyField(Role, verbose_name=_("可审批角色"), blank=True, related_name="rules")
    owners = models.ManyToManyField(Approver, verbose_name=_("项目负责人"), blank=True, related_name="owned_rules")
    chat_id = models.BigIntegerField(_("Telegram 群 ID"), null=True, blank=True)
    required_approvals = models.PositiveSmallIntegerField(_("所需同意票数"), null=True, blank=True)
    timeout_minutes = models.PositiveIntegerField(_("超时（分钟）"), null=True, blank=True)
    timeout_policy = models.CharField(
        _("超时策略"), max_length=10, choices=TimeoutPolicy.choices, blank=True, default=""
    )
    stop_build = models.BooleanField(
        _("拒绝/超时后停止构建"), null=True, blank=True, help_text=_("除中止 input 外，再调用 /stop")
    )
    reminder_interval_minutes = models.PositiveIntegerField(_("提醒间隔（分钟）"), null=True, blank=True)
    reminder_backoff = models.FloatField(_("提醒间隔倍数"), null=True, blank=True)
    reminder_max_count = models.PositiveSmallIntegerField(_("最多提醒次数"), null=True, blank=True)
    is_default = models.BooleanField(_("默认规则"), default=False)
    is_active = models.BooleanField(_("启用"), default=True)
    source = models.CharField(_("来源"), max_length=10, choices=Source.choices, default=Source.ADMIN)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("项目规则")
        verbose_name_plural = _("项目规则")
        ordering = ["project", "environment"]
        constraints = [
            models.UniqueConstraint(fields=["project", "environment"], name="projectrule_project_env_uniq"),
            models.CheckConstraint(
                condition=models.Q(required_approvals__isnull=True) | models.Q(required_approvals__gte=1),
                name="projectrule_required_approvals_gte_1",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} [{self.environment}]" if self.environment else self.project


class ConfigState(models.Model):
    """最近一次成功加载的配置文件（C8：坏文件被拒绝时，这里的“上一个好配置”继续生效）。"""

    name = models.CharField(_("配置"), max_length=20, unique=True)  # "app" 或 "users"
    path = models.CharField(_("文件路径"), max_length=500, blank=True)
    data = models.JSONField(_("内容"), default=dict)
    checksum = models.CharField(_("校验和"), max_length=64, blank=True)
    loaded_at = models.DateTimeField(_("加载时间"), null=True, blank=True)
    last_error = models.TextField(_("最近一次错误"), blank=True)
    last_error_at = models.DateTimeField(_("错误时间"), null=True, blank=True)
    # 最近一次被拒绝的文件内容：周期热加载见到同一份坏内容就不再校验、不再通知（跨进程、跨重启）
    refused_checksum = models.CharField(_("被拒绝内容的校验和"), max_length=64, blank=True)

    class Meta:
        verbose_name = _("配置状态")
        verbose_name_plural = _("配置状态")

    def __str__(self) -> str:
        return self.name
