"""审批领域模型。状态只通过 approvals.services 改变；这里不放业务逻辑。"""

from __future__ import annotations

import secrets

from django.db import models
from django.utils.translation import gettext_lazy as _

# Crockford base32：去掉易混的 I L O U，人手输入 /approve <id> 不易出错
PUBLIC_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PUBLIC_ID_LENGTH = 8  # 40 bit 随机，不可猜测，又短到能手打


def generate_public_id() -> str:
    return "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def normalize_public_id(raw: str) -> str:
    """宽容人手输入：大小写不敏感，I/L→1、O→0（Crockford 规则）。"""
    value = raw.strip().upper().replace("-", "")
    return value.translate(str.maketrans({"I": "1", "L": "1", "O": "0"}))


class Status(models.TextChoices):
    PENDING = "pending", _("待审批")
    APPROVED = "approved", _("已同意")
    REJECTED = "rejected", _("已拒绝")
    TIMEOUT = "timeout", _("已超时")
    CANCELLED = "cancelled", _("已取消")


TERMINAL_STATUSES = (Status.APPROVED, Status.REJECTED, Status.TIMEOUT, Status.CANCELLED)


class ResumeMode(models.TextChoices):
    INPUT = "input", _("Jenkins input 步骤")
    WEBHOOK = "webhook", _("Webhook 回调")
    POLL = "poll", _("流水线轮询")


class Channel(models.TextChoices):
    TELEGRAM = "telegram", _("Telegram")
    API = "api", _("API")
    ADMIN = "admin", _("管理后台")
    SYSTEM = "system", _("系统")
    JENKINS = "jenkins", _("Jenkins")


class JenkinsActionState(models.TextChoices):
    NONE = "none", _("无需操作")
    PENDING = "pending", _("等待执行")
    DONE = "done", _("已完成")
    FAILED = "failed", _("失败")


class Approval(models.Model):
    public_id = models.CharField(_("审批编号"), max_length=16, unique=True, default=generate_public_id)
    jenkins_server = models.ForeignKey(
        "jenkins_bridge.JenkinsServer", verbose_name=_("Jenkins"), on_delete=models.PROTECT, related_name="approvals"
    )
    job_name = models.CharField(_("任务"), max_length=255)
    build_number = models.PositiveIntegerField(_("构建号"))
    build_url = models.URLField(_("构建链接"), max_length=500, blank=True)
    # input 步骤 id；同一构建可有多个审批阶段，幂等键包含它
    input_id = models.CharField(_("阶段/input ID"), max_length=100, blank=True, default="")
    # 任务被删除重建后构建号会从 1 重来：同一个键隔了很久再出现时是另一次构建，代数加一
    generation = models.PositiveSmallIntegerField(_("构建号复用代数"), default=0)
    callback_url = models.URLField(_("回调地址"), max_length=500, blank=True)
    resume_mode = models.CharField(_("恢复方式"), max_length=10, choices=ResumeMode.choices, default=ResumeMode.POLL)

    project = models.CharField(_("项目"), max_length=200, db_index=True)
    project_rule = models.ForeignKey(
        "accounts.ProjectRule", verbose_name=_("项目规则"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="approvals",
    )
    environment = models.CharField(_("环境"), max_length=32, db_index=True)
    environment_raw = models.CharField(_("环境（原值）"), max_length=64, blank=True)
    version = models.CharField(_("版本"), max_length=200, blank=True)
    description = models.TextField(_("发布说明"), blank=True)
    operation = models.CharField(_("操作类型"), max_length=200, blank=True)
    requested_by = models.CharField(_("发起人"), max_length=150, blank=True)
    requester = models.ForeignKey(
        "accounts.Approver", verbose_name=_("发起人（已识别）"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="requested_approvals",
    )

    status = models.CharField(_("状态"), max_length=10, choices=Status.choices, default=Status.PENDING)
    required_approvals = models.PositiveSmallIntegerField(_("所需同意票数"), default=1)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)
    expires_at = models.DateTimeField(_("截止时间"))
    decided_at = models.DateTimeField(_("决定时间"), null=True, blank=True)
    decided_by = models.ForeignKey(
        "accounts.Approver", verbose_name=_("决定人"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="decided_approvals",
    )
    # 快照：审批人后来被删除或改名，记录仍能说清是谁
    decided_by_name = models.CharField(_("决定人（快照）"), max_length=150, blank=True)
    decision_channel = models.CharField(_("决定渠道"), max_length=10, choices=Channel.choices, blank=True)
    reason = models.TextField(_("理由"), blank=True)
    superseded_by = models.ForeignKey(
        "self", verbose_name=_("被取代于"), on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    # 创建时从规则算好并快照，扫描时无需再解析规则
    timeout_policy = models.CharField(_("超时策略"), max_length=10, default="reject")
    stop_build = models.BooleanField(_("拒绝/超时后停止构建"), default=False)
    reminder_policy = models.JSONField(_("提醒策略"), default=dict, blank=True)
    next_reminder_at = models.DateTimeField(_("下次提醒"), null=True, blank=True)
    reminder_count = models.PositiveSmallIntegerField(_("已提醒次数"), default=0)
    chat_id = models.BigIntegerField(_("通知群 ID"), null=True, blank=True)

    jenkins_action_state = models.CharField(
        _("Jenkins 操作状态"), max_length=10, choices=JenkinsActionState.choices, default=JenkinsActionState.NONE
    )
    jenkins_action_attempts = models.PositiveSmallIntegerField(_("Jenkins 操作尝试次数"), default=0)
    jenkins_action_error = models.TextField(_("Jenkins 操作错误"), blank=True)
    jenkins_action_at = models.DateTimeField(_("Jenkins 操作时间"), null=True, blank=True)
    # 谁在执行、何时该再执行：worker 死在执行途中（租约到期）或 broker 丢了消息（到了时间没人认领）时，
    # 恢复扫描据此在一分钟内补做，不必等 broker 的 visibility_timeout
    jenkins_action_due_at = models.DateTimeField(_("Jenkins 操作计划时间"), null=True, blank=True)
    jenkins_action_lease = models.CharField(_("Jenkins 操作执行者"), max_length=32, blank=True)
    jenkins_action_lease_until = models.DateTimeField(_("Jenkins 操作租约到期"), null=True, blank=True)

    # 发布策略（快照，创建时从规则与封版窗口算好）：终态的机器可读原因、封版与紧急发布、按角色法定票、升级
    reason_code = models.CharField(_("原因代码"), max_length=20, blank=True, db_index=True,
                                   help_text=_("如 frozen：封版期间被拒绝"))
    emergency = models.BooleanField(_("紧急发布"), default=False)
    emergency_reason = models.TextField(_("紧急发布理由"), blank=True)
    admin_approval_required = models.BooleanField(
        _("需要管理员同意"), default=False, help_text=_("封版期间的紧急发布：规则的票数之外还要一位管理员同意")
    )
    freeze_window = models.ForeignKey(
        "accounts.FreezeWindow", verbose_name=_("封版窗口"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    freeze_name = models.CharField(_("封版（快照）"), max_length=100, blank=True)
    freeze_ends_at = models.DateTimeField(_("封版结束"), null=True, blank=True)
    freeze_pending = models.CharField(_("封版开始时的待审批"), max_length=10, default="wait")
    # 快照成列表而不是多对多：保留期清理按批删除审批时不多出关联表的语句
    required_roles = models.JSONField(_("必需角色"), default=list, blank=True, help_text=_("角色标识列表"))
    escalate_after_reminders = models.PositiveSmallIntegerField(_("提醒几次后升级"), null=True, blank=True)
    escalate_at = models.DateTimeField(_("升级时间"), null=True, blank=True)
    escalated_at = models.DateTimeField(_("已升级于"), null=True, blank=True)
    escalation_reason = models.CharField(_("升级原因"), max_length=20, blank=True)
    escalated_to = models.JSONField(_("升级审批人"), default=list, blank=True,
                                    help_text=_("被拉进来的审批人 id：只对这一条审批有决定权"))

    class Meta:
        verbose_name = _("审批")
        verbose_name_plural = _("审批")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["jenkins_server", "job_name", "build_number", "input_id", "generation"],
                name="approval_build_stage_gen_uniq",
            ),
            models.CheckConstraint(condition=models.Q(required_approvals__gte=1), name="approval_required_gte_1"),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in Status]), name="approval_status_valid"
            ),
            # 终态必有决定时间，待审批必无：数据库层面防止“半个决定”
            models.CheckConstraint(
                condition=(models.Q(status=Status.PENDING, decided_at__isnull=True))
                | (~models.Q(status=Status.PENDING) & models.Q(decided_at__isnull=False)),
                name="approval_decided_at_matches_status",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_reminder_at"], name="approval_reminder_sweep_idx"),
            models.Index(fields=["status", "expires_at"], name="approval_timeout_sweep_idx"),
            models.Index(fields=["project", "environment", "status"], name="approval_project_env_idx"),
            models.Index(fields=["jenkins_server", "job_name", "environment", "status"], name="approval_supersede_idx"),
            models.Index(fields=["status", "created_at"], name="approval_status_created_idx"),
            models.Index(fields=["status", "decided_at"], name="approval_status_decided_idx"),  # 保留期清理
            models.Index(fields=["status", "escalated_at", "escalate_at"], name="approval_escalation_sweep_idx"),
            models.Index(fields=["jenkins_action_state", "jenkins_action_due_at"], name="approval_action_recovery_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.project}#{self.build_number}"

    @property
    def is_pending(self) -> bool:
        return self.status == Status.PENDING

    @property
    def approvals_received(self) -> int:
        return sum(1 for v in self.votes.all() if v.decision == Vote.Decision.APPROVE)


class Vote(models.Model):
    """N 选 M（X1）：每人一票；第一张拒绝票即拒绝。"""

    class Decision(models.TextChoices):
        APPROVE = "approve", _("同意")
        REJECT = "reject", _("拒绝")

    approval = models.ForeignKey(Approval, verbose_name=_("审批"), on_delete=models.CASCADE, related_name="votes")
    approver = models.ForeignKey(
        "accounts.Approver", verbose_name=_("审批人"), on_delete=models.PROTECT, related_name="votes"
    )
    decision = models.CharField(_("决定"), max_length=10, choices=Decision.choices)
    # X16：受托人代委托人投的票（显示为“B（代 A）”）；委托人与受托人合算一位审批人
    on_behalf_of = models.ForeignKey(
        "accounts.Approver", verbose_name=_("代谁投票"), on_delete=models.PROTECT, null=True, blank=True,
        related_name="+",
    )
    delegation = models.ForeignKey(
        "accounts.Delegation", verbose_name=_("所用委托"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="votes",
    )
    reason = models.TextField(_("理由/备注"), blank=True)
    channel = models.CharField(_("渠道"), max_length=10, choices=Channel.choices)
    created_at = models.DateTimeField(_("时间"), auto_now_add=True)

    class Meta:
        verbose_name = _("投票")
        verbose_name_plural = _("投票")
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["approval", "approver"], name="vote_one_per_approver")]

    def __str__(self) -> str:
        return f"{self.approver} {self.get_decision_display()}"


class EventKind(models.TextChoices):
    CREATED = "created", _("创建")
    REQUESTED_AGAIN = "requested_again", _("重复申请")
    VOTE = "vote", _("投票")
    APPROVED = "approved", _("同意")
    REJECTED = "rejected", _("拒绝")
    REASON_ADDED = "reason_added", _("补充理由")
    TIMEOUT = "timeout", _("超时")
    CANCELLED = "cancelled", _("取消")
    SUPERSEDED = "superseded", _("被新构建取代")
    DENIED = "denied", _("被拒绝的操作")
    REMINDER = "reminder", _("提醒")
    NOTIFIED = "notified", _("已通知")
    NOTIFY_FAILED = "notify_failed", _("通知失败")
    JENKINS_ACTION = "jenkins_action", _("Jenkins 操作")
    JENKINS_ERROR = "jenkins_error", _("Jenkins 操作失败")
    BUILD_RESULT = "build_result", _("构建结果")
    IDENTITY_BOUND = "identity_bound", _("身份绑定")
    FROZEN = "frozen", _("封版拒绝")
    EMERGENCY = "emergency", _("紧急发布")
    ESCALATED = "escalated", _("升级")


class ApprovalEvent(models.Model):
    """只追加的审批历史（L4/L11）。只有保留期清理会删除。"""

    approval = models.ForeignKey(Approval, verbose_name=_("审批"), on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(_("类型"), max_length=20, choices=EventKind.choices)
    actor = models.ForeignKey(
        "accounts.Approver", verbose_name=_("操作人"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    actor_name = models.CharField(_("操作人（快照）"), max_length=150, blank=True)
    channel = models.CharField(_("渠道"), max_length=10, choices=Channel.choices, default=Channel.SYSTEM)
    details = models.JSONField(_("详情"), default=dict, blank=True)
    created_at = models.DateTimeField(_("时间"), auto_now_add=True)

    class Meta:
        verbose_name = _("审批历史")
        verbose_name_plural = _("审批历史")
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["approval", "created_at"], name="event_approval_time_idx"),
                   models.Index(fields=["kind", "created_at"], name="event_kind_time_idx"),
                   models.Index(fields=["created_at"], name="event_created_idx")]  # 保留期清理

    def __str__(self) -> str:
        return f"{self.approval_id} {self.kind}"

    def save(self, *args, **kwargs) -> None:
        # 历史只追加：已有记录不允许被改写
        if self.pk is not None:
            raise ValueError("ApprovalEvent is append-only")
        super().save(*args, **kwargs)


class BuildResultValue(models.TextChoices):
    SUCCESS = "SUCCESS", _("成功")
    FAILURE = "FAILURE", _("失败")
    ABORTED = "ABORTED", _("已中止")
    UNSTABLE = "UNSTABLE", _("不稳定")
    NOT_BUILT = "NOT_BUILT", _("未构建")


class BuildResult(models.Model):
    approval = models.ForeignKey(
        Approval, verbose_name=_("审批"), on_delete=models.SET_NULL, null=True, blank=True, related_name="build_results"
    )
    jenkins_server = models.ForeignKey(
        "jenkins_bridge.JenkinsServer", verbose_name=_("Jenkins"), on_delete=models.PROTECT, related_name="+"
    )
    job_name = models.CharField(_("任务"), max_length=255)
    build_number = models.PositiveIntegerField(_("构建号"))
    build_url = models.URLField(_("构建链接"), max_length=500, blank=True)
    project = models.CharField(_("项目"), max_length=200, blank=True)
    environment = models.CharField(_("环境"), max_length=32, blank=True)
    version = models.CharField(_("版本"), max_length=200, blank=True)
    result = models.CharField(_("结果"), max_length=10, choices=BuildResultValue.choices)
    duration_ms = models.PositiveBigIntegerField(_("耗时（毫秒）"), null=True, blank=True)
    details = models.JSONField(_("详情"), default=dict, blank=True)
    received_at = models.DateTimeField(_("接收时间"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("构建结果")
        verbose_name_plural = _("构建结果")
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["jenkins_server", "job_name", "build_number"], name="buildresult_build_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.job_name}#{self.build_number} {self.result}"


class BuildLog(models.Model):
    approval = models.ForeignKey(
        Approval, verbose_name=_("审批"), on_delete=models.SET_NULL, null=True, blank=True, related_name="build_logs"
    )
    jenkins_server = models.ForeignKey(
        "jenkins_bridge.JenkinsServer", verbose_name=_("Jenkins"), on_delete=models.PROTECT, related_name="+"
    )
    job_name = models.CharField(_("任务"), max_length=255)
    build_number = models.PositiveIntegerField(_("构建号"))
    content = models.TextField(_("日志内容"), blank=True)
    size = models.PositiveBigIntegerField(_("字节数"), default=0)
    is_complete = models.BooleanField(_("构建已结束"), default=False)
    fetched_at = models.DateTimeField(_("获取时间"), auto_now=True, db_index=True)

    class Meta:
        verbose_name = _("构建日志")
        verbose_name_plural = _("构建日志")
        ordering = ["-fetched_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["jenkins_server", "job_name", "build_number"], name="buildlog_build_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.job_name}#{self.build_number}"
