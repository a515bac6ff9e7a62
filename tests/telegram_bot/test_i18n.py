"""回答个人用其 Telegram 语言，群消息用服务器语言（TELEGRAM_LANGUAGE，默认 zh-hans）。

真实的 PTB Application 长轮询假 Bot API；用户的 language_code 与真实客户端一样随每个 update 送来。
"""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command

from approvals.models import Approval, Status
from telegram_bot.language import bot_language, supported_language, user_language
from telegram_bot.models import TelegramMessage
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db(transaction=True)

CJK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")


def speaks(user: dict, language_code: str | None) -> dict:
    """改这个人的 Telegram 客户端语言（假服务器存的是同一个 dict，之后的 update 都带上它）。"""
    if language_code is None:
        user.pop("language_code", None)
    else:
        user["language_code"] = language_code
    return user


def announced(approval: Approval) -> int:
    return TelegramMessage.objects.get(approval=approval).message_id


# ---------------------------------------------------------------- 语言映射


@pytest.mark.parametrize(("code", "expected"), [
    ("en", "en"), ("en-US", "en"), ("EN_gb", "en"),
    ("zh-hans", "zh-hans"), ("zh-CN", "zh-hans"), ("zh-TW", "zh-hans"), ("zh", "zh-hans"),
    ("de", None), ("", None), (None, None),
])
def test_telegram_language_codes_map_to_supported_languages(code, expected):
    assert supported_language(code) == expected


def test_unsupported_or_missing_user_language_falls_back_to_telegram_language(settings):
    assert (user_language("de"), user_language(None), user_language("en-US")) == ("zh-hans", "zh-hans", "en")
    settings.TELEGRAM_LANGUAGE = "en"
    assert (bot_language(), user_language("de"), user_language("zh-CN")) == ("en", "en", "zh-hans")
    settings.TELEGRAM_LANGUAGE = "zh-cn"
    assert bot_language() == "zh-hans"


# ---------------------------------------------------------------- 回答个人：跟随其语言


def test_english_user_gets_english_help_and_chinese_user_chinese(bot, fake_tg, tg_users, shop_rule):
    english = speaks(tg_users["approver"], "en")
    chinese = speaks(tg_users["admin"], "zh-CN")

    async def scenario(h):
        reply = await h.say(english, GROUP_ID, "/help")
        assert reply.text.startswith("🤖 Jenkins release approval bot\n")
        assert "/approve ID [comment] — approve a release" in reply.text
        assert not CJK.search(reply.text), reply.text
        reply = await h.say(chinese, GROUP_ID, "/help")
        assert reply.text.startswith("🤖 Jenkins 发布审批机器人\n")
        assert "/approve 编号 [备注] — 同意发布" in reply.text

    bot.run(scenario)


def test_user_without_supported_language_gets_the_server_language(bot, fake_tg, tg_users, shop_rule, settings):
    german = speaks(tg_users["approver"], "de")
    nobody = speaks(tg_users["admin"], None)

    async def scenario(h):
        assert (await h.say(german, GROUP_ID, "/help")).text.startswith("🤖 Jenkins 发布审批机器人")
        assert (await h.say(nobody, GROUP_ID, "/help")).text.startswith("🤖 Jenkins 发布审批机器人")

    bot.run(scenario)

    settings.TELEGRAM_LANGUAGE = "en"

    async def english_server(h):
        assert (await h.say(german, GROUP_ID, "/help")).text.startswith("🤖 Jenkins release approval bot")

    bot.run(english_server)


def test_whoami_in_english_uses_english_punctuation(bot, fake_tg, tg_users, shop_rule):
    english = speaks(tg_users["approver"], "en-US")

    async def scenario(h):
        reply = await h.say(english, GROUP_ID, "/whoami")
        assert "Telegram ID: 1002" in reply.text
        assert f"Current chat ID: {GROUP_ID} (supergroup)" in reply.text
        assert "Role: " in reply.text and "：" not in reply.text

    bot.run(scenario)


def test_service_refusal_reaches_english_user_in_english(bot, fake_tg, tg_users, shop_rule, make_approval):
    """拒绝原因在服务层（sync_to_async 的线程里）生成：语言也要带过去。"""
    approval = make_approval()
    message_id = announced(approval)
    outsider = speaks(tg_users["outsider"], "en")

    async def scenario(h):
        answer = await h.tap(outsider, GROUP_ID, message_id, f"ap:{approval.public_id}:a")
        assert answer == {
            "text": 'Only these people can approve the "test" environment of project "shop-backend": Bob.',
            "show_alert": True,
        }
        reply = await h.say(outsider, GROUP_ID, "/approve 0000ZZZZ")
        assert reply.text == '⚠️ Approval "0000ZZZZ" not found.'

    bot.run(scenario)
    approval.refresh_from_db()
    assert approval.status == Status.PENDING


# ---------------------------------------------------------------- 群消息：服务器语言


def test_english_tap_answers_in_english_but_group_message_stays_chinese(bot, fake_tg, tg_users, shop_rule,
                                                                         make_approval):
    approval = make_approval()
    message_id = announced(approval)
    assert "发布审批" in fake_tg.message(GROUP_ID, message_id).text
    english = speaks(tg_users["approver"], "en")

    async def scenario(h):
        answer = await h.tap(english, GROUP_ID, message_id, f"ap:{approval.public_id}:a")
        assert answer == {"text": f"✅ Release {approval.public_id} approved; the build continues.",
                          "show_alert": False}

    bot.run(scenario)
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED
    # 提交后的刷新任务（eager：就在处理器的线程里执行）仍用服务器语言改写群消息
    stored = fake_tg.message(GROUP_ID, message_id)
    assert "✅ 已同意发布" in stored.text and "决定人：Bob" in stored.text
    assert "approved" not in stored.text.lower()


def test_telegram_language_en_makes_group_messages_english(fake_tg, tg_users, shop_rule, make_approval, settings):
    settings.TELEGRAM_LANGUAGE = "en"
    approval = make_approval(environment="production")
    stored = fake_tg.message(GROUP_ID, announced(approval))
    assert stored.text.startswith(f"🔴 [PRODUCTION] Release approval · {approval.public_id}\n")
    assert "Project: shop-backend" in stored.text and "Awaiting approval" in stored.text
    assert [b["text"] for b in stored.buttons] == ["✅ Approve release", "❌ Reject release"]


def test_bot_commands_are_registered_per_language(fake_tg, settings):
    from telegram_bot.application import build_application, set_bot_commands

    async def register():
        async with build_application() as application:
            await set_bot_commands(application.bot)

    async_to_sync(register)()
    calls = {c.params.get("language_code", ""): c.params for c in fake_tg.ok_calls("setMyCommands")}
    assert set(calls) == {"", "en", "zh"}

    def descriptions(params):
        import json

        commands = params["commands"]
        commands = json.loads(commands) if isinstance(commands, str) else commands
        return {c["command"]: c["description"] for c in commands}

    assert descriptions(calls["en"])["approve"] == "Approve a release: /approve ID"
    assert descriptions(calls["zh"])["approve"] == "同意发布：/approve 编号"
    # 不限语言的默认一份用 TELEGRAM_LANGUAGE
    assert descriptions(calls[""])["approve"] == "同意发布：/approve 编号"


def test_runbot_output_is_unaffected_by_telegram_language(fake_tg, settings, capsys):
    """命令行输出给运维看：仍是服务器默认语言，与 TELEGRAM_LANGUAGE 无关（只有默认命令菜单随它变）。"""
    settings.TELEGRAM_LANGUAGE = "en"
    settings.PUBLIC_BASE_URL = "https://approvals.example.com"
    settings.TELEGRAM_WEBHOOK_SECRET = "s" * 32
    call_command("runbot", "--set-webhook")
    assert "已注册 webhook" in capsys.readouterr().out
    assert {c["command"]: c["description"] for c in fake_tg.commands}["approve"] == "Approve a release: /approve ID"


def test_telegram_language_en_makes_reminders_and_build_results_english(fake_tg, shop_rule, people, make_approval,
                                                                         settings):
    """提醒摘要与构建结果通知：标签、括号与名字列表都用英文标点（没有全角“：”）。"""
    from approvals.builds import build_result_record
    from approvals.models import BuildLog
    from approvals.services import approval_decide
    from telegram_bot.tasks import reminder_digest_task

    settings.TELEGRAM_LANGUAGE = "en"
    waiting = make_approval(environment="production")
    reminder_digest_task.delay(GROUP_ID, [waiting.pk])
    [digest] = [m for m in fake_tg.chat_messages(GROUP_ID) if m.text.startswith("⏰")]
    assert digest.text.startswith("⏰ Approval reminder: 1 release waiting for approval\n")
    assert re.search(r"⏳ Time left: 29 min \(due [\d-]+ [\d:]+\) · approvals 0/2 · original message", digest.text)
    assert "👥 Pending: Bob Erin" in digest.text and "📣 Project owners: Alice" in digest.text

    decided = make_approval(environment="staging", build_number=700)
    approval_decide(approval=decided, approver=people["approver"], decision="approve", channel="telegram")
    BuildLog.objects.create(jenkins_server=decided.jenkins_server, job_name="shop-backend", build_number=700,
                            approval=decided, content="BUILD FAILED\n", size=13, is_complete=True)
    build_result_record(job_name="shop-backend", build_number=700, result="FAILURE", duration_ms=65_000)
    [notice] = [m for m in fake_tg.chat_messages(GROUP_ID) if m.text.startswith("❌")]
    assert notice.text.startswith("❌ Build failed · shop-backend #700\nResult: FAILURE\nJob: shop-backend #700\n"
                                  "Environment: 🟡 Staging\nVersion: v1.2.3\nDuration: 1m 5s\n")
    assert f"Approval: {decided.public_id} approved by Bob\n" in notice.text
    assert "📣 Attention: Bob Alice" in notice.text
    assert "\n\nLog tail (last 30 lines):" in notice.text and notice.text.endswith("\nBUILD FAILED")

    for text in (digest.text, notice.text):
        assert "：" not in text and "（" not in text and "、" not in text, text
        assert not CJK.search(text.replace("商城发布群", "")), text
