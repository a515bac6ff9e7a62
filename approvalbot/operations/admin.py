"""运维状态在后台只读可见：备份记录、告警状态、beat 租约、心跳（都由进程自己写，手改只会误导检查）。"""

from __future__ import annotations

from django.contrib import admin

from approvalbot.admin_base import BookkeepingAdmin

from .models import AlertState, BackupRun, Heartbeat, Lease


@admin.register(BackupRun)
class BackupRunAdmin(BookkeepingAdmin):
    list_display = ("started_at", "trigger", "status", "attempts", "file_name", "size", "finished_at")
    list_filter = ("status", "trigger")
    search_fields = ("file_name", "error")


@admin.register(AlertState)
class AlertStateAdmin(BookkeepingAdmin):
    list_display = ("component", "failing_since", "alerted_at", "recovered_at", "checked_at", "problem")
    search_fields = ("component", "problem")


@admin.register(Lease)
class LeaseAdmin(BookkeepingAdmin):
    list_display = ("name", "holder", "expires_at", "acquired_at", "renewed_at")


@admin.register(Heartbeat)
class HeartbeatAdmin(BookkeepingAdmin):
    list_display = ("name", "at")
