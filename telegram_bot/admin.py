"""Telegram 侧状态的后台：消息（可重新发送/刷新）、聊天状态（可清除错误）、身份审计与已处理 update 只读。"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from approvalbot.admin_base import BookkeepingAdmin

from .models import IdentityEvent, MessageState, ProcessedUpdate, ReasonPrompt, TelegramChat, TelegramMessage


@admin.register(TelegramMessage)
class TelegramMessageAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "approval", "chat_id", "message_id", "state", "shown_status", "attempts",
                    "error_code", "sent_at", "edited_at")
    list_filter = ("state", "kind", "error_code")
    search_fields = ("approval__public_id", "=chat_id", "dedupe_key")
    list_select_related = ("approval",)
    readonly_fields = [f.name for f in TelegramMessage._meta.fields]
    actions = ["retry_messages"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=gettext_lazy("重新发送/刷新所选消息"))
    def retry_messages(self, request: HttpRequest, queryset: QuerySet[TelegramMessage]) -> None:
        from .tasks import approval_messages_refresh_task, outbox_deliver_task

        # 失败的行回到“待发送”：问题（如机器人被移出群）修好后由管理员手动重发；已发的审批消息重新核对内容
        rows = list(queryset)
        failed = [r.pk for r in rows if r.state == MessageState.FAILED]
        TelegramMessage.objects.filter(pk__in=failed).update(
            state=MessageState.PENDING, message_id=None, error_code="", last_error="", permanent=False, attempts=0,
            next_attempt_at=None, lease_token="", lease_until=None)
        if failed:
            outbox_deliver_task.delay(failed)
        for approval_id in {r.approval_id for r in rows if r.state == MessageState.SENT and r.approval_id}:
            approval_messages_refresh_task.delay(approval_id)
        self.message_user(request, _("已安排重新发送 %(n)d 条。") % {"n": len(rows)}, messages.SUCCESS)


@admin.register(TelegramChat)
class TelegramChatAdmin(admin.ModelAdmin):
    list_display = ("chat_id", "title", "migrated_to_chat_id", "error_permanent", "error_code", "last_error_at",
                    "last_sent_at")
    list_filter = ("error_permanent",)
    search_fields = ("=chat_id", "title")
    actions = ["clear_errors"]

    @admin.action(description=gettext_lazy("清除所选聊天的错误标记"))
    def clear_errors(self, request: HttpRequest, queryset: QuerySet[TelegramChat]) -> None:
        count = queryset.update(error_permanent=False, error_code="", last_error="", cooldown_until=None)
        self.message_user(request, _("已清除 %(n)d 个聊天的错误。") % {"n": count}, messages.SUCCESS)


@admin.register(IdentityEvent)
class IdentityEventAdmin(BookkeepingAdmin):
    allow_delete = False  # 身份绑定的审计：只追加
    list_display = ("created_at", "kind", "approver", "telegram_id", "telegram_username", "chat_id")
    list_filter = ("kind",)
    search_fields = ("=telegram_id", "telegram_username", "approver__username")


@admin.register(ProcessedUpdate)
class ProcessedUpdateAdmin(BookkeepingAdmin):
    list_display = ("bot_id", "update_id", "received_at")


@admin.register(ReasonPrompt)
class ReasonPromptAdmin(BookkeepingAdmin):
    list_display = ("approval", "approver", "chat_id", "message_id", "created_at", "answered_at")
