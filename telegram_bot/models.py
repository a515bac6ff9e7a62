"""Telegram 侧的持久状态：发件箱（每条发出或要发的消息）、每个群的发送节流与故障、已处理的 update、身份审计。

审批本身的状态只在 approvals 里；这里只记录“Telegram 上发了什么、现在显示着什么”，
以便任务可以重复执行（幂等）、故障后补发，并在 /health 里看到永久失败。
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

# 全局节流用的保留行：Telegram 不会有 chat_id 为 0 的聊天
GLOBAL_PACING_CHAT_ID = 0


class MessageKind(models.TextChoices):
    APPROVAL = "approval", _("审批消息")
    REMINDER = "reminder", _("提醒")
    TIMEOUT = "timeout", _("超时通知")
    BUILD_RESULT = "build_result", _("构建结果通知")
    CONFIG = "config", _("配置变化通知")
    ALERT = "alert", _("告警")
    POLICY = "policy", _("发布策略通知")


class MessageState(models.TextChoices):
    PENDING = "pending", _("待发送")
    SENT = "sent", _("已发送")
    FAILED = "failed", _("失败")
    SKIPPED = "skipped", _("无需发送")


class TelegramMessage(models.Model):
    """发件箱：发往 Telegram 的每一条消息一行（审批消息、提醒、超时/构建结果/配置通知、告警……）。

    “发了没有、失败在哪、下一次何时重试”都在这一行的列上：发送先用一次条件更新认领（租约），
    失败按同一个重试策略排期，补发扫描只看这些列。审批消息发出后还会被编辑（content_hash、shown_status）。
    """

    kind = models.CharField(_("类型"), max_length=20, choices=MessageKind.choices, default=MessageKind.APPROVAL)
    # 幂等键：同一条通知（如某审批的第 3 次提醒）无论任务跑几次都只有一行
    dedupe_key = models.CharField(_("幂等键"), max_length=120, unique=True)
    approval = models.ForeignKey(
        "approvals.Approval", verbose_name=_("审批"), on_delete=models.CASCADE, related_name="telegram_messages",
        null=True, blank=True,
    )
    build_result = models.ForeignKey(
        "approvals.BuildResult", verbose_name=_("构建结果"), on_delete=models.CASCADE, related_name="+",
        null=True, blank=True,
    )
    # 第几次（提醒的序号）；其他类型为 0
    sequence = models.PositiveIntegerField(_("序号"), default=0)
    chat_id = models.BigIntegerField(_("聊天 ID"), null=True, blank=True)
    reply_to_message_id = models.BigIntegerField(_("回复的消息 ID"), null=True, blank=True)
    # 内容在入箱时就定下的通知（配置变化、告警）：渲染所需的数据；其余类型发送时按数据库现状渲染
    payload = models.JSONField(_("内容数据"), default=dict, blank=True)
    message_id = models.BigIntegerField(_("消息 ID"), null=True, blank=True)
    state = models.CharField(_("状态"), max_length=10, choices=MessageState.choices, default=MessageState.PENDING)
    # 最近一次成功发送/编辑的内容摘要：内容没变就不再调用 Telegram
    content_hash = models.CharField(_("内容摘要"), max_length=64, blank=True)
    shown_status = models.CharField(_("显示的审批状态"), max_length=10, blank=True)
    # 租约：认领时写入随机令牌与到期时间；只有持有令牌的任务能记录结果，worker 死了租约到期后可再认领
    lease_token = models.CharField(_("租约令牌"), max_length=32, blank=True)
    lease_until = models.DateTimeField(_("租约到期"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("尝试次数"), default=0)
    next_attempt_at = models.DateTimeField(_("下次尝试"), null=True, blank=True)
    error_code = models.CharField(_("错误代码"), max_length=40, blank=True)
    last_error = models.TextField(_("最近错误"), blank=True)
    last_error_at = models.DateTimeField(_("错误时间"), null=True, blank=True)
    # 失败是否永久（被拉黑、群不存在……）；False 表示重试次数用尽
    permanent = models.BooleanField(_("永久失败"), default=False)
    sent_at = models.DateTimeField(_("发送时间"), null=True, blank=True)
    edited_at = models.DateTimeField(_("编辑时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("Telegram 消息")
        verbose_name_plural = _("Telegram 消息")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="tgmessage_due_idx"),
            models.Index(fields=["state", "updated_at"], name="tgmessage_state_idx"),
            models.Index(fields=["approval", "kind"], name="tgmessage_approval_kind_idx"),
            models.Index(fields=["chat_id", "message_id"], name="tgmessage_chat_msg_idx"),
            models.Index(fields=["lease_token"], name="tgmessage_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.approval_id or '-'}@{self.chat_id or '-'}/{self.message_id or '-'}"


class TelegramChat(models.Model):
    """每个聊天的发送状态：节流预约、429 冷却、迁移到超级群、永久错误（/health 可见）。"""

    chat_id = models.BigIntegerField(_("聊天 ID"), unique=True)
    title = models.CharField(_("名称"), max_length=255, blank=True)
    chat_type = models.CharField(_("类型"), max_length=20, blank=True)
    migrated_to_chat_id = models.BigIntegerField(_("已迁移到"), null=True, blank=True)
    next_send_at = models.DateTimeField(_("下一个可用发送时刻"), null=True, blank=True)
    cooldown_until = models.DateTimeField(_("限流冷却到"), null=True, blank=True)
    error_permanent = models.BooleanField(_("永久错误"), default=False)
    error_code = models.CharField(_("错误代码"), max_length=40, blank=True)
    last_error = models.TextField(_("最近错误"), blank=True)
    last_error_at = models.DateTimeField(_("错误时间"), null=True, blank=True)
    last_sent_at = models.DateTimeField(_("最近成功发送"), null=True, blank=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("Telegram 聊天")
        verbose_name_plural = _("Telegram 聊天")
        ordering = ["chat_id"]

    def __str__(self) -> str:
        return self.title or str(self.chat_id)


class ProcessedUpdate(models.Model):
    """已处理的 update：webhook 重投或轮询重放时，同一 update 只处理一次。"""

    bot_id = models.BigIntegerField(_("机器人 ID"))
    update_id = models.BigIntegerField(_("Update ID"))
    received_at = models.DateTimeField(_("接收时间"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("已处理的 update")
        verbose_name_plural = _("已处理的 update")
        constraints = [models.UniqueConstraint(fields=["bot_id", "update_id"], name="processed_update_uniq")]

    def __str__(self) -> str:
        return f"{self.bot_id}/{self.update_id}"


class IdentityEventKind(models.TextChoices):
    BOUND = "bound", _("首次联系时绑定数字 ID")
    TAKEOVER_REFUSED = "takeover_refused", _("用户名已被另一个 ID 绑定，拒绝")
    AMBIGUOUS = "ambiguous", _("多个审批人使用同一用户名，拒绝绑定")


class IdentityEvent(models.Model):
    """身份审计（X13）：谁在何时被绑定，谁试图用同一用户名接管。只追加。"""

    kind = models.CharField(_("类型"), max_length=20, choices=IdentityEventKind.choices)
    approver = models.ForeignKey(
        "accounts.Approver", verbose_name=_("审批人"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    telegram_id = models.BigIntegerField(_("Telegram 数字 ID"))
    telegram_username = models.CharField(_("Telegram 用户名"), max_length=64, blank=True)
    chat_id = models.BigIntegerField(_("聊天 ID"), null=True, blank=True)
    details = models.JSONField(_("详情"), default=dict, blank=True)
    created_at = models.DateTimeField(_("时间"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("身份事件")
        verbose_name_plural = _("身份事件")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.telegram_id}"


class ReasonPrompt(models.Model):
    """按钮拒绝后发出的“请回复理由”消息：回复它的人必须是拒绝者本人。"""

    approval = models.ForeignKey(
        "approvals.Approval", verbose_name=_("审批"), on_delete=models.CASCADE, related_name="+"
    )
    approver = models.ForeignKey("accounts.Approver", verbose_name=_("审批人"), on_delete=models.CASCADE,
                                 related_name="+")
    telegram_user_id = models.BigIntegerField(_("Telegram 数字 ID"))
    chat_id = models.BigIntegerField(_("聊天 ID"))
    message_id = models.BigIntegerField(_("提示消息 ID"))
    created_at = models.DateTimeField(_("时间"), auto_now_add=True)
    answered_at = models.DateTimeField(_("回复时间"), null=True, blank=True)

    class Meta:
        verbose_name = _("拒绝理由提示")
        verbose_name_plural = _("拒绝理由提示")
        constraints = [models.UniqueConstraint(fields=["chat_id", "message_id"], name="reasonprompt_msg_uniq")]

    def __str__(self) -> str:
        return f"{self.approval_id}@{self.chat_id}/{self.message_id}"


class PendingPage(models.Model):
    """机器人发出的一条 /pending 待办列表：翻页按钮只在这条消息上、只对它的主人有效（回调数据不可信）。"""

    chat_id = models.BigIntegerField(_("聊天 ID"))
    message_id = models.BigIntegerField(_("消息 ID"))
    owner_telegram_id = models.BigIntegerField(_("发起人的 Telegram 数字 ID"))
    created_at = models.DateTimeField(_("时间"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("待办列表消息")
        verbose_name_plural = _("待办列表消息")
        constraints = [models.UniqueConstraint(fields=["chat_id", "message_id"], name="pendingpage_msg_uniq")]

    def __str__(self) -> str:
        return f"{self.chat_id}/{self.message_id}"
