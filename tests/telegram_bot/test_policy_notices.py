"""发布策略在 Telegram 上的样子（X1、X4、X15、X16）：对着真 HTTP 的假 Bot API——🧊 封版拒绝通知、
📣 升级（群里点名、私信被拉进来的人），以及审批消息里的 🚨 紧急发布、还缺的角色、升级与“B（代 A）”。"""

# covers X1, X4, X15, X16

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine

from accounts.delegations import delegation_grant
from accounts.models import FreezeKind, FreezeWindow, Weekday
from approvals.models import Approval
from approvals.policy_sweeps import approvals_escalate_due, approvals_refuse_frozen
from approvals.selectors import approval_detail
from approvals.services import approval_decide
from telegram_bot.messages import render_approval, render_detail
from telegram_bot.models import MessageKind, MessageState, TelegramMessage
from telegram_bot.tasks import policy_notice_task
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db

SATURDAY = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)  # 上海周六中午
FRIDAY_EVENING = datetime(2026, 11, 27, 9, 50, tzinfo=UTC)  # 上海周五 17:50


@pytest.fixture
def weekend(db):
    return FreezeWindow.objects.create(
        name="周末封版", kind=FreezeKind.WEEKLY, environments=["production"], start_day=Weekday.FRIDAY,
        start_time=time(18, 0), end_day=Weekday.MONDAY, end_time=time(9, 0))


@pytest.fixture
def announce(make_approval, django_capture_on_commit_callbacks):
    def factory(**kwargs) -> Approval:
        with django_capture_on_commit_callbacks(execute=True):
            approval = make_approval(**kwargs)
        return Approval.objects.get(pk=approval.pk)

    return factory


def policy_rows(approval: Approval) -> list[TelegramMessage]:
    return list(TelegramMessage.objects.filter(approval=approval, kind=MessageKind.POLICY).order_by("pk"))


def test_frozen_request_gets_a_short_ice_notice_and_no_buttons(fake_tg, shop_rule, weekend, announce):
    with time_machine.travel(SATURDAY, tick=False):
        approval = announce(environment="production")
        policy_notice_task.delay(approval.pk, "frozen")  # 重复执行：不会再发一条

    [notice] = fake_tg.chat_messages(GROUP_ID)
    assert notice.text.startswith(f"🧊 封版中，发布申请已拒绝 · {approval.public_id}")
    assert "封版：「周末封版」至 2026-11-30 09:00:00" in notice.text
    assert "下一步：构建已终止" in notice.text and "emergency=true" in notice.text
    assert notice.buttons == []
    [row] = policy_rows(approval)
    assert row.state == MessageState.SENT
    assert not TelegramMessage.objects.filter(approval=approval, kind=MessageKind.APPROVAL).exists()


def test_pending_request_refused_when_the_freeze_begins_is_answered_under_its_message(
    fake_tg, shop_rule, weekend, announce, django_capture_on_commit_callbacks
):
    shop_rule.freeze_pending = "refuse"
    shop_rule.save()
    with time_machine.travel(FRIDAY_EVENING, tick=False):
        approval = announce(environment="production")
    message_id = TelegramMessage.objects.get(approval=approval, kind=MessageKind.APPROVAL).message_id
    with time_machine.travel(FRIDAY_EVENING + timedelta(minutes=15), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            assert approvals_refuse_frozen() == [approval.pk]

    [notice] = fake_tg.replies_to(GROUP_ID, message_id)
    assert notice.text.startswith("🧊 封版开始，待审批的发布已拒绝")
    original = fake_tg.message(GROUP_ID, message_id)
    assert "❌ 已拒绝发布" in original.text and "🧊 封版中：「周末封版」至 2026-11-30 09:00:00" in original.text
    assert original.buttons == []


def test_escalation_mentions_in_the_group_and_messages_each_person_privately(
    fake_tg, tg_users, shop_rule, people, announce, django_capture_on_commit_callbacks
):
    shop_rule.escalation_approvers.add(people["outsider"], people["admin"])
    shop_rule.escalate_after_reminders = 1
    shop_rule.save()
    T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    with time_machine.travel(T0, tick=False):
        approval = announce(environment="test")
    Approval.objects.filter(pk=approval.pk).update(reminder_count=1)
    with time_machine.travel(T0 + timedelta(minutes=6), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            assert approvals_escalate_due() == [approval.pk]
        policy_notice_task.delay(approval.pk, "escalated")  # 重复执行无害

    message_id = TelegramMessage.objects.get(approval=approval, kind=MessageKind.APPROVAL).message_id
    [group] = fake_tg.replies_to(GROUP_ID, message_id)
    assert group.text.startswith(f"📣 审批升级 · {approval.public_id}")
    assert "原因：提醒 1 次仍无人决定" in group.text
    assert 'href="tg://user?id=1666"' in group.html and 'href="tg://user?id=1001"' in group.html
    for person in ("outsider", "admin"):
        [private] = fake_tg.chat_messages(people[person].telegram_id)
        assert private.text.startswith(f"📣 请你协助审批 · {approval.public_id}")
        assert f"/approve {approval.public_id}" in private.text and "tg://user" not in (private.html or "")
    assert len(policy_rows(approval)) == 3


def test_escalation_notice_is_not_sent_once_decided(fake_tg, shop_rule, people, announce):
    shop_rule.escalation_approvers.add(people["outsider"])
    shop_rule.escalate_after_reminders = 1
    shop_rule.save()
    approval = announce(environment="test")
    Approval.objects.filter(pk=approval.pk).update(reminder_count=1)
    approvals_escalate_due()
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
    policy_notice_task.delay(approval.pk, "escalated")
    assert {r.state for r in policy_rows(approval)} == {MessageState.SKIPPED}


def test_approval_message_shows_emergency_missing_roles_escalation_and_delegated_votes(
    shop_rule, people, roles, weekend, make_approval
):
    shop_rule.required_roles.add(roles["ops_lead"])
    now = SATURDAY
    with time_machine.travel(now, tick=False):
        delegation_grant(delegator=people["approver"], delegate=people["outsider"], starts_at=now,
                         ends_at=now + timedelta(days=1), channel="telegram")
        approval = make_approval(environment="production", emergency=True, emergency_reason="支付回调 <故障>")
        approval_decide(approval=approval, approver=people["approver2"], decision="approve", channel="api")
        approval = Approval.objects.get(pk=approval.pk)
        Approval.objects.filter(pk=approval.pk).update(escalated_at=now, escalation_reason="deadline",
                                                       escalate_at=approval.expires_at - timedelta(minutes=10),
                                                       escalated_to=[people["admin"].pk])
        approval = Approval.objects.get(pk=approval.pk)
        text = render_approval(approval, now=now)
    assert "🚨 <b>紧急发布，突破封版「周末封版」至 2026-11-30 09:00:00</b>" in text
    assert "<b>紧急理由：</b>支付回调 &lt;故障&gt;" in text
    assert "<b>还缺角色：</b>运维负责人、管理员" in text
    assert "📣 已升级（距截止不到 10 分钟仍无人决定），请 Alice 协助审批" in text
    assert "<b>同意票数：</b>1/3（Erin）" in text

    with time_machine.travel(now, tick=False):
        approval_decide(approval=approval, approver=people["outsider"], decision="approve", channel="telegram")
        detail = render_detail(approval_detail(approval.public_id))
    assert "Mallory（代 Bob） 同意" in detail and "<b>还缺角色：</b>管理员" in detail
    assert "2/3（Erin、Mallory（代 Bob））" in detail


# ---------------------------------------------------------------- 通知任务丢了（投递时 broker 不可用）


def recover_at(moment, django_capture_on_commit_callbacks):
    from telegram_bot.tasks import telegram_recovery_sweep_task

    with time_machine.travel(moment, tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            return telegram_recovery_sweep_task()


def test_lost_frozen_notice_is_sent_by_the_recovery_sweep_once(fake_tg, shop_rule, weekend, make_approval,
                                                                django_capture_on_commit_callbacks):
    with time_machine.travel(SATURDAY, tick=False):
        with django_capture_on_commit_callbacks(execute=False):  # 提交后的任务全丢了
            approval = make_approval(environment="production")
    assert not fake_tg.chat_messages(GROUP_ID)
    assert recover_at(SATURDAY + timedelta(seconds=5), django_capture_on_commit_callbacks)["policy_notices"] == []
    found = recover_at(SATURDAY + timedelta(seconds=30), django_capture_on_commit_callbacks)
    assert found["policy_notices"] == [approval.pk]
    [notice] = fake_tg.chat_messages(GROUP_ID)
    assert notice.text.startswith(f"🧊 封版中，发布申请已拒绝 · {approval.public_id}")
    assert recover_at(SATURDAY + timedelta(seconds=60), django_capture_on_commit_callbacks)["policy_notices"] == []
    assert len(fake_tg.chat_messages(GROUP_ID)) == 1


def test_lost_freeze_start_notice_is_recovered_with_its_own_wording(
    fake_tg, shop_rule, people, weekend, announce, django_capture_on_commit_callbacks
):
    shop_rule.freeze_pending = "refuse"
    shop_rule.save()
    with time_machine.travel(FRIDAY_EVENING, tick=False):
        refused = announce(environment="production")
    with time_machine.travel(FRIDAY_EVENING + timedelta(minutes=15), tick=False):
        with django_capture_on_commit_callbacks(execute=False):
            assert approvals_refuse_frozen() == [refused.pk]
    recover_at(FRIDAY_EVENING + timedelta(minutes=16), django_capture_on_commit_callbacks)
    message_id = TelegramMessage.objects.get(approval=refused, kind=MessageKind.APPROVAL).message_id
    [notice] = fake_tg.replies_to(GROUP_ID, message_id)
    assert notice.text.startswith("🧊 封版开始，待审批的发布已拒绝")


def test_lost_escalation_notice_is_recovered(fake_tg, tg_users, shop_rule, people, announce,
                                             django_capture_on_commit_callbacks):
    shop_rule.escalation_approvers.add(people["admin"])
    shop_rule.escalate_after_reminders = 1
    shop_rule.save()
    T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    with time_machine.travel(T0, tick=False):
        pending = announce(environment="test")
    Approval.objects.filter(pk=pending.pk).update(reminder_count=1)
    with time_machine.travel(T0 + timedelta(minutes=6), tick=False):
        with django_capture_on_commit_callbacks(execute=False):
            assert approvals_escalate_due() == [pending.pk]
    found = recover_at(T0 + timedelta(minutes=7), django_capture_on_commit_callbacks)
    assert found["policy_notices"] == [pending.pk]
    [private] = fake_tg.chat_messages(people["admin"].telegram_id)
    assert private.text.startswith(f"📣 请你协助审批 · {pending.public_id}")
