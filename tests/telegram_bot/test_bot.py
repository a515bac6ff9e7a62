"""真实的 PTB Application 长轮询假 Bot API：按钮、命令、身份绑定、只服务已配置的聊天、去重。

每个测试在一个事件循环里起机器人，场景函数像用户一样发消息、点按钮，再看机器人通过 HTTP 做了什么。
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from accounts.models import Approver
from approvals.models import Approval, ApprovalEvent, Channel, EventKind, Status, Vote
from approvals.services import approval_decide
from telegram_bot.models import IdentityEvent, IdentityEventKind, ProcessedUpdate, ReasonPrompt, TelegramMessage
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db(transaction=True)


def announced(fake, approval):
    row = TelegramMessage.objects.get(approval=approval)
    return row.message_id


def nothing_written(approval: Approval) -> None:
    approval.refresh_from_db()
    assert approval.status == Status.PENDING
    assert not Vote.objects.filter(approval=approval).exists()


# ---------------------------------------------------------------- 按钮


def test_button_approve_decides_answers_and_edits_the_message(bot, fake_tg, tg_users, shop_rule, make_approval):
    approval = make_approval()
    message_id = announced(fake_tg, approval)

    async def scenario(h):
        answer = await h.tap(tg_users["approver"], GROUP_ID, message_id, f"ap:{approval.public_id}:a")
        assert answer == {"text": f"✅ 已同意发布 {approval.public_id}，构建继续。", "show_alert": False}

    bot.run(scenario)
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by_name, approval.decision_channel) == ("approved", "Bob", "telegram")
    stored = fake_tg.message(GROUP_ID, message_id)
    assert "✅ 已同意发布" in stored.text and "决定人：Bob" in stored.text and stored.buttons == []


def test_outsider_tap_gets_the_precise_reason_and_nothing_changes(bot, fake_tg, tg_users, shop_rule, make_approval):
    approval = make_approval()
    message_id = announced(fake_tg, approval)

    async def scenario(h):
        answer = await h.tap(tg_users["outsider"], GROUP_ID, message_id, f"ap:{approval.public_id}:a")
        assert answer["show_alert"] is True
        assert answer["text"] == "项目「shop-backend」的「test」环境只允许以下人员审批：Bob。"
        answer = await h.tap(tg_users["stranger"], GROUP_ID, message_id, f"ap:{approval.public_id}:r")
        assert answer["show_alert"] is True and "你还不是审批系统的用户" in answer["text"]

    bot.run(scenario)
    nothing_written(approval)
    assert fake_tg.calls_to("editMessageText") == []
    assert len(fake_tg.message(GROUP_ID, message_id).buttons) == 2


def test_requester_cannot_approve_own_build(bot, fake_tg, tg_users, shop_rule, make_approval):
    approval = make_approval(requested_by="alice")
    message_id = announced(fake_tg, approval)

    async def scenario(h):
        answer = await h.tap(tg_users["admin"], GROUP_ID, message_id, f"ap:{approval.public_id}:a")
        assert answer == {"text": "你是这次构建的发起人，不能审批自己的发布。", "show_alert": True}

    bot.run(scenario)
    nothing_written(approval)


@pytest.mark.parametrize(("data", "expected"), [
    ("ap:ZZZZZZZZ:a", "找不到审批「ZZZZZZZZ」。"),
    ("ap:{id}:x", "这个按钮已失效或无法识别"),
    ("ap:{id}", "这个按钮已失效或无法识别"),
    ("rm -rf /", "这个按钮已失效或无法识别"),
    ("ap:{id}:a" + "A" * 80, "这个按钮已失效或无法识别"),  # 超过 64 字节（改过的客户端才发得出来）
    ("ap:<b>:a", "这个按钮已失效或无法识别"),
])
def test_forged_and_oversized_callback_data_is_refused(bot, fake_tg, tg_users, shop_rule, make_approval,
                                                       data, expected):
    approval = make_approval()
    message_id = announced(fake_tg, approval)

    async def scenario(h):
        answer = await h.tap(tg_users["approver"], GROUP_ID, message_id, data.format(id=approval.public_id))
        assert answer["show_alert"] is True and answer["text"].startswith(expected)

    bot.run(scenario)
    nothing_written(approval)


def test_stale_button_says_who_decided_when_and_fixes_the_message(bot, fake_tg, tg_users, shop_rule,
                                                                  make_approval, people, settings):
    approval = make_approval()
    message_id = announced(fake_tg, approval)
    # 决定时消息编辑任务丢了（例如 broker 故障）：群里还挂着旧按钮
    settings.TELEGRAM_BOT_TOKEN = ""
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel=Channel.API)
    settings.TELEGRAM_BOT_TOKEN = fake_tg.token
    assert len(fake_tg.message(GROUP_ID, message_id).buttons) == 2

    async def scenario(h):
        answer = await h.tap(tg_users["approver2"], GROUP_ID, message_id, f"ap:{approval.public_id}:r")
        assert answer["show_alert"] is True
        assert answer["text"].startswith(f"审批 {approval.public_id} 已由 Bob 于 ")
        assert answer["text"].endswith("已同意。")

    bot.run(scenario)
    assert Approval.objects.get(pk=approval.pk).status == Status.APPROVED
    assert fake_tg.message(GROUP_ID, message_id).buttons == []  # 旧按钮顺手被移除


def test_button_reject_asks_for_a_reason_and_records_the_reply(bot, fake_tg, tg_users, shop_rule, make_approval):
    approval = make_approval()
    message_id = announced(fake_tg, approval)

    async def scenario(h):
        answer = await h.tap(tg_users["approver"], GROUP_ID, message_id, f"ap:{approval.public_id}:r")
        assert answer == {"text": f"❌ 已拒绝发布 {approval.public_id}，构建已终止。", "show_alert": False}
        prompt = await fake_tg.await_for(lambda: next(
            (m for m in fake_tg.chat_messages(GROUP_ID) if "请直接回复本消息" in m.text), None))
        call = next(c for c in fake_tg.ok_calls("sendMessage") if "请直接回复本消息" in c.params["text"])
        assert '"force_reply": true' in call.params["reply_markup"] and '"selective": true' in call.params["reply_markup"]
        assert 'href="tg://user?id=1002"' in call.params["text"]
        prompt_id = prompt.message["message_id"]
        # 别人回复提示：不算
        reply = await h.say(tg_users["outsider"], GROUP_ID, "我觉得可以", reply_to=prompt_id)
        assert reply.text == "只有拒绝者本人可以补充理由。"
        reply = await h.say(tg_users["approver"], GROUP_ID, "数据库迁移脚本没评审 <DROP TABLE>", reply_to=prompt_id)
        assert reply.text == f"已记录 {approval.public_id} 的拒绝理由。"
        reply = await h.say(tg_users["approver"], GROUP_ID, "再补一句", reply_to=prompt_id)
        assert reply.text == "这条拒绝的理由已经处理过了。"

    bot.run(scenario)
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED
    assert approval.reason == "数据库迁移脚本没评审 <DROP TABLE>"
    assert Vote.objects.get(approval=approval).reason == approval.reason
    assert "拒绝理由：数据库迁移脚本没评审 <DROP TABLE>" in fake_tg.message(GROUP_ID, message_id).text
    assert ReasonPrompt.objects.get(approval=approval).answered_at is not None


# ---------------------------------------------------------------- /approve /reject


def test_approve_and_reject_commands(bot, fake_tg, tg_users, shop_rule, make_approval):
    first = make_approval(environment="test")
    second = make_approval(environment="staging")

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, f"/approve {first.public_id.lower()}")
        assert reply.text == f"✅ 已同意发布 {first.public_id}，构建继续。"
        reply = await h.say(tg_users["approver"], GROUP_ID, f"/reject@approval_test_bot {second.public_id} 配置 写错了")
        assert reply.text == f"❌ 已拒绝发布 {second.public_id}，构建已终止。"
        assert reply.message["reply_to_message"]["text"].startswith("/reject")

    bot.run(scenario)
    assert Approval.objects.get(pk=first.pk).status == Status.APPROVED
    second.refresh_from_db()
    assert (second.status, second.reason) == (Status.REJECTED, "配置 写错了")
    # 没有拒绝理由提示：命令里已经给了理由
    assert not ReasonPrompt.objects.exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("/approve", "用法：/approve 审批编号 [备注]"),
    ("/reject", "用法：/reject 审批编号 [理由]"),
    ("/approve !!!", "⚠️ 审批编号「!!!」格式不正确。"),
    ("/approve １２３４５６７８", "⚠️ 审批编号「１２３４５６７８」格式不正确。"),
    ("/approve ٣٤٥٦٧٨٩٠", "⚠️ 审批编号「٣٤٥٦٧٨٩٠」格式不正确。"),
    ("/approve 0000ZZZZ", "⚠️ 找不到审批「0000ZZZZ」。"),
    ("/approve <b>x</b>", "⚠️ 审批编号「<b>x</b>」格式不正确。"),
])
def test_bad_ids_in_commands_are_refused_and_nothing_is_written(bot, fake_tg, tg_users, shop_rule, make_approval,
                                                                text, expected):
    approval = make_approval()

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, text)
        assert reply.text == expected

    bot.run(scenario)
    nothing_written(approval)


def test_huge_id_is_refused_with_a_short_echo(bot, fake_tg, tg_users, shop_rule, make_approval):
    approval = make_approval()

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, "/approve " + "A" * 4000)
        assert reply.text == "⚠️ 审批编号「" + "A" * 32 + "」格式不正确。"

    bot.run(scenario)
    nothing_written(approval)


# ---------------------------------------------------------------- 身份（X13）


def test_username_only_user_is_bound_on_first_contact_and_takeover_is_refused(
    bot, fake_tg, tg_users, roles, shop_rule, make_approval
):
    frank = Approver.objects.create(username="frank", display_name="Frank", role=roles["ops_lead"],
                                    telegram_username="frank")
    shop_rule.approvers.add(frank)
    first = make_approval(environment="test")
    second = make_approval(environment="staging")
    frank_tg = fake_tg.add_user(3001, "frank", "Frank")
    impostor = fake_tg.add_user(3002, "frank", "Not Frank")
    first_id, second_id = announced(fake_tg, first), announced(fake_tg, second)

    async def scenario(h):
        answer = await h.tap(frank_tg, GROUP_ID, first_id, f"ap:{first.public_id}:a")
        assert answer["show_alert"] is False
        # 另一个账号把用户名改成 frank：什么也得不到
        answer = await h.tap(impostor, GROUP_ID, second_id, f"ap:{second.public_id}:a")
        assert answer["show_alert"] is True and "你还不是审批系统的用户" in answer["text"]
        # 真 Frank 改了用户名：身份不变
        renamed = dict(frank_tg, username="frank_new")
        answer = await h.tap(renamed, GROUP_ID, second_id, f"ap:{second.public_id}:a")
        assert answer["show_alert"] is False

    bot.run(scenario)
    frank.refresh_from_db()
    assert frank.telegram_id == 3001 and frank.telegram_bound_at is not None
    assert Approval.objects.get(pk=first.pk).decided_by_id == frank.pk
    assert Approval.objects.get(pk=second.pk).decided_by_id == frank.pk
    kinds = list(IdentityEvent.objects.order_by("id").values_list("kind", "telegram_id"))
    assert kinds == [(IdentityEventKind.BOUND, 3001), (IdentityEventKind.TAKEOVER_REFUSED, 3002)]


# ---------------------------------------------------------------- 去重与服务范围


def test_redelivered_update_is_processed_once(bot, fake_tg, tg_users, shop_rule, make_approval):
    approval = make_approval(environment="production")  # 需要两票：第二次处理会变成“你已经投过票”
    seen: dict[str, int] = {}

    async def scenario(h):
        update = fake_tg.user_message(tg_users["approver"], GROUP_ID, f"/approve {approval.public_id}")
        seen["update_id"] = update["update_id"]
        after = update["message"]["message_id"]
        await fake_tg.await_for(lambda: [m for m in fake_tg.chat_messages(GROUP_ID) if m.message["message_id"] > after])
        # Telegram 再投一次同一个 update（例如机器人确认之前重启了）
        fake_tg.replay(update)
        await fake_tg.await_for(lambda: all(q.delivered for q in fake_tg._queue))
        reply = await h.say(tg_users["approver"], GROUP_ID, "/status")  # 之后的 update 照常处理
        assert "审批统计" in reply.text
        await asyncio.sleep(0.2)

    bot.run(scenario)
    replies = [m for m in fake_tg.chat_messages(GROUP_ID)
               if m.message.get("reply_to_message", {}).get("text", "").startswith("/approve")]
    assert len(replies) == 1
    assert Vote.objects.filter(approval=approval).count() == 1
    assert not ApprovalEvent.objects.filter(approval=approval, kind=EventKind.DENIED).exists()
    assert ProcessedUpdate.objects.filter(update_id=seen["update_id"]).count() == 1
    delivered = [u["update_id"] for c in fake_tg.ok_calls("getUpdates") for u in c.response["result"]]
    assert delivered.count(seen["update_id"]) == 2  # 确实投递了两次


def test_unconfigured_group_is_told_and_nothing_else_happens(bot, fake_tg, tg_users, shop_rule, make_approval):
    from telegram_bot.keyboards import approval_keyboard
    from telegram_bot.sender import TelegramSender

    approval = make_approval()
    fake_tg.add_group(-1007770000, "别的群")
    # 机器人在那个群里有一条带审批按钮的消息（比如配置改过之前发的）
    elsewhere = TelegramSender().send_message(-1007770000, "旧消息", reply_markup=approval_keyboard(approval.public_id))

    async def scenario(h):
        reply = await h.say(tg_users["approver"], -1007770000, f"/approve {approval.public_id}")
        assert "本群未在审批配置中" in reply.text and "-1007770000" in reply.text
        fake_tg.user_message(tg_users["approver"], -1007770000, "大家好")  # 闲聊不回应
        answer = await h.tap(tg_users["approver"], -1007770000, elsewhere.message_id, f"ap:{approval.public_id}:a")
        assert answer["show_alert"] is True and "本群未在审批配置中" in answer["text"]
        await h.say(tg_users["approver"], GROUP_ID, "/help")

    bot.run(scenario)
    nothing_written(approval)
    assert len(fake_tg.chat_messages(-1007770000)) == 2  # 旧消息 + 一条说明，闲聊没有回应


def test_private_chat_is_served_only_for_registered_approvers(bot, fake_tg, tg_users, shop_rule):
    async def scenario(h):
        reply = await h.say(tg_users["approver"], tg_users["approver"]["id"], "/whoami")
        assert "Telegram ID：1002" in reply.text and "审批身份：Bob（bob）" in reply.text
        assert "角色：运维负责人" in reply.text and "• shop-backend（全部环境）" in reply.text
        assert "• shop-backend（生产）" in reply.text
        reply = await h.say(tg_users["stranger"], 4242, "/start")
        assert "你不是登记的审批人" in reply.text and "4242" in reply.text and "@stranger" in reply.text

    bot.run(scenario)


# ---------------------------------------------------------------- 查询命令


def test_start_help_whoami_in_the_group(bot, fake_tg, tg_users, shop_rule):
    async def scenario(h):
        reply = await h.say(tg_users["admin"], GROUP_ID, "/start")
        assert "你好，Alice" in reply.text and "/approve 编号" in reply.text
        reply = await h.say(tg_users["stranger"], GROUP_ID, "/help")
        assert "/pending" in reply.text and "/jenkins" in reply.text
        reply = await h.say(tg_users["stranger"], GROUP_ID, "/whoami")
        assert "Telegram ID：4242" in reply.text and f"当前聊天 ID：{GROUP_ID}" in reply.text
        assert "你还不是审批人" in reply.text
        reply = await h.say(tg_users["admin"], GROUP_ID, "/whoami")
        assert "全部项目与环境（管理员）" in reply.text

    bot.run(scenario)


def test_status_totals_and_detail(bot, fake_tg, tg_users, shop_rule, make_approval, people):
    decided = make_approval(environment="test")
    pending = make_approval(environment="staging", description="预发 & 验证 <ok>")
    approval_decide(approval=decided, approver=people["approver"], decision="approve", channel=Channel.API)

    async def scenario(h):
        reply = await h.say(tg_users["outsider"], GROUP_ID, "/status")
        for expected in ("审批统计", "总数：2", "待审批：1", "已同意：1", "已拒绝：0", "已超时：0", "今日新增：2",
                         "决定耗时中位数"):
            assert expected in reply.text
        reply = await h.say(tg_users["outsider"], GROUP_ID, f"/status {pending.public_id}")
        assert pending.public_id in reply.text and "预发 & 验证 <ok>" in reply.text and "历史" in reply.text
        reply = await h.say(tg_users["outsider"], GROUP_ID, "/status NOPE0000")
        assert reply.text.startswith("⚠️ 找不到审批")
        reply = await h.say(tg_users["stranger"], GROUP_ID, "/status")
        assert "你还不是审批系统的用户" in reply.text

    bot.run(scenario)


def test_pending_is_paginated_with_buttons_only_for_its_owner(bot, fake_tg, tg_users, shop_rule, make_approval):
    approvals = [make_approval(job_name=f"folder/shop-{n}", environment="test") for n in range(7)]
    make_approval(job_name="other-project")  # 不是 bob 能批的

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, "/pending")
        assert "共 7 条，第 1/2 页" in reply.text
        data = [b["callback_data"] for b in reply.buttons]
        assert data[-1] == "pd:2:1002" and len([d for d in data if d.endswith(":a")]) == 5
        list_id = reply.message["message_id"]
        answer = await h.tap(tg_users["outsider"], GROUP_ID, list_id, "pd:2:1002")
        assert answer["show_alert"] is True and "别人的待办列表" in answer["text"]
        answer = await h.tap(tg_users["approver"], GROUP_ID, list_id, "pd:2:1002")
        assert answer == {"text": None, "show_alert": False}
        page2 = await fake_tg.await_for(lambda: (m := fake_tg.message(GROUP_ID, list_id)).history and m)
        assert "第 2/2 页" in page2.text
        assert [b["callback_data"] for b in page2.buttons][-1] == "pd:1:1002"
        # 列表里的按钮可以直接审批
        target = next(b["callback_data"] for b in page2.buttons if b["callback_data"].endswith(":a"))
        answer = await h.tap(tg_users["approver"], GROUP_ID, list_id, target)
        assert answer["text"].startswith("✅ 已同意发布")
        reply = await h.say(tg_users["admin"], GROUP_ID, "/pending")
        assert "共 7 条" in reply.text  # 管理员能批全部（其中一条刚被批掉，另加 other-project）

    bot.run(scenario)
    assert Approval.objects.filter(pk__in=[a.pk for a in approvals], status=Status.APPROVED).count() == 1


def test_jenkins_command_reports_each_server(bot, fake_tg, tg_users, shop_rule, make_approval, monkeypatch):
    from jenkins_bridge.models import JenkinsServer
    from tests.fake_jenkins import JENKINS_VERSION, FakeJenkins

    jenkins = FakeJenkins().start()
    monkeypatch.setenv("FAKE_JENKINS_TOKEN", "svc-token")
    JenkinsServer.objects.create(name="ci-main", url=jenkins.url, username="svc", api_token_env="FAKE_JENKINS_TOKEN",
                                 timeout_seconds=2)
    JenkinsServer.objects.create(name="ci-empty", url="")

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, "/jenkins")
        assert "Jenkins 状态" in reply.text
        assert f"🟢 ci-main — 可达，版本 {JENKINS_VERSION}，延迟" in reply.text
        assert "🔴 ci-empty — 不可达" in reply.text

    try:
        bot.run(scenario)
    finally:
        jenkins.down()


def test_handler_errors_are_logged_with_traceback_and_the_user_is_told(bot, fake_tg, tg_users, shop_rule,
                                                                       make_approval, caplog):
    for n in range(6):
        make_approval(job_name=f"folder/shop-{n}")

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, "/pending")
        fake_tg.fail_next("editMessageText", status=400, description="Bad Request: message to edit not found")
        with caplog.at_level(logging.ERROR, logger="telegram_bot.handlers"):
            answer = await h.tap(tg_users["approver"], GROUP_ID, reply.message["message_id"], "pd:2:1002")
            assert answer == {"text": None, "show_alert": False}
            await fake_tg.await_for(lambda: caplog.records)

    bot.run(scenario)
    record = next(r for r in caplog.records if r.name == "telegram_bot.handlers")
    assert record.exc_info is not None and "message to edit not found" in record.getMessage().lower()
    assert f"chat={GROUP_ID}" in record.getMessage()


def test_polling_survives_telegram_faults(bot, fake_tg, tg_users, shop_rule):
    """T9：getUpdates 连续失败（502）时机器人退避重连，之后的消息照常处理。"""
    fake_tg.server_error("getUpdates", times=2)

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, "/help")
        assert "/approve" in reply.text

    bot.run(scenario)
    statuses = [c.status for c in fake_tg.calls_to("getUpdates")]
    assert statuses[:2] == [502, 502] and 200 in statuses
