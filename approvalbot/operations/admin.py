"""运维状态在后台只读可见：备份记录、告警状态、beat 租约、心跳（都由进程自己写，手改只会误导检查）。"""

from __future__ import annotations

from django.contrib import admin

from approvalbot.admin_base import ReadOnlyAdminMixin

from .models import AlertState, BackupRun, Heartbeat, Lease


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    allow_delete = True  # 簿记：管理员可以清掉，但不能改


@admin.register(BackupRun)
class BackupRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "trigger", "status", "attempts", "file_name", "size", "finished_at")
    list_filter = ("status", "trigger")
    search_fields = ("file_name", "error")


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdmin):
    list_display = ("component", "failing_since", "alerted_at", "recovered_at", "checked_at", "problem")
    search_fields = ("component", "problem")


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    list_display = ("name", "holder", "expires_at", "acquired_at", "renewed_at")


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("name", "at")
