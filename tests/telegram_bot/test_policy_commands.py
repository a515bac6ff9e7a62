"""/freeze、/unfreeze（X4）与 /delegate、/undelegate（X16）：真实的 PTB Application 长轮询假 Bot API。"""

# covers X4, X16

from __future__ import annotations

from datetime import time, timedelta

import pytest
from django.utils import timezone

from accounts.models import Delegation, FreezeKind, FreezeWindow, PolicyEvent, PolicyEventKind, Source, Weekday
from approvals.models import Status
from telegram_bot.handlers.policy import parse_duration
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(("text", "minutes"), [("2h", 120), ("90m", 90), ("1d12h", 2160), ("2小时", 120),
                                               ("30分钟", 30), ("1天", 1440), ("2H30M", 150)])
def test_durations(text, minutes):
    assert parse_duration(text) == minutes


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "两小时", "2h-1m"])
def test_bad_durations(text):
    assert parse_duration(text) is None


def test_freeze_lists_current_and_next_windows(bot, fake_tg, tg_users, shop_rule):
    now = timezone.now()
    FreezeWindow.objects.create(name="临时封版", kind=FreezeKind.ONCE, environments=["production"],
                                starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=2),
                                reason="数据库迁移")
    FreezeWindow.objects.create(name="周末封版", kind=FreezeKind.WEEKLY, environments=["*"], projects=["shop-*"],
                                start_day=Weekday.FRIDAY, start_time=time(18, 0), end_day=Weekday.MONDAY,
                                end_time=time(9, 0), source=Source.FILE, key="weekend")

    async def scenario(h):
        reply = await h.say(tg_users["outsider"], GROUP_ID, "/freeze")
        lines = reply.text.splitlines()
        assert lines[0] == "🧊 封版窗口"
        current = lines[lines.index("正在封版：") + 1]
        assert current.startswith("• 临时封版 · 🔴 生产 · 至 ") and "还剩 1 小时" in current
        assert current.endswith("原因：数据库迁移")
        upcoming = lines[lines.index("接下来：") + 1:]
        assert any(line.startswith("• 周末封版 · 所有环境 · 项目 shop-*") for line in upcoming)
        reply = await h.say(tg_users["stranger"], GROUP_ID, "/freeze")
        assert "你还不是审批系统的用户" in reply.text

    bot.run(scenario)


def test_admin_starts_and_ends_an_adhoc_freeze_and_both_are_audited(bot, fake_tg, tg_users, shop_rule,
                                                                     make_approval):
    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, "/freeze production 2h 数据库迁移")
        assert reply.text == "⚠️ 只有管理员可以开始临时封版。"
        reply = await h.say(tg_users["admin"], GROUP_ID, "/freeze production 两小时 数据库迁移")
        assert reply.text.startswith("⚠️ 时长「两小时」看不懂")
        reply = await h.say(tg_users["admin"], GROUP_ID, "/freeze production 2h")
        assert reply.text.startswith("用法：/freeze 环境 时长 原因")
        reply = await h.say(tg_users["admin"], GROUP_ID, "/freeze 生产 2h 数据库 迁移")
        assert reply.text.startswith("🧊 已开始临时封版：🔴 生产，至 ")
        frozen = await h.db(make_approval, environment="production")
        assert frozen.status == Status.REJECTED and frozen.freeze_name == "临时封版"
        reply = await h.say(tg_users["approver"], GROUP_ID, "/unfreeze production")
        assert reply.text == "⚠️ 只有管理员可以结束临时封版。"
        reply = await h.say(tg_users["admin"], GROUP_ID, "/unfreeze 生产")
        assert reply.text == "✅ 已结束临时封版：🔴 生产。"
        allowed = await h.db(make_approval, environment="production")
        assert allowed.status == Status.PENDING
        reply = await h.say(tg_users["admin"], GROUP_ID, "/unfreeze")
        assert reply.text == "⚠️ 没有可以结束的临时封版。"

    bot.run(scenario)
    window = FreezeWindow.objects.get()
    assert window.reason == "数据库 迁移" and window.source == Source.ADMIN
    events = list(PolicyEvent.objects.order_by("id").values_list("kind", "actor__username", "channel"))
    assert events == [(PolicyEventKind.FREEZE_STARTED, "alice", "telegram"),
                      (PolicyEventKind.FREEZE_ENDED, "alice", "telegram")]


def test_unfreeze_does_not_end_windows_from_the_config_file(bot, fake_tg, tg_users, shop_rule):
    now = timezone.now()
    FreezeWindow.objects.create(name="春节封版", kind=FreezeKind.ONCE, environments=["production"],
                                starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=3),
                                source=Source.FILE, key="spring")

    async def scenario(h):
        reply = await h.say(tg_users["admin"], GROUP_ID, "/unfreeze production")
        assert reply.text.startswith("⚠️ 没有可以结束的临时封版。仍在生效：春节封版")

    bot.run(scenario)
    assert FreezeWindow.objects.get().ends_at == now + timedelta(days=3)


def test_delegate_list_and_undelegate(bot, fake_tg, tg_users, shop_rule, people):
    today = timezone.localdate()
    start, end = today.isoformat(), (today + timedelta(days=3)).isoformat()

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, f"/delegate @mallory {start} {end} 项目=shop-* 休假")
        assert reply.text.startswith("✅ 已委托：我 → Mallory，") and "Mallory（代 Bob）" in reply.text
        assert "（项目 shop-*）" in reply.text
        reply = await h.say(tg_users["approver"], GROUP_ID, f"/delegate @mallory {start} {end}")
        assert reply.text.startswith("⚠️ 你已把审批权委托给 Mallory")
        reply = await h.say(tg_users["outsider"], GROUP_ID, "/delegate")
        assert "Bob → 我，" in reply.text
        reply = await h.say(tg_users["approver"], GROUP_ID, f"/delegate @nobody {start} {end}")
        assert reply.text == "⚠️ 找不到审批人「@nobody」：受托人必须是登记过的人。"
        reply = await h.say(tg_users["approver"], GROUP_ID, f"/delegate @erin {end} {start}")
        assert reply.text == "⚠️ 结束日期不能早于开始日期。"
        reply = await h.say(tg_users["approver"], GROUP_ID, f"/delegate @erin {start} 9999-12-31")
        assert reply.text == "⚠️ 一次委托最长 366 天。"  # 以前算结束日的第二天时溢出，处理器崩溃
        reply = await h.say(tg_users["approver"], GROUP_ID, "/delegate @erin 12/20 12/31")
        assert reply.text.startswith("⚠️ 日期要写成 2026-12-20 这样。")
        reply = await h.say(tg_users["requester"], GROUP_ID, f"/delegate @erin {start} {end}")
        assert reply.text == "⚠️ 你的角色「开发」没有审批权限，没有可以委托的审批权。"
        reply = await h.say(tg_users["approver"], GROUP_ID, "/undelegate @mallory")
        assert reply.text == "✅ 已撤销给 Mallory 的 1 条委托。"
        reply = await h.say(tg_users["approver"], GROUP_ID, "/undelegate @mallory")
        assert reply.text == "⚠️ 你没有委托给 Mallory 的有效委托。"

    bot.run(scenario)
    delegation = Delegation.objects.get()
    assert delegation.projects == ["shop-*"] and delegation.reason == "休假" and delegation.revoked_at is not None
    assert delegation.ends_at - delegation.starts_at == timedelta(days=4)  # 结束日当天也算
    kinds = list(PolicyEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == [PolicyEventKind.DELEGATION_GRANTED, PolicyEventKind.DELEGATION_REVOKED]
