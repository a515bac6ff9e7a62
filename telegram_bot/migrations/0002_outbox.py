"""发件箱：TelegramMessage 从“展示审批的消息”扩展为发往 Telegram 的每一条消息。

把以前藏在别处的投递记录搬进来，补发扫描不会把已经发过的通知再发一遍：
- 审批消息：原有的行，幂等键 approval:<审批>:<群>；
- 提醒、超时通知：审批历史里 notified / notify_failed 事件（details.notice）；
- 构建结果通知：BuildResult.details 的 notice / notify_error，以及只有 notified_at 的旧记录。
随后 approvals 0004 删掉 BuildResult.notified_at 与 details 里的这些键。
"""

import django.db.models.deletion
from django.db import migrations, models


def forwards(apps, schema_editor):
    TelegramMessage = apps.get_model("telegram_bot", "TelegramMessage")
    ApprovalEvent = apps.get_model("approvals", "ApprovalEvent")
    BuildResult = apps.get_model("approvals", "BuildResult")

    for row in TelegramMessage.objects.filter(dedupe_key__isnull=True).iterator():
        TelegramMessage.objects.filter(pk=row.pk).update(dedupe_key=f"approval:{row.approval_id}:{row.chat_id}")

    rows = {}
    events = (ApprovalEvent.objects.filter(kind__in=["notified", "notify_failed"], details__notice__in=["reminder", "timeout"])
              .order_by("id").values_list("approval_id", "kind", "details", "created_at"))
    for approval_id, kind, details, created_at in events.iterator():
        notice = details.get("notice")
        number = int(details.get("number") or 0) if notice == "reminder" else 0
        key = f"reminder:{approval_id}:{number}" if notice == "reminder" else f"timeout:{approval_id}"
        sent = kind == "notified"
        if key in rows and rows[key].state == "sent":
            continue  # 送达记录优先：之后的失败记录（例如补投的标记）不改变“已发过”
        rows[key] = TelegramMessage(
            dedupe_key=key, kind=notice, approval_id=approval_id, sequence=number, chat_id=details.get("chat_id"),
            message_id=details.get("message_id") if sent else None, reply_to_message_id=details.get("reply_to"),
            state="sent" if sent else "failed", sent_at=created_at if sent else None, attempts=1,
            error_code="" if sent else str(details.get("code") or "")[:40],
            last_error="" if sent else str(details.get("error") or ""),
            permanent=bool(details.get("permanent")), last_error_at=None if sent else created_at,
        )
    TelegramMessage.objects.bulk_create(rows.values(), batch_size=500, ignore_conflicts=True)

    results = []
    for result in BuildResult.objects.exclude(details={}, notified_at__isnull=True).iterator():
        details = result.details or {}
        notice, error = details.get("notice"), details.get("notify_error")
        if not (notice or error or result.notified_at):
            continue  # 从没处理过：交给补发扫描（它只补 24 小时内的）
        state = "sent" if notice or (result.notified_at and not error) else "failed"
        error = error or {}
        results.append(TelegramMessage(
            dedupe_key=f"build_result:{result.pk}", kind="build_result", build_result_id=result.pk,
            approval_id=result.approval_id, chat_id=(notice or {}).get("chat_id") or error.get("chat_id"),
            message_id=(notice or {}).get("message_id"), state=state,
            sent_at=result.notified_at if state == "sent" else None, attempts=1,
            error_code="" if state == "sent" else str(error.get("code") or "")[:40],
            last_error="" if state == "sent" else str(error.get("error") or ""),
            permanent=bool(error.get("permanent")),
        ))
    TelegramMessage.objects.bulk_create(results, batch_size=500, ignore_conflicts=True)


class Migration(migrations.Migration):

    dependencies = [
        ("approvals", "0003_build_key_generation_and_retention_indexes"),
        ("telegram_bot", "0001_initial"),
    ]
    run_before = [("approvals", "0004_delivery_state_moves_to_the_outbox")]

    operations = [
        migrations.RemoveConstraint(model_name="telegrammessage", name="tgmessage_approval_chat_kind_uniq"),
        migrations.AddField(
            model_name="telegrammessage", name="build_result",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="+", to="approvals.buildresult", verbose_name="构建结果"),
        ),
        migrations.AddField(
            model_name="telegrammessage", name="dedupe_key",
            field=models.CharField(max_length=120, null=True, verbose_name="幂等键"),
        ),
        migrations.AddField(model_name="telegrammessage", name="lease_token",
                            field=models.CharField(blank=True, max_length=32, verbose_name="租约令牌")),
        migrations.AddField(model_name="telegrammessage", name="next_attempt_at",
                            field=models.DateTimeField(blank=True, null=True, verbose_name="下次尝试")),
        migrations.AddField(model_name="telegrammessage", name="payload",
                            field=models.JSONField(blank=True, default=dict, verbose_name="内容数据")),
        migrations.AddField(model_name="telegrammessage", name="permanent",
                            field=models.BooleanField(default=False, verbose_name="永久失败")),
        migrations.AddField(model_name="telegrammessage", name="reply_to_message_id",
                            field=models.BigIntegerField(blank=True, null=True, verbose_name="回复的消息 ID")),
        migrations.AddField(model_name="telegrammessage", name="sequence",
                            field=models.PositiveIntegerField(default=0, verbose_name="序号")),
        migrations.AlterField(
            model_name="telegrammessage", name="approval",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="telegram_messages", to="approvals.approval", verbose_name="审批"),
        ),
        migrations.AlterField(model_name="telegrammessage", name="chat_id",
                              field=models.BigIntegerField(blank=True, null=True, verbose_name="聊天 ID")),
        migrations.AlterField(
            model_name="telegrammessage", name="kind",
            field=models.CharField(choices=[("approval", "审批消息"), ("reminder", "提醒"), ("timeout", "超时通知"),
                                            ("build_result", "构建结果通知"), ("config", "配置变化通知"),
                                            ("alert", "告警"), ("policy", "发布策略通知")],
                                   default="approval", max_length=20, verbose_name="类型"),
        ),
        migrations.AlterField(
            model_name="telegrammessage", name="state",
            field=models.CharField(choices=[("pending", "待发送"), ("sent", "已发送"), ("failed", "失败"),
                                            ("skipped", "无需发送")],
                                   default="pending", max_length=10, verbose_name="状态"),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="telegrammessage", name="dedupe_key",
            field=models.CharField(max_length=120, unique=True, verbose_name="幂等键"),
        ),
        migrations.AddIndex(model_name="telegrammessage",
                            index=models.Index(fields=["state", "next_attempt_at"], name="tgmessage_due_idx")),
        migrations.AddIndex(model_name="telegrammessage",
                            index=models.Index(fields=["approval", "kind"], name="tgmessage_approval_kind_idx")),
        migrations.AddIndex(model_name="telegrammessage",
                            index=models.Index(fields=["lease_token"], name="tgmessage_lease_idx")),
    ]
