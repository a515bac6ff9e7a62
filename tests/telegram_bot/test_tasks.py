"""审批消息的发送与编辑任务（T1、T3、T9、L10）：幂等、出错不丢、永久错误可见、补发扫描。

用 transaction=True：审批服务在提交后投递任务，Celery eager 模式下当场执行，和生产的顺序一致。
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from approvalbot.celery import retry_countdown
from approvals.models import Approval, ApprovalEvent, Channel, EventKind, Status
from approvals.services import approval_decide
from telegram_bot.health import telegram_health
from telegram_bot.models import MessageKind, MessageState, TelegramChat, TelegramMessage
from telegram_bot.notices import approvals as approval_messages
from telegram_bot.outbox import outbox_add, outbox_claim
from telegram_bot.sender import TelegramSender
from telegram_bot.tasks import (
    approval_announce_task,
    approval_messages_refresh_task,
    telegram_recovery_sweep_task,
)
from tests.concurrency import run_together
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db(transaction=True)


def only_message(fake, chat_id=GROUP_ID):
    messages = fake.chat_messages(chat_id)
    assert len(messages) == 1, [m.text[:40] for m in messages]
    return messages[0]


def test_new_approval_is_announced_once_with_buttons(fake_tg, shop_rule, make_approval):
    approval = make_approval()
    message = only_message(fake_tg)
    assert [b["callback_data"] for b in message.buttons] == [f"ap:{approval.public_id}:a", f"ap:{approval.public_id}:r"]
    row = TelegramMessage.objects.get(approval=approval)
    assert (row.chat_id, row.message_id, row.state) == (GROUP_ID, message.message["message_id"], MessageState.SENT)
    assert (row.kind, row.dedupe_key, row.attempts) == (MessageKind.APPROVAL, f"approval:{approval.pk}", 1)
    # 投递的来龙去脉在发件箱里，不进审批历史
    assert not ApprovalEvent.objects.filter(approval=approval, kind__in=[EventKind.NOTIFIED,
                                                                         EventKind.NOTIFY_FAILED]).exists()

    # 任务重复执行（broker 重投、补发扫描）不会发第二条，也不会白白编辑
    approval_announce_task.delay(approval.pk)
    approval_announce_task.delay(approval.pk)
    assert len(fake_tg.calls_to("sendMessage")) == 1
    assert fake_tg.calls_to("editMessageText") == []


def test_default_chat_is_used_when_the_rule_names_none(fake_tg, settings, people, make_approval):
    settings.TELEGRAM_DEFAULT_CHAT_ID = -1005550000
    fake_tg.add_group(-1005550000, "默认群")
    make_approval(job_name="no-rule-project")
    assert only_message(fake_tg, -1005550000).text.startswith("🟢 发布审批")


def test_no_chat_configured_is_recorded_once_and_not_retried(fake_tg, people, make_approval):
    approval = make_approval(job_name="nowhere")
    approval_announce_task.delay(approval.pk)
    approval_announce_task.delay(approval.pk)
    assert fake_tg.calls_to("sendMessage") == []
    [row] = TelegramMessage.objects.filter(approval=approval)
    assert (row.state, row.error_code, row.permanent) == (MessageState.FAILED, "no_chat", True)


def test_every_message_is_edited_after_a_decision_made_through_the_api(fake_tg, shop_rule, make_approval, people):
    approval = make_approval()
    # 第二条展示同一审批的消息（例如发给审批人的私聊）
    fake_tg.add_user(people["approver"].telegram_id, "bob")
    extra = outbox_add(key=f"approval:{approval.pk}:dm", kind=MessageKind.APPROVAL,
                       chat_id=people["approver"].telegram_id, approval_id=approval.pk)
    approval_messages.message_sync(row=outbox_claim([extra.pk])[0], sender=TelegramSender())
    assert len(fake_tg.ok_calls("sendMessage")) == 2

    approval_decide(approval=approval, approver=people["approver"], decision="approve", reason="可以",
                    channel=Channel.API)

    for row in TelegramMessage.objects.filter(approval=approval):
        stored = fake_tg.message(row.chat_id, row.message_id)
        assert "✅ 已同意发布" in stored.text and "下一步：构建继续" in stored.text and "渠道：API" in stored.text
        assert stored.buttons == []  # 终态移除按钮
        assert row.shown_status == Status.APPROVED


def test_partial_votes_update_the_count_and_keep_the_buttons(fake_tg, shop_rule, make_approval, people):
    approval = make_approval(environment="production")
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel=Channel.API)
    message = only_message(fake_tg)
    assert "同意票数：1/2（Bob）" in message.text
    assert len(message.buttons) == 2
    approval_decide(approval=approval, approver=people["approver2"], decision="approve", channel=Channel.API)
    message = only_message(fake_tg)
    assert "同意票数：2/2（Bob、Erin）" in message.text and message.buttons == []


def test_refresh_is_idempotent_and_not_modified_is_fine(fake_tg, shop_rule, make_approval, people):
    approval = make_approval()
    approval_decide(approval=approval, approver=people["approver"], decision="reject", reason="不行",
                    channel=Channel.API)
    approval_messages_refresh_task.delay(approval.pk)  # 若 Jenkins 操作结果已落库，这次会把它也显示出来
    edits = len(fake_tg.calls_to("editMessageText"))
    approval_messages_refresh_task.delay(approval.pk)
    assert len(fake_tg.calls_to("editMessageText")) == edits  # 内容没变，不调用 Telegram

    # 记录的摘要丢了：再编辑一次，Telegram 回答“message is not modified”，这不是错误。
    # 冻结时间：日志链接带时间戳签名，跨秒渲染会不同
    with time_machine.travel(timezone.now(), tick=False):
        for _ in range(2):
            TelegramMessage.objects.filter(approval=approval).update(content_hash="")
            approval_messages_refresh_task.delay(approval.pk)
    assert fake_tg.calls_to("editMessageText")[-1].status == 400
    row = TelegramMessage.objects.get(approval=approval)
    assert row.state == MessageState.SENT and row.error_code == "" and row.content_hash


def test_transient_faults_are_retried_and_nothing_is_lost(fake_tg, shop_rule, make_approval):
    fake_tg.server_error("sendMessage", times=2)
    approval = make_approval()
    statuses = [c.status for c in fake_tg.calls_to("sendMessage")]
    assert statuses == [502, 502, 200]
    assert only_message(fake_tg).text.startswith("🟢 发布审批")
    row = TelegramMessage.objects.get(approval=approval)
    assert row.state == MessageState.SENT and row.attempts == 3


def test_permanent_error_is_recorded_not_retried_and_visible_in_health(fake_tg, shop_rule, make_approval):
    fake_tg.kick(GROUP_ID)
    approval = make_approval()
    assert len(fake_tg.calls_to("sendMessage")) == 1
    row = TelegramMessage.objects.get(approval=approval)
    assert (row.state, row.error_code) == (MessageState.FAILED, "forbidden")
    assert "kicked" in row.last_error and row.permanent
    health = telegram_health()
    assert health["status"] == "degraded"
    assert health["failed_messages_24h"] == 1
    assert health["failed_chats"][0]["chat_id"] == GROUP_ID

    # 重复执行与补发扫描都不会对永久失败的消息无限重试
    approval_announce_task.delay(approval.pk)
    telegram_recovery_sweep_task.delay()
    assert len(fake_tg.calls_to("sendMessage")) == 1


def test_a_decision_is_never_blocked_by_telegram_being_down(fake_tg, shop_rule, make_approval, people):
    approval = make_approval()
    fake_tg.server_error("editMessageText", times=1000)
    outcome = approval_decide(approval=approval, approver=people["approver"], decision="approve",
                              channel=Channel.API)
    assert outcome.final
    assert Approval.objects.get(pk=approval.pk).status == Status.APPROVED
    row = TelegramMessage.objects.get(approval=approval)
    assert row.error_code == "server_error" and row.shown_status == Status.PENDING

    # Telegram 恢复、到了重试时间后，补发扫描把消息改成最终状态
    fake_tg.faults.clear()
    Approval.objects.filter(pk=approval.pk).update(decided_at=timezone.now() - timedelta(minutes=5))
    assert telegram_recovery_sweep_task()["refresh"] == []  # 退避期间不打扰 Telegram
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        found = telegram_recovery_sweep_task()
    assert found["refresh"] == [approval.pk]
    assert "✅ 已同意发布" in only_message(fake_tg).text


def test_group_migrated_before_announce(fake_tg, shop_rule, make_approval, people):
    fake_tg.migrate(GROUP_ID, -1009990001)
    approval = make_approval()
    message = only_message(fake_tg, -1009990001)
    row = TelegramMessage.objects.get(approval=approval)
    assert (row.chat_id, row.message_id) == (-1009990001, message.message["message_id"])
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel=Channel.API)
    assert "已同意发布" in only_message(fake_tg, -1009990001).text
    # 之后的审批直接发往新群
    make_approval()
    assert [c.params["chat_id"] for c in fake_tg.ok_calls("sendMessage")] == [-1009990001, -1009990001]


def test_group_migrated_after_announce_resends_in_the_new_group(fake_tg, shop_rule, make_approval, people):
    approval = make_approval()
    fake_tg.migrate(GROUP_ID, -1009990002)
    approval_decide(approval=approval, approver=people["approver"], decision="reject", reason="回滚",
                    channel=Channel.API)
    resent = only_message(fake_tg, -1009990002)
    assert "❌ 已拒绝发布" in resent.text
    row = TelegramMessage.objects.get(approval=approval)
    assert (row.chat_id, row.message_id, row.state) == (-1009990002, resent.message["message_id"], MessageState.SENT)
    assert TelegramChat.objects.get(chat_id=GROUP_ID).migrated_to_chat_id == -1009990002


def test_long_rate_limit_then_recovery_sweep_delivers(fake_tg, shop_rule, make_approval):
    fake_tg.rate_limit("sendMessage", retry_after=120)
    approval = make_approval()
    row = TelegramMessage.objects.get(approval=approval)
    assert row.state == MessageState.PENDING and row.error_code in ("rate_limited", "paced")
    assert len(fake_tg.calls_to("sendMessage")) == 1  # 冷却期内没有再打扰 Telegram

    # 冷却结束、任务重试次数早已用尽：到了行上记的重试时间，补发扫描接手
    assert TelegramMessage.objects.get(pk=row.pk).next_attempt_at > timezone.now() + timedelta(seconds=100)
    TelegramChat.objects.filter(chat_id=GROUP_ID).update(cooldown_until=None)
    assert telegram_recovery_sweep_task()["deliver"] == []
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        found = telegram_recovery_sweep_task()
    assert found["deliver"] == [row.pk]
    assert only_message(fake_tg).text.startswith("🟢 发布审批")
    assert TelegramMessage.objects.get(pk=row.pk).state == MessageState.SENT


def test_recovery_sweep_announces_lost_approvals_in_bounded_batches(fake_tg, settings, shop_rule, make_approval):
    settings.TELEGRAM_BOT_TOKEN = ""  # 创建时 Telegram 还没配置：通知任务跳过
    # 不同环境：同一任务同一环境的新构建会取代旧的（X17）
    approvals = [make_approval(environment=env) for env in ("test", "staging", "production")]
    assert fake_tg.calls == []
    settings.TELEGRAM_BOT_TOKEN = fake_tg.token
    # 刚创建的不动（正常的通知任务可能还在路上）
    assert telegram_recovery_sweep_task()["announce"] == []
    Approval.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    first = telegram_recovery_sweep_task(limit=2)
    assert first["announce"] == [approvals[0].pk, approvals[1].pk]
    second = telegram_recovery_sweep_task(limit=2)
    assert second["announce"] == [approvals[2].pk]
    assert telegram_recovery_sweep_task(limit=2)["announce"] == []
    assert len(fake_tg.chat_messages(GROUP_ID)) == 3


def test_refresh_waits_for_a_row_held_by_another_worker(fake_tg, shop_rule, make_approval, people):
    approval = make_approval()
    row = TelegramMessage.objects.get(approval=approval)
    TelegramMessage.objects.filter(pk=row.pk).update(lease_until=timezone.now() + timedelta(minutes=1))
    with pytest.raises(approval_messages.MessageBusy):
        approval_messages.approval_messages_refresh(approval_id=approval.pk)
    TelegramMessage.objects.filter(pk=row.pk).update(lease_until=None)
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel=Channel.API)
    assert "已同意发布" in only_message(fake_tg).text


def test_retry_countdown_backs_off_and_honours_retry_after():
    assert 4 <= retry_countdown(0) <= 5
    assert 32 <= retry_countdown(3) <= 40
    assert 480 <= retry_countdown(20) <= 600
    assert retry_countdown(0, retry_after=42) >= 43


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="并发只在 MySQL/MariaDB 上有意义")
def test_concurrent_announces_send_exactly_one_message(fake_tg, settings, shop_rule, make_approval):
    settings.TELEGRAM_BOT_TOKEN = ""
    approval = make_approval()
    settings.TELEGRAM_BOT_TOKEN = fake_tg.token
    fake_tg.delay("sendMessage", 0.3)  # 让竞争窗口足够大
    run_together([lambda: approval_messages.approval_announce(approval_id=approval.pk)] * 6,
                 expected=(approval_messages.MessageBusy,))
    assert len(fake_tg.ok_calls("sendMessage")) == 1
    assert TelegramMessage.objects.filter(approval=approval).count() == 1


def test_permanent_jenkins_failure_after_a_decision_shows_on_the_message(fake_tg, shop_rule, people, make_approval):
    """消息写着“构建继续”，而 Jenkins 操作彻底失败时，审批人要在同一条消息上看到，好去手动处理。"""
    from approvals.actions import approval_record_jenkins_action

    approval = make_approval()
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel=Channel.API)
    approval_record_jenkins_action(approval=approval, ok=False, permanent=True, action="proceed",
                                   error="HTTP 404：构建不存在")
    text = only_message(fake_tg).text
    assert "✅ 已同意发布" in text and "Jenkins 操作失败" in text and "构建不存在" in text
