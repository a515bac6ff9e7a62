"""config/app.json 的 telegram.allowed_chat_ids：设置了就只在这些群里回答、只往这些群发；/health 说出不允许的群。"""

from __future__ import annotations

import pytest

from accounts.models import ConfigState
from approvals.models import Status
from telegram_bot.health import telegram_health
from telegram_bot.models import MessageKind, MessageState, TelegramMessage
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db

OTHER = -1007770000


def allow(*chat_ids: int) -> None:
    ConfigState.objects.update_or_create(name="app", defaults={"data": {"telegram": {"allowed_chat_ids": list(chat_ids)}}})


def test_nothing_is_posted_to_a_rule_chat_outside_the_allowed_list(fake_tg, shop_rule, make_approval,
                                                                   django_capture_on_commit_callbacks):
    allow(OTHER)
    with django_capture_on_commit_callbacks(execute=True):
        approval = make_approval()
    assert fake_tg.calls_to("sendMessage") == []  # 根本没有请求 Telegram
    row = TelegramMessage.objects.get(approval=approval, kind=MessageKind.APPROVAL)
    assert (row.state, row.error_code, row.permanent) == (MessageState.FAILED, "chat_not_allowed", True)
    assert approval.status == Status.PENDING  # 审批本身不受影响，仍可在后台或 API 决定

    health = telegram_health()
    assert health["status"] == "degraded"
    assert health["allowed_chat_ids"] == [OTHER] and health["chats_not_allowed"] == [GROUP_ID]


def test_allowed_chat_works_as_before_and_private_chats_are_not_restricted(fake_tg, shop_rule, make_approval, people,
                                                                            django_capture_on_commit_callbacks):
    from telegram_bot.sender import TelegramSender

    allow(GROUP_ID)
    with django_capture_on_commit_callbacks(execute=True):
        make_approval()
    assert len(fake_tg.chat_messages(GROUP_ID)) == 1
    fake_tg.add_user(people["approver"].telegram_id, "bob")
    TelegramSender().send_message(people["approver"].telegram_id, "私聊")
    assert len(fake_tg.chat_messages(people["approver"].telegram_id)) == 1
    assert telegram_health()["chats_not_allowed"] == []


def test_a_configured_group_outside_the_allowed_list_is_not_served(bot, fake_tg, tg_users, shop_rule, make_approval):
    fake_tg.add_group(OTHER, "别的群")
    allow(OTHER)  # 规则的群（GROUP_ID）不在允许列表里
    approval = make_approval()

    async def scenario(h):
        reply = await h.say(tg_users["approver"], GROUP_ID, f"/approve {approval.public_id}")
        assert "本群未在审批配置中" in reply.text

    bot.run(scenario)
    approval.refresh_from_db()
    assert approval.status == Status.PENDING
