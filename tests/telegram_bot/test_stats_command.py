"""Telegram /stats（X18）：管理员或关联了后台 staff 账号的审批人看到最近 30 天的几个大数字与统计页链接；其他人被拒绝。

真实的 PTB Application 长轮询假 Bot API（tests/fake_telegram.py），数字来自真实的数据库查询。
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import Status
from tests.approvals.test_analytics import make_row
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def recent(make_approval, people):
    """最近几天：同意 10、30 分钟，拒绝 60 分钟，一条超时，一条等了 2 小时的待审批。"""
    now = timezone.now()
    bob = people["approver"]
    for days, status, minutes, reminders in ((1, Status.APPROVED, 10, 0), (2, Status.APPROVED, 30, 1),
                                             (3, Status.REJECTED, 60, 0), (4, Status.TIMEOUT, 30, 6)):
        make_row(make_approval, project="shop-backend", environment="test", created=now - timedelta(days=days),
                 status=status, after_minutes=minutes, reminders=reminders,
                 votes=[(bob, "approve" if status == Status.APPROVED else "reject", minutes)]
                 if status != Status.TIMEOUT else [])
    make_row(make_approval, project="shop-backend", environment="test", created=now - timedelta(hours=2, minutes=1))


def test_admin_gets_the_headline_numbers_and_the_link(bot, fake_tg, tg_users, shop_rule, recent, settings):
    settings.PUBLIC_BASE_URL = "https://approval.example.com"

    async def scenario(h):
        reply = await h.say(tg_users["admin"], GROUP_ID, "/stats")
        text = reply.text
        assert text.startswith("📈 审批分析（最近 30 天，截至 ")
        assert "新建：5（✅ 2 ❌ 1 ⌛ 1 🚫 0）" in text
        assert "决定耗时：中位数 30 分钟，P90 54 分钟" in text  # 10、30、60 分钟
        assert "当前待审批：1，最久已等 2 小时 1 分钟" in text
        assert "超时：1，封版拒绝：0" in text
        assert "无需提醒即决定：67%" in text
        assert text.endswith("图表与明细：https://approval.example.com/stats")
        assert '<a href="https://approval.example.com/stats">https://approval.example.com/stats</a>' in reply.html

    bot.run(scenario)


def test_approver_linked_to_a_staff_user_may_see_stats(bot, fake_tg, tg_users, shop_rule, people,
                                                       django_user_model):
    people["approver"].user = django_user_model.objects.create_user("bob", password="pw", is_staff=True)
    people["approver"].save()

    async def scenario(h):
        reply = await h.say(tg_users["approver"], tg_users["approver"]["id"], "/stats")  # 私聊也行
        assert reply.text.startswith("📈 审批分析") and "新建：0" in reply.text
        assert "决定耗时：中位数 -，P90 -" in reply.text

    bot.run(scenario)


@pytest.mark.parametrize("linked", ["none", "not_staff", "inactive_staff"])
def test_other_approvers_are_refused(bot, fake_tg, tg_users, shop_rule, people, django_user_model, recent, linked):
    if linked != "none":
        user = django_user_model.objects.create_user("bob", password="pw", is_staff=linked == "inactive_staff",
                                                     is_active=linked != "inactive_staff")
        people["approver"].user = user
        people["approver"].save()

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, "/stats")
        assert reply.text == "⚠️ 只有管理员，或关联了后台 staff 账号的审批人，才能查看审批分析。"

    bot.run(scenario)


def test_unregistered_users_are_refused(bot, fake_tg, tg_users, shop_rule, recent):
    async def scenario(h):
        reply = await h.say(tg_users["stranger"], GROUP_ID, "/stats")
        assert reply.text.startswith("⚠️ 你还不是审批系统的用户") and "新建" not in reply.text

    bot.run(scenario)
