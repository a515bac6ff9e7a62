"""提醒摘要与超时通知（R4–R8、R11、X6）：对着真 HTTP 的假 Bot API，从扫描任务一路到消息落在群里。"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from approvals.models import Approval, Status
from approvals.services import approval_cancel, approval_decide
from approvals.tasks import reminder_sweep_task, timeout_sweep_task
from telegram_bot.messages import MAX_MESSAGE_LENGTH, tg_length
from telegram_bot.models import MessageKind, MessageState, TelegramMessage
from telegram_bot.notices.common import entity_count
from telegram_bot.notices.common import fits_one_message as digest_fits
from telegram_bot.tasks import reminder_digest_task, timeout_notice_task
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
GROUP_LINK = "https://t.me/c/1234567890/"


@pytest.fixture
def frank(people, roles, shop_rule):
    """只登记了 @用户名、还没和机器人说过话的审批人：提醒里只能用 @frank_ops。"""
    from accounts.models import Approver

    person = Approver.objects.create(username="frank", display_name="Frank", role=roles["ops_lead"],
                                     telegram_username="frank_ops")
    shop_rule.approvers.add(person)
    return person


@pytest.fixture
def announce(make_approval, django_capture_on_commit_callbacks):
    """走真正的服务建审批，并让提交后的任务执行：审批消息发到假 Telegram 上。"""

    def factory(**kwargs) -> Approval:
        with django_capture_on_commit_callbacks(execute=True):
            approval = make_approval(**kwargs)
        return Approval.objects.get(pk=approval.pk)

    return factory


def approval_message_id(approval: Approval) -> int:
    return TelegramMessage.objects.get(approval=approval, kind=MessageKind.APPROVAL).message_id


def digests(fake) -> list:
    return [m for m in fake.chat_messages(GROUP_ID) if "审批提醒" in m.text]


def block_of(html: str, public_id: str) -> str:
    """摘要里某条审批的那一段（段与段之间空一行）。"""
    return next(b for b in html.split("\n\n") if public_id in b)


# ---------------------------------------------------------------- 摘要内容


def test_one_digest_for_several_approvals_with_mentions_urgency_time_left_and_links(
    fake_tg, shop_rule, people, frank, announce
):
    with time_machine.travel(T0, tick=False):
        relaxed = announce(environment="test")
        prod = announce(job_name="folder/shop-api", environment="production")
        burning = announce(job_name="folder/shop-web", environment="production", timeout_minutes=8)
        approval_decide(approval=prod, approver=people["approver"], decision="approve", channel="telegram")
        reminder_digest_task.delay(GROUP_ID, [relaxed.pk, prod.pk, burning.pk])

    [digest] = digests(fake_tg)
    html = digest.html
    assert "审批提醒：3 条发布等待审批" in digest.text and "（1/" not in digest.text
    # 最紧急的在前：生产且不到 10 分钟 🔥，生产 ⚠️，测试 🔔
    positions = [html.index(a.public_id) for a in (burning, prod, relaxed)]
    assert positions == sorted(positions)
    hot, warm, calm = (block_of(html, a.public_id) for a in (burning, prod, relaxed))
    assert hot.startswith("🔥") and warm.startswith("⚠️") and calm.startswith("🔔")
    assert "剩余 8 分钟（截止 2026-11-26 10:08:00）" in hot and "同意 0/2" in hot
    assert "剩余 30 分钟" in warm and "同意 1/2" in warm
    assert "剩余 1 小时 0 分钟" in calm and "同意 0/1" in calm
    # 只点名还没投票的审批人（R5）；有数字 id 用 tg://user 链接，只有用户名的用 @用户名
    assert 'href="tg://user?id=1002"' in hot and 'href="tg://user?id=1005"' in hot
    assert warm.endswith("待审批：Erin") and "Bob" not in warm  # Bob 已投票；Erin 在上一段已被提及
    assert "Bob" in calm and "@frank_ops" in calm
    # 同一条消息里每人只链接一次：Telegram 只处理前 100 个实体，重复的提及也不会多提醒
    assert html.count("tg://user?id=1002") == 1
    assert "tg://user?id=1004" not in html  # 发起人不能审批自己的构建，不提醒他
    # 负责人也被提醒（R8），每条审批都能点回原消息
    assert re.search(r'项目负责人：<a href="tg://user\?id=1001">Alice</a>', html)
    for approval, block in ((burning, hot), (prod, warm), (relaxed, calm)):
        assert f'href="{GROUP_LINK}{approval_message_id(approval)}"' in block
    assert tg_length(digest.text) <= MAX_MESSAGE_LENGTH

    rows = TelegramMessage.objects.filter(kind=MessageKind.REMINDER, state=MessageState.SENT)
    assert sorted(r.approval_id for r in rows) == sorted([relaxed.pk, prod.pk, burning.pk])
    assert {(r.chat_id, r.message_id) for r in rows} == {(GROUP_ID, digest.message["message_id"])}

    # 重复投递（acks_late 的重投、第二个 worker）：已发过的这次提醒不再发
    reminder_digest_task.delay(GROUP_ID, [relaxed.pk, prod.pk, burning.pk])
    assert len(digests(fake_tg)) == 1


def test_digest_is_split_only_when_it_would_exceed_4096_characters(fake_tg, shop_rule, make_approval):
    few = [make_approval(job_name=f"folder/shop-few{i}") for i in range(5)]
    reminder_digest_task.delay(GROUP_ID, [a.pk for a in few])
    assert len(digests(fake_tg)) == 1

    many = [make_approval(job_name=f"folder/shop-many{i}", version=f"v2.{i}.0-长版本号" * 3) for i in range(45)]
    reminder_digest_task.delay(GROUP_ID, [a.pk for a in many])
    parts = digests(fake_tg)[1:]
    assert len(parts) > 1
    for index, part in enumerate(parts, start=1):
        assert f"审批提醒：45 条发布等待审批（{index}/{len(parts)}）" in part.text
        assert tg_length(part.text) <= MAX_MESSAGE_LENGTH and entity_count(part.html) <= 100
    # 每条审批恰好出现一次
    shown = [pid for part in parts for pid in re.findall(r"<code>([0-9A-Z]{8})</code>", part.html)]
    assert sorted(shown) == sorted(a.public_id for a in many)
    # 不提前拆：每条（最后一条除外）再放进下一条的第一段就放不下了
    for part, following in zip(parts, parts[1:], strict=False):
        body, tail = part.html.rsplit("\n\n", 1)
        first_block = following.html.split("\n\n")[1]
        assert not digest_fits(f"{body}\n\n{first_block}\n\n{tail}")


def test_decided_cancelled_and_expired_approvals_are_skipped_at_send_time(fake_tg, shop_rule, people,
                                                                           make_approval):
    approved = make_approval()
    approval_decide(approval=approved, approver=people["approver"], decision="approve", channel="api")
    cancelled = make_approval(job_name="folder/shop-c")
    approval_cancel(approval=cancelled, reason="构建已结束")
    expired = make_approval(job_name="folder/shop-e", timeout_minutes=1)
    still = make_approval(job_name="folder/shop-s")
    ids = [approved.pk, cancelled.pk, expired.pk, still.pk]

    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False):
        reminder_digest_task.delay(GROUP_ID, ids)
    [digest] = digests(fake_tg)
    assert "审批提醒：1 条发布等待审批" in digest.text
    assert still.public_id in digest.text
    assert all(a.public_id not in digest.text for a in (approved, cancelled, expired))

    # 全都决定了：什么也不发（R4）
    approval_decide(approval=still, approver=people["approver"], decision="reject", channel="api")
    reminder_digest_task.delay(GROUP_ID, ids)
    assert len(digests(fake_tg)) == 1


def test_digest_without_chat_uses_the_default_chat_or_records_why_nothing_was_sent(fake_tg, settings, people,
                                                                                    make_approval):
    from accounts.models import ProjectRule

    rule = ProjectRule.objects.create(project="lonely-service")
    rule.approvers.add(people["approver"])
    approval = make_approval(job_name="lonely-service")
    assert approval.chat_id is None

    reminder_digest_task.delay(None, [approval.pk])
    failed = TelegramMessage.objects.get(approval=approval, kind=MessageKind.REMINDER)
    assert (failed.state, failed.error_code, failed.sequence) == (MessageState.FAILED, "no_chat", 0)
    assert fake_tg.calls_to("sendMessage") == []

    fake_tg.add_group(-1009990001, "默认群")
    settings.TELEGRAM_DEFAULT_CHAT_ID = -1009990001
    approval.reminder_count = 1  # 下一次提醒
    approval.save(update_fields=["reminder_count"])
    reminder_digest_task.delay(None, [approval.pk])
    [message] = fake_tg.chat_messages(-1009990001)
    assert approval.public_id in message.text and "tg://user?id=1002" in message.html


# ---------------------------------------------------------------- 整个提醒流程（冻结时钟）


def test_full_reminder_flow_from_sweep_to_the_group(fake_tg, shop_rule, people, announce,
                                                    django_capture_on_commit_callbacks):
    with time_machine.travel(T0, tick=False):
        approval = announce(environment="test")
    message_id = approval_message_id(approval)
    assert approval.next_reminder_at == T0 + timedelta(minutes=5)

    def sweep_at(moment: datetime) -> int:
        with time_machine.travel(moment, tick=False), django_capture_on_commit_callbacks(execute=True):
            return reminder_sweep_task()

    assert sweep_at(T0 + timedelta(minutes=4)) == 0
    assert sweep_at(T0 + timedelta(minutes=5, seconds=10)) == 1
    [first] = digests(fake_tg)
    # 只有一条审批：直接回复在原审批消息下
    assert first.message["reply_to_message"]["message_id"] == message_id
    assert "剩余 54 分钟" in first.text and "tg://user?id=1002" in first.html
    assert sweep_at(T0 + timedelta(minutes=6)) == 0  # 同一次提醒不会再发

    # 第二次在 5 + 7.5 分钟（越来越稀疏，R2）
    assert sweep_at(T0 + timedelta(minutes=12)) == 0
    assert sweep_at(T0 + timedelta(minutes=12, seconds=40)) == 1
    assert len(digests(fake_tg)) == 2
    numbers = sorted(TelegramMessage.objects.filter(approval=approval, kind=MessageKind.REMINDER,
                                                    state=MessageState.SENT).values_list("sequence", flat=True))
    assert numbers == [1, 2]

    # 决定之后不再提醒（R4）
    with time_machine.travel(T0 + timedelta(minutes=13), tick=False), \
            django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    assert sweep_at(T0 + timedelta(minutes=30)) == 0
    assert len(digests(fake_tg)) == 2


def test_two_chats_get_one_digest_each(fake_tg, shop_rule, people, make_approval,
                                       django_capture_on_commit_callbacks):
    from accounts.models import ProjectRule

    fake_tg.add_group(-1005550001, "支付群")
    pay = ProjectRule.objects.create(project="pay-service", chat_id=-1005550001)
    pay.approvers.add(people["approver2"])
    with time_machine.travel(T0, tick=False):
        shops = [make_approval(job_name=f"folder/shop-{i}") for i in range(3)]
        pays = [make_approval(job_name="pay-service", build_number=900 + i) for i in range(1)]
    with time_machine.travel(T0 + timedelta(minutes=6), tick=False), \
            django_capture_on_commit_callbacks(execute=True):
        assert reminder_sweep_task() == 4
    [shop_digest] = digests(fake_tg)
    assert all(a.public_id in shop_digest.text for a in shops)
    [pay_digest] = [m for m in fake_tg.chat_messages(-1005550001) if "审批提醒" in m.text]
    assert pays[0].public_id in pay_digest.text and "tg://user?id=1005" in pay_digest.html


# ---------------------------------------------------------------- 超时通知


@pytest.mark.parametrize(("policy", "next_step"), [("reject", "构建已终止"), ("mark", "仅标记为超时，构建未被操作")])
def test_timeout_notice_replies_to_the_approval_message_for_each_policy(
    fake_tg, shop_rule, people, announce, django_capture_on_commit_callbacks, policy, next_step
):
    shop_rule.timeout_policy = policy
    shop_rule.save()
    with time_machine.travel(T0, tick=False):
        approval = announce(environment="test")
    message_id = approval_message_id(approval)

    with time_machine.travel(approval.expires_at + timedelta(seconds=5), tick=False), \
            django_capture_on_commit_callbacks(execute=True):
        assert timeout_sweep_task() == 1

    approval.refresh_from_db()
    assert approval.status == Status.TIMEOUT and approval.timeout_policy == policy
    [notice] = [m for m in fake_tg.replies_to(GROUP_ID, message_id) if "审批已超时" in m.text]
    assert approval.public_id in notice.text
    assert "截止 2026-11-26 11:00:00 前没有足够的同意票（0/1）" in notice.text
    assert ("超时即拒绝" if policy == "reject" else "仅标记超时") in notice.text
    assert f"下一步：{next_step}" in notice.text
    assert "tg://user?id=1002" in notice.html  # 没投票的审批人
    assert "tg://user?id=1001" in notice.html and "tg://user?id=1004" in notice.html  # 负责人与发起人
    row = TelegramMessage.objects.get(approval=approval, kind=MessageKind.TIMEOUT)
    assert (row.state, row.reply_to_message_id, row.message_id) == (
        MessageState.SENT, message_id, notice.message["message_id"])

    # 再投递一次：不重复通知
    timeout_notice_task.delay(approval.pk)
    assert len(fake_tg.replies_to(GROUP_ID, message_id)) == 1
    # 原审批消息本身由刷新任务改成了超时状态、按钮被移除
    original = fake_tg.message(GROUP_ID, message_id)
    assert "审批已超时" in original.text and original.buttons == []


def test_no_timeout_notice_for_an_approval_that_was_decided_first(fake_tg, shop_rule, people, make_approval):
    approval = make_approval()
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
    timeout_notice_task.delay(approval.pk)
    assert fake_tg.calls_to("sendMessage") == []


def test_timeout_notice_without_an_approval_message_goes_to_the_rule_chat(fake_tg, shop_rule, make_approval):
    approval = make_approval(timeout_minutes=1)
    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False):
        from approvals.sweeps import approvals_expire_due

        assert approvals_expire_due() == [approval.pk]
        timeout_notice_task.delay(approval.pk)
    [notice] = fake_tg.chat_messages(GROUP_ID)
    assert "审批已超时" in notice.text and "reply_to_message" not in notice.message


def test_a_long_digest_continues_in_a_new_task_when_its_time_budget_runs_out(fake_tg, shop_rule, make_approval,
                                                                             monkeypatch):
    """节流下每条要等 3 秒：很长的摘要分几次任务发完（不超过 Celery 软超时），已发的部分不重发。"""
    from telegram_bot.notices import reminders

    monkeypatch.setattr(reminders, "DIGEST_TIME_BUDGET_SECONDS", 0)  # 每次任务只发一条
    many = [make_approval(job_name=f"folder/shop-b{i}", version="v9.9.9-" + "很长" * 20) for i in range(40)]
    reminder_digest_task.delay(GROUP_ID, [a.pk for a in many])
    parts = digests(fake_tg)
    assert len(parts) >= 2  # 第一次任务只发了第一条，其余由接续的任务发出
    shown = [pid for part in parts for pid in re.findall(r"<code>([0-9A-Z]{8})</code>", part.html)]
    assert sorted(shown) == sorted(a.public_id for a in many)
    assert TelegramMessage.objects.filter(kind=MessageKind.REMINDER, state=MessageState.SENT).count() == 40


def test_timeout_notice_lost_with_the_broker_is_sent_once_by_the_recovery_sweep(
    fake_tg, shop_rule, make_approval, django_capture_on_commit_callbacks
):
    """超时那一刻 broker 不可用（提交后的投递丢了）：补发扫描补发一次超时通知，之后不再重复。"""
    from telegram_bot.tasks import telegram_recovery_sweep_task

    approval = make_approval(timeout_minutes=1)
    # 不执行提交后的回调：相当于投递任务时 broker 不可用
    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False), \
            django_capture_on_commit_callbacks(execute=False):
        assert timeout_sweep_task() == 1
    assert fake_tg.calls_to("sendMessage") == []
    with time_machine.travel(timezone.now() + timedelta(minutes=3), tick=False):
        assert telegram_recovery_sweep_task()["timeout_notices"] == []  # 还不到 5 分钟：任务可能只是在排队
    with time_machine.travel(timezone.now() + timedelta(minutes=9), tick=False), \
            django_capture_on_commit_callbacks(execute=True):
        assert telegram_recovery_sweep_task()["timeout_notices"] == [approval.pk]
        assert telegram_recovery_sweep_task()["timeout_notices"] == []
    notices = [m for m in fake_tg.chat_messages(GROUP_ID) if "审批已超时" in m.text]
    assert len(notices) == 1 and approval.public_id in notices[0].text
