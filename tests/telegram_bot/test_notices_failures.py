"""通知遇到 Telegram 故障（T9）：429 按 retry_after 等待、403 记录后不再重试、5xx 退避重试、重试用尽有记录；
以及配置变化通知（C7）。全部对着假 Bot API 的真实 HTTP。"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from celery.signals import task_retry
from django.utils import timezone

from approvals.builds import build_result_record
from telegram_bot.models import MessageKind, MessageState, TelegramChat, TelegramMessage
from telegram_bot.outbox import MAX_ATTEMPTS
from telegram_bot.tasks import (
    build_result_notify_task,
    config_changed_notify_task,
    reminder_digest_task,
    timeout_notice_task,
)
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db


@pytest.fixture
def retry_countdowns():
    """Celery 自己的 task_retry 信号：记下每次重试安排的等待秒数。"""
    seen: list[float] = []

    def on_retry(sender=None, request=None, reason=None, **kwargs) -> None:
        seen.append(reason.when)

    task_retry.connect(on_retry, weak=False)
    yield seen
    task_retry.disconnect(on_retry)


def digests(fake) -> list:
    return [m for m in fake.chat_messages(GROUP_ID) if "审批提醒" in m.text]


def test_short_429_is_waited_out_and_the_digest_delivered_once(fake_tg, shop_rule, make_approval):
    approval = make_approval()
    fake_tg.rate_limit("sendMessage", retry_after=1)
    reminder_digest_task.delay(GROUP_ID, [approval.pk])
    first, second = fake_tg.calls_to("sendMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95  # 等够了 retry_after
    assert len(digests(fake_tg)) == 1


def test_long_429_retry_after_is_honoured_by_the_task(fake_tg, shop_rule, make_approval, retry_countdowns):
    approval = make_approval()
    fake_tg.rate_limit("sendMessage", retry_after=30)
    reminder_digest_task.delay(GROUP_ID, [approval.pk])

    # 每次重试都安排在 retry_after 之后；冷却期间一个请求也没再发给 Telegram
    assert retry_countdowns and min(retry_countdowns) >= 30
    assert len(retry_countdowns) == MAX_ATTEMPTS
    assert [c.status for c in fake_tg.calls_to("sendMessage")] == [429]
    assert TelegramChat.objects.get(chat_id=GROUP_ID).cooldown_until > timezone.now() + timedelta(seconds=25)
    # 没丢：提醒仍在发件箱里待发，重试时间在冷却之后（等待本机节流不算尝试次数）
    row = TelegramMessage.objects.get(approval=approval, kind=MessageKind.REMINDER)
    assert (row.state, row.attempts, row.error_code) == (MessageState.PENDING, 1, "paced")
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=25)

    # 冷却过去之后（真实 worker 里就是重试到期时），同一任务把提醒送达，且只送一次
    with time_machine.travel(timezone.now() + timedelta(seconds=31), tick=False):
        reminder_digest_task.delay(GROUP_ID, [approval.pk])
        reminder_digest_task.delay(GROUP_ID, [approval.pk])
    assert len(digests(fake_tg)) == 1


def test_blocked_403_is_recorded_and_never_retried(fake_tg, shop_rule, make_approval, retry_countdowns):
    approvals = [make_approval(job_name=f"folder/shop-{i}") for i in range(3)]
    fake_tg.kick(GROUP_ID)
    reminder_digest_task.delay(GROUP_ID, [a.pk for a in approvals])

    assert retry_countdowns == []
    assert [c.status for c in fake_tg.calls_to("sendMessage")] == [403]
    failed = TelegramMessage.objects.filter(kind=MessageKind.REMINDER, state=MessageState.FAILED)
    assert sorted(r.approval_id for r in failed) == sorted(a.pk for a in approvals)
    assert {(r.error_code, r.permanent) for r in failed} == {("forbidden", True)}
    chat = TelegramChat.objects.get(chat_id=GROUP_ID)
    assert chat.error_permanent and chat.error_code == "forbidden"
    # 同一次提醒被重放：已永久失败，不再打扰 Telegram
    reminder_digest_task.delay(GROUP_ID, [a.pk for a in approvals])
    assert len(fake_tg.calls_to("sendMessage")) == 1


def test_build_result_blocked_403_marks_it_handled(fake_tg, shop_rule, django_capture_on_commit_callbacks,
                                                  retry_countdowns):
    fake_tg.kick(GROUP_ID)
    with django_capture_on_commit_callbacks(execute=True):
        result, _created = build_result_record(job_name="folder/shop-x", build_number=9, result="SUCCESS")
    assert retry_countdowns == []
    row = TelegramMessage.objects.get(build_result=result)
    assert (row.kind, row.state, row.error_code, row.permanent) == (
        MessageKind.BUILD_RESULT, MessageState.FAILED, "forbidden", True)
    build_result_notify_task.delay(result.pk)
    assert len(fake_tg.calls_to("sendMessage")) == 1


def test_build_result_5xx_is_retried_with_backoff_then_sent_once(fake_tg, shop_rule, make_approval,
                                                                 django_capture_on_commit_callbacks,
                                                                 retry_countdowns):
    approval = make_approval(build_number=40)
    fake_tg.server_error("sendMessage", times=2)
    with django_capture_on_commit_callbacks(execute=True):
        result, _created = build_result_record(job_name="shop-backend", build_number=40, result="SUCCESS")
    assert [c.status for c in fake_tg.calls_to("sendMessage")] == [502, 502, 200]
    assert len(retry_countdowns) == 2 and retry_countdowns[0] >= 4  # 指数退避（5 秒起，带抖动）
    row = TelegramMessage.objects.get(build_result=result)
    assert (row.state, row.attempts, row.approval_id) == (MessageState.SENT, 3, approval.pk)
    assert row.message_id == fake_tg.ok_calls("sendMessage")[0].response["result"]["message_id"]


def test_build_result_gives_up_after_max_retries_and_says_so(fake_tg, shop_rule, make_approval,
                                                             django_capture_on_commit_callbacks):
    approval = make_approval(build_number=41)
    fake_tg.server_error("sendMessage", times=100)
    with django_capture_on_commit_callbacks(execute=True):
        result, _created = build_result_record(job_name="shop-backend", build_number=41, result="FAILURE")
    assert len(fake_tg.calls_to("sendMessage")) == MAX_ATTEMPTS  # 不会无限重试
    failed = TelegramMessage.objects.get(build_result=result)
    assert (failed.state, failed.error_code, failed.permanent, failed.attempts) == (
        MessageState.FAILED, "server_error", False, MAX_ATTEMPTS)
    # 审批本身不受通知失败影响
    approval.refresh_from_db()
    assert approval.status == "cancelled"  # 构建先于审批结束（服务的规则），与通知无关


def test_timeout_notice_to_a_blocked_chat_is_recorded(fake_tg, shop_rule, make_approval):
    from approvals.sweeps import approvals_expire_due

    approval = make_approval(timeout_minutes=1)
    fake_tg.kick(GROUP_ID)
    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False):
        assert approvals_expire_due() == [approval.pk]
        timeout_notice_task.delay(approval.pk)
        timeout_notice_task.delay(approval.pk)
    assert len(fake_tg.calls_to("sendMessage")) == 1
    failed = TelegramMessage.objects.get(approval=approval, kind=MessageKind.TIMEOUT)
    assert (failed.state, failed.error_code, failed.permanent) == (MessageState.FAILED, "forbidden", True)


# ---------------------------------------------------------------- 配置变化通知（C7）


def test_config_notice_goes_to_the_default_chat_with_the_summary_escaped(fake_tg, settings):
    settings.TELEGRAM_DEFAULT_CHAT_ID = GROUP_ID
    # 直接调用任务对象：别的测试可能临时替换过注册表里同名的任务
    config_changed_notify_task("users", True, "新建审批人 1，更新 0")
    config_changed_notify_task("app", False, 'JSON 格式错误：第 3 行 {"<script>": "a & b"}')
    ok, refused = fake_tg.chat_messages(GROUP_ID)
    assert ok.text.startswith("✅ 配置已重新加载：users.json") and "新建审批人 1" in ok.text
    assert refused.text.startswith("⛔ 配置被拒绝：app.json") and "上一个好配置继续生效" in refused.text
    assert "{&quot;&lt;script&gt;&quot;: &quot;a &amp; b&quot;}" in refused.html
    assert '{"<script>": "a & b"}' in refused.text


def test_config_notice_with_a_huge_summary_is_cut_to_fit(fake_tg, settings):
    settings.TELEGRAM_DEFAULT_CHAT_ID = GROUP_ID
    config_changed_notify_task("users", False, "<坏>" * 3000)
    [message] = fake_tg.chat_messages(GROUP_ID)
    assert message.text.endswith("…") and len(message.html) <= 4096


def test_config_notice_without_a_default_chat_sends_nothing(fake_tg):
    config_changed_notify_task("users", True, "ok")
    assert fake_tg.calls_to("sendMessage") == []


def test_config_reload_and_refusal_reach_the_default_chat(fake_tg, settings, tmp_path,
                                                          django_capture_on_commit_callbacks):
    """C7 全程：beat 的热加载任务发现文件变化 → 通知任务 → 假 Telegram 上的默认群。"""
    from accounts.tasks import config_reload_task

    settings.TELEGRAM_DEFAULT_CHAT_ID = GROUP_ID
    settings.USERS_CONFIG_FILE = tmp_path / "users.json"
    settings.APP_CONFIG_FILE = tmp_path / "app.json"
    settings.CONFIG_BACKUP_DIR = tmp_path / "backups"
    settings.USERS_CONFIG_FILE.write_text('{"alice": "admin"}', encoding="utf-8")
    with django_capture_on_commit_callbacks(execute=True):
        config_reload_task()
    settings.USERS_CONFIG_FILE.write_text('{"alice": <坏>', encoding="utf-8")
    with django_capture_on_commit_callbacks(execute=True):
        config_reload_task()

    applied, refused = fake_tg.chat_messages(GROUP_ID)
    assert applied.text.startswith("✅ 配置已重新加载：users.json")
    assert refused.text.startswith("⛔ 配置被拒绝：users.json") and "JSON 格式错误" in refused.text
