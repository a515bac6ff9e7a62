"""X6：很多提醒同时到期时，摘要按群节流发送，不触发 Telegram 的群限速（假 Bot API 按比例缩短的时间窗强制执行）。"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import Approval
from jenkins_bridge.models import JenkinsServer
from telegram_bot.messages import MAX_MESSAGE_LENGTH, tg_length
from telegram_bot.models import MessageKind, MessageState, TelegramMessage
from telegram_bot.tasks import reminder_digest_task
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db

# 真实规则是 20 条/60 秒；测试把时间缩短 15 倍：4 条/秒窗口 … 等价于 20 条/分钟的节奏按比例压缩
PER_WINDOW, WINDOW = 4, 1.0


def due_in_group(n: int) -> list[int]:
    server = JenkinsServer.objects.default()
    now = timezone.now()
    Approval.objects.bulk_create([
        Approval(public_id=f"P{i:07d}", jenkins_server=server, job_name=f"folder/shop-{i}", build_number=i,
                 project="shop-backend", environment="production" if i % 4 == 0 else "test",
                 version=f"v1.{i}.0", expires_at=now + timedelta(minutes=5 + i % 50), next_reminder_at=now,
                 chat_id=GROUP_ID, reminder_count=1)
        for i in range(n)
    ])
    return list(Approval.objects.filter(job_name__startswith="folder/shop-").values_list("pk", flat=True))


def test_many_reminders_in_one_group_stay_under_the_group_rate_limit(fake_tg, shop_rule, settings):
    fake_tg.limit_groups(PER_WINDOW, WINDOW)
    # 发送器按群的间隔（默认 3.2 秒 = 3 秒 + 余量）同比缩短
    settings.TELEGRAM_PACING_GROUP_SECONDS = WINDOW / PER_WINDOW * 3.2 / 3.0
    ids = due_in_group(300)

    reminder_digest_task.delay(GROUP_ID, ids)

    calls = fake_tg.calls_to("sendMessage")
    assert [c.status for c in calls if c.status != 200] == []  # 零个 429
    messages = [m for m in fake_tg.chat_messages(GROUP_ID) if "审批提醒" in m.text]
    assert 1 < len(messages) == len(calls)
    assert max(tg_length(m.text) for m in messages) <= MAX_MESSAGE_LENGTH
    assert TelegramMessage.objects.filter(kind=MessageKind.REMINDER, state=MessageState.SENT).count() == 300


def test_without_pacing_the_429_retry_after_is_waited_out_and_nothing_is_lost(fake_tg, shop_rule):
    fake_tg.limit_groups(PER_WINDOW, WINDOW)  # 夹具把节流间隔设成了 0：必然撞上限速
    ids = due_in_group(300)

    reminder_digest_task.delay(GROUP_ID, ids)

    statuses = [c.status for c in fake_tg.calls_to("sendMessage")]
    assert 429 in statuses
    messages = [m for m in fake_tg.chat_messages(GROUP_ID) if "审批提醒" in m.text]
    assert len(messages) == statuses.count(200)
    notified = TelegramMessage.objects.filter(kind=MessageKind.REMINDER, state=MessageState.SENT)
    assert sorted(notified.values_list("approval_id", flat=True)) == sorted(ids)  # 每条恰好一次
