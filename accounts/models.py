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
    is_admin = models.BooleanField(_("管理员"), default=False, help_text=_("管理员拥有全部权限"))
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
    # 一人可兼任多个角色（X1 按角色法定票、规则的可审批角色）；管理员、能否用机器人与审批仍只看 role
    extra_roles = models.ManyToManyField(
        Role, verbose_name=_("兼任角色"), blank=True, related_name="extra_approvers",
        help_text=_("用于项目规则的可审批角色与必需角色；管理员权限只看主角色"),
    )
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


class FreezePending(models.TextChoices):
    WAIT = "wait", _("继续等待")
    REFUSE = "refuse", _("拒绝")


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
    # X1：除票数外，还要这些角色各有一人同意（一人只算一个角色）
    required_roles = models.ManyToManyField(
        Role, verbose_name=_("必需角色"), blank=True, related_name="required_by_rules",
        help_text=_("每个角色都要有一人同意，审批才通过"),
    )
    # X15：无人决定时拉进来的人
    escalation_approvers = models.ManyToManyField(
        Approver, verbose_name=_("升级审批人"), blank=True, related_name="escalation_rules"
    )
    escalation_roles = models.ManyToManyField(Role, verbose_name=_("升级角色"), blank=True, related_name="escalation_rules")
    escalate_after_reminders = models.PositiveSmallIntegerField(
        _("提醒几次后升级"), null=True, blank=True, help_text=_("提醒这么多次仍无人决定时升级")
    )
    escalate_before_minutes = models.PositiveIntegerField(
        _("截止前几分钟升级"), null=True, blank=True, help_text=_("距截止不到这么多分钟仍无人决定时升级")
    )
    freeze_pending = models.CharField(
        _("封版开始时的待审批"), max_length=10, choices=FreezePending.choices, blank=True, default="",
        help_text=_("留空表示继承（默认继续等待）"),
    )
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


# ---------------------------------------------------------------- 发布策略：封版、委托与策略审计


class FreezeKind(models.TextChoices):
    WEEKLY = "weekly", _("每周重复")
    ONCE = "once", _("一次性")


class Weekday(models.IntegerChoices):
    MONDAY = 0, _("周一")
    TUESDAY = 1, _("周二")
    WEDNESDAY = 2, _("周三")
    THURSDAY = 3, _("周四")
    FRIDAY = 4, _("周五")
    SATURDAY = 5, _("周六")
    SUNDAY = 6, _("周日")


ALL_ENVIRONMENTS = "*"


class FreezeWindow(models.Model):
    """封版窗口（X4）：期间的发布申请被记录并立即拒绝，除非是紧急发布。

    weekly：每周从 start_day start_time 到 end_day end_time（可跨周，如周五 18:00 → 周一 09:00），按 timezone 的墙上时间；
    once：starts_at 到 ends_at（节假日、临时封版）。来自 app.json 的（source=file）由加载器按 key 同步，
    从文件删掉即停用；后台与 Telegram 建的（source=admin）加载器永不改动。
    """

    # 配置文件里的键：加载器按它同步 source=file 的窗口（键来自 JSON 对象，天然不重复）
    key = models.CharField(_("标识"), max_length=64, blank=True, help_text=_("配置文件里的键；后台新建的可留空"))
    name = models.CharField(_("名称"), max_length=100)
    kind = models.CharField(_("类型"), max_length=10, choices=FreezeKind.choices, default=FreezeKind.ONCE)
    environments = models.JSONField(
        _("环境"), default=list, help_text=_("归一化的环境名列表；* 表示所有环境")
    )
    projects = models.JSONField(_("项目"), default=list, blank=True, help_text=_("项目名或通配模式；空表示所有项目"))
    start_day = models.PositiveSmallIntegerField(_("开始星期"), choices=Weekday.choices, null=True, blank=True)
    start_time = models.TimeField(_("开始时刻"), null=True, blank=True)
    end_day = models.PositiveSmallIntegerField(_("结束星期"), choices=Weekday.choices, null=True, blank=True)
    end_time = models.TimeField(_("结束时刻"), null=True, blank=True)
    starts_at = models.DateTimeField(_("开始时间"), null=True, blank=True)
    ends_at = models.DateTimeField(_("结束时间"), null=True, blank=True)
    timezone = models.CharField(_("时区"), max_length=64, blank=True, help_text=_("IANA 时区名；留空用 TIME_ZONE"))
    reason = models.TextField(_("原因"), blank=True)
    is_active = models.BooleanField(_("启用"), default=True)
    source = models.CharField(_("来源"), max_length=10, choices=Source.choices, default=Source.ADMIN)
    created_by = models.ForeignKey(
        Approver, verbose_name=_("创建人"), on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("封版窗口")
        verbose_name_plural = _("封版窗口")
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(kind="weekly", start_day__isnull=False, start_time__isnull=False,
                                    end_day__isnull=False, end_time__isnull=False))
                | (models.Q(kind="once", starts_at__isnull=False, ends_at__isnull=False)
                   & models.Q(ends_at__gt=models.F("starts_at"))),
                name="freezewindow_kind_fields",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Delegation(models.Model):
    """审批权委托（X16）：delegator 在 [starts_at, ends_at) 内把自己的审批权交给 delegate，可限项目与环境。

    到期自动失效；撤销写 revoked_at。委托得来的权不能再委托：判断权限时只看委托人自己的权限。
    """

    delegator = models.ForeignKey(Approver, verbose_name=_("委托人"), on_delete=models.CASCADE,
                                  related_name="delegations_given")
    delegate = models.ForeignKey(Approver, verbose_name=_("受托人"), on_delete=models.CASCADE,
                                 related_name="delegations_received")
    starts_at = models.DateTimeField(_("开始时间"))
    ends_at = models.DateTimeField(_("结束时间"))
    projects = models.JSONField(_("限定项目"), default=list, blank=True, help_text=_("项目名或通配模式；空表示不限"))
    environments = models.JSONField(_("限定环境"), default=list, blank=True, help_text=_("环境列表；空表示不限"))
    reason = models.TextField(_("原因"), blank=True)
    created_by = models.ForeignKey(Approver, verbose_name=_("创建人"), on_delete=models.SET_NULL, null=True,
                                   blank=True, related_name="+")
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    revoked_at = models.DateTimeField(_("撤销时间"), null=True, blank=True)
    revoked_by = models.ForeignKey(Approver, verbose_name=_("撤销人"), on_delete=models.SET_NULL, null=True,
                                   blank=True, related_name="+")

    class Meta:
        verbose_name = _("审批委托")
        verbose_name_plural = _("审批委托")
        ordering = ["-starts_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(delegator=models.F("delegate")), name="delegation_not_self"),
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="delegation_range"),
        ]
        indexes = [models.Index(fields=["revoked_at", "ends_at"], name="delegation_active_idx")]

    def __str__(self) -> str:
        return f"{self.delegator} → {self.delegate}"


class PolicyEventKind(models.TextChoices):
    FREEZE_STARTED = "freeze_started", _("开始临时封版")
    FREEZE_ENDED = "freeze_ended", _("结束临时封版")
    FREEZE_CHANGED = "freeze_changed", _("修改封版窗口")
    FREEZE_OVERRIDE = "freeze_override", _("紧急发布突破封版")
    DELEGATION_GRANTED = "delegation_granted", _("委托审批权")
    DELEGATION_USED = "delegation_used", _("代为审批")
    DELEGATION_REVOKED = "delegation_revoked", _("撤销委托")


class PolicyEvent(models.Model):
    """发布策略的审计（只追加）：封版的开始与结束、紧急发布、委托的授予、使用与撤销。

    审批编号存成文本：accounts 不依赖 approvals（箭头单向）。
    """

    kind = models.CharField(_("类型"), max_length=20, choices=PolicyEventKind.choices)
    actor = models.ForeignKey(Approver, verbose_name=_("操作人"), on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="+")
    actor_name = models.CharField(_("操作人（快照）"), max_length=150, blank=True)
    channel = models.CharField(_("渠道"), max_length=10, blank=True)
    freeze_window = models.ForeignKey(FreezeWindow, verbose_name=_("封版窗口"), on_delete=models.SET_NULL,
                                      null=True, blank=True, related_name="events")
    delegation = models.ForeignKey(Delegation, verbose_name=_("委托"), on_delete=models.SET_NULL, null=True,
                                   blank=True, related_name="events")
    approval_public_id = models.CharField(_("审批编号"), max_length=16, blank=True, db_index=True)
    details = models.JSONField(_("详情"), default=dict, blank=True)
    created_at = models.DateTimeField(_("时间"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("策略审计")
        verbose_name_plural = _("策略审计")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.actor_name}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("PolicyEvent is append-only")
        super().save(*args, **kwargs)
