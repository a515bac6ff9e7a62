"""升级到发件箱：以前藏在审批历史与 BuildResult.details 里的投递记录都搬进发件箱，升级后补发扫描不会把
已经发过的通知再发一遍；从没发过的仍由补发扫描处理。用真实的迁移在测试库上从旧结构迁上来。"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("telegram_bot", "0001_initial"), ("approvals", "0003_build_key_generation_and_retention_indexes")]


@pytest.fixture
def migrated_from_before_the_outbox():
    """回到发件箱之前的结构，交给测试造旧数据；测试结束前迁回最新。"""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old_apps = executor.loader.project_state(BEFORE).apps

    def forward() -> None:
        latest = MigrationExecutor(connection)
        latest.migrate(latest.loader.graph.leaf_nodes())

    yield old_apps, forward
    forward()


@pytest.mark.django_db(transaction=True)
def test_delivery_records_move_into_the_outbox(migrated_from_before_the_outbox):
    old, forward = migrated_from_before_the_outbox
    server = old.get_model("jenkins_bridge", "JenkinsServer").objects.create(name="ci", url="https://ci.example.com/")
    Approval = old.get_model("approvals", "Approval")
    now = timezone.now()
    approval = Approval.objects.create(public_id="OLDAPPR1", jenkins_server=server, job_name="shop", build_number=1,
                                       project="shop", environment="test", expires_at=now + timedelta(hours=1),
                                       status="timeout", decided_at=now)
    old.get_model("telegram_bot", "TelegramMessage").objects.create(
        approval=approval, chat_id=-100, message_id=10, state="sent", kind="approval")
    Event = old.get_model("approvals", "ApprovalEvent")
    Event.objects.create(approval=approval, kind="notified", details={"notice": "reminder", "number": 1,
                                                                       "chat_id": -100, "message_id": 11})
    Event.objects.create(approval=approval, kind="notify_failed", details={"notice": "reminder", "number": 2,
                                                                            "code": "forbidden", "permanent": True})
    Event.objects.create(approval=approval, kind="notify_failed",
                         details={"notice": "timeout", "code": "recovery_enqueued"})
    Event.objects.create(approval=approval, kind="notified", details={"notice": "timeout", "chat_id": -100,
                                                                       "message_id": 12, "reply_to": 10})
    Result = old.get_model("approvals", "BuildResult")

    def result(build: int, **values) -> int:
        return Result.objects.create(jenkins_server=server, job_name="shop", build_number=build, result="SUCCESS",
                                     **values).pk

    delivered = result(1, details={"notice": {"chat_id": -100, "message_id": 13}, "keep": "me"},
                       notified_at=now, approval=approval)
    refused = result(2, details={"notify_error": {"code": "forbidden", "permanent": True, "chat_id": -100}},
                     notified_at=now)
    legacy = result(3, notified_at=now)  # 很早的版本：只记了通知时间
    never = result(4)

    forward()

    from approvals.models import BuildResult
    from telegram_bot.models import MessageState, TelegramMessage

    rows = {r.dedupe_key: r for r in TelegramMessage.objects.all()}
    assert rows[f"approval:{approval.pk}:-100"].message_id == 10
    assert (rows[f"reminder:{approval.pk}:1"].state, rows[f"reminder:{approval.pk}:1"].message_id) == (
        MessageState.SENT, 11)
    assert (rows[f"reminder:{approval.pk}:2"].state, rows[f"reminder:{approval.pk}:2"].error_code) == (
        MessageState.FAILED, "forbidden")
    # 补投标记之后的送达记录为准：超时通知已发过
    timeout = rows[f"timeout:{approval.pk}"]
    assert (timeout.state, timeout.message_id, timeout.reply_to_message_id) == (MessageState.SENT, 12, 10)
    assert (rows[f"build_result:{delivered}"].state, rows[f"build_result:{delivered}"].message_id) == (
        MessageState.SENT, 13)
    assert (rows[f"build_result:{refused}"].state, rows[f"build_result:{refused}"].permanent) == (
        MessageState.FAILED, True)
    assert rows[f"build_result:{legacy}"].state == MessageState.SENT
    assert f"build_result:{never}" not in rows  # 从没通知过：交给补发扫描（它只补一天内的）
    # BuildResult 上不再有投递记录，别的 details 保留
    assert BuildResult.objects.get(pk=delivered).details == {"keep": "me"}
    assert BuildResult.objects.get(pk=refused).details == {}
