"""发送器（T8、T9）：对着假 Bot API 的真实 HTTP——重试分类、429 冷却、拉黑、群迁移、节流、代理。"""

from __future__ import annotations

import socket
import time

import pytest
from asgiref.sync import async_to_sync

from telegram_bot.keyboards import approval_keyboard
from telegram_bot.models import TelegramChat
from telegram_bot.sender import ChatPacer, TelegramSender, TelegramSendError
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db


def test_send_and_edit_round_trip(fake_tg):
    sender = TelegramSender()
    sent = sender.send_message(GROUP_ID, "<b>你好</b> 🚀", reply_markup=approval_keyboard("AB12CD34"))
    stored = fake_tg.message(GROUP_ID, sent.message_id)
    assert (sent.chat_id, sent.migrated_from) == (GROUP_ID, None)
    assert stored.text == "你好 🚀"
    assert stored.buttons[0]["callback_data"] == "ap:AB12CD34:a"

    assert sender.edit_message_text(GROUP_ID, sent.message_id, "<b>已同意</b>") is True
    assert fake_tg.message(GROUP_ID, sent.message_id).text == "已同意"
    # 不带按钮的编辑移除了按钮
    assert fake_tg.message(GROUP_ID, sent.message_id).buttons == []


def test_message_is_not_modified_is_not_an_error(fake_tg):
    sender = TelegramSender()
    sent = sender.send_message(GROUP_ID, "同一段文字")
    assert sender.edit_message_text(GROUP_ID, sent.message_id, "同一段文字") is False
    assert fake_tg.calls_to("editMessageText")[-1].status == 400
    assert sender.edit_message_reply_markup(GROUP_ID, sent.message_id) is False


def test_short_429_is_waited_out_and_retried_once(fake_tg):
    fake_tg.rate_limit("sendMessage", retry_after=1)
    sent = TelegramSender().send_message(GROUP_ID, "限流之后")
    first, second = fake_tg.calls_to("sendMessage")
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.95
    assert fake_tg.message(GROUP_ID, sent.message_id).text == "限流之后"


def test_long_429_is_reported_with_retry_after_and_other_sends_wait(fake_tg):
    fake_tg.rate_limit("sendMessage", retry_after=30)
    sender = TelegramSender()
    with pytest.raises(TelegramSendError) as caught:
        sender.send_message(GROUP_ID, "x")
    assert (caught.value.permanent, caught.value.code, caught.value.retry_after) == (False, "rate_limited", 30)
    assert TelegramChat.objects.get(chat_id=GROUP_ID).cooldown_until is not None
    # 冷却期间任何 worker 都不再打扰 Telegram：直接得到可重试的错误
    with pytest.raises(TelegramSendError) as paced:
        sender.send_message(GROUP_ID, "y")
    assert paced.value.code == "paced" and paced.value.retry_after > 25
    assert len(fake_tg.calls_to("sendMessage")) == 1


def test_blocked_user_is_a_permanent_error_recorded_on_the_chat(fake_tg):
    fake_tg.add_user(777, "blocker")
    fake_tg.block(777)
    with pytest.raises(TelegramSendError) as caught:
        TelegramSender().send_message(777, "hi")
    assert caught.value.permanent is True and caught.value.code == "forbidden"
    assert caught.value.message == "Forbidden: bot was blocked by the user"
    chat = TelegramChat.objects.get(chat_id=777)
    assert chat.error_permanent and chat.error_code == "forbidden"


def test_unknown_chat_is_permanent(fake_tg):
    with pytest.raises(TelegramSendError) as caught:
        TelegramSender().send_message(-100999, "hi")
    assert (caught.value.permanent, caught.value.code) == (True, "chat_not_found")


def test_group_upgraded_to_supergroup_is_followed_and_remembered(fake_tg):
    fake_tg.add_group(-4001, "老群")
    fake_tg.migrate(-4001, -1004001)
    sender = TelegramSender()
    sent = sender.send_message(-4001, "迁移后")
    assert (sent.chat_id, sent.migrated_from) == (-1004001, -4001)
    assert fake_tg.message(-1004001, sent.message_id).text == "迁移后"
    assert TelegramChat.objects.get(chat_id=-4001).migrated_to_chat_id == -1004001
    # 之后直接发往新群，不再先撞一次 400
    before = len(fake_tg.calls_to("sendMessage"))
    sender.send_message(-4001, "再发一条")
    assert len(fake_tg.calls_to("sendMessage")) == before + 1
    assert fake_tg.calls_to("sendMessage")[-1].params["chat_id"] == -1004001


def test_bad_gateway_with_html_body_is_transient(fake_tg):
    fake_tg.server_error("sendMessage")
    with pytest.raises(TelegramSendError) as caught:
        TelegramSender().send_message(GROUP_ID, "x")
    assert (caught.value.permanent, caught.value.code) == (False, "server_error")


def test_timeout_is_transient(fake_tg):
    fake_tg.delay("sendMessage", 1.0)
    with pytest.raises(TelegramSendError) as caught:
        TelegramSender(timeout=0.3).send_message(GROUP_ID, "x")
    assert (caught.value.permanent, caught.value.code) == (False, "timeout")


def test_wrong_token_is_not_permanent_and_never_echoes_the_token(fake_tg):
    token = "999999:BBwrongTOKENwrongTOKENwrongTOKEN12"
    with pytest.raises(TelegramSendError) as caught:
        TelegramSender(token=token).send_message(GROUP_ID, "x")
    assert (caught.value.permanent, caught.value.code) == (False, "unauthorized")
    assert token not in str(caught.value)


def test_unreachable_api_is_a_network_error_without_the_url(fake_tg):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = TelegramSender(api_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TelegramSendError) as caught:
        sender.send_message(GROUP_ID, "x")
    assert (caught.value.permanent, caught.value.code) == (False, "network")
    assert fake_tg.token not in str(caught.value) and "/bot" not in str(caught.value)


def test_pacing_spaces_messages_per_group_but_not_across_chats(fake_tg):
    fake_tg.add_group(-5002, "另一个群")
    pacer = ChatPacer(group_interval=0.3, private_interval=0.1, global_interval=0.0, max_wait=5)
    sender = TelegramSender(pacer=pacer)
    started = time.monotonic()
    for _ in range(3):
        sender.send_message(GROUP_ID, "节流")
    assert time.monotonic() - started >= 0.58  # 第 2、3 条各等了一个间隔
    assert len(fake_tg.ok_calls("sendMessage")) == 3
    # 预约是按聊天的：同一个群依次排在 0.3 秒之后，别的群马上可以发
    waits = [pacer.reserve(-5003) for _ in range(3)]
    assert waits[0] == 0 and 0.25 < waits[1] <= 0.3 and 0.55 < waits[2] <= 0.6
    assert pacer.reserve(-5002) == 0
    assert pacer.reserve(777) == 0 and 0.05 < pacer.reserve(777) <= 0.1  # 私聊 1 条/秒（这里 0.1 秒）


def test_global_pacing_applies_across_chats(fake_tg):
    pacer = ChatPacer(group_interval=0, private_interval=0, global_interval=0.5, max_wait=5)
    assert pacer.reserve(-6001) == 0
    assert 0.3 < pacer.reserve(-6002) <= 0.5


def test_pacer_refuses_to_block_a_worker_for_long(fake_tg):
    pacer = ChatPacer(group_interval=60, private_interval=1, global_interval=0, max_wait=2)
    assert pacer.reserve(GROUP_ID) == 0
    with pytest.raises(TelegramSendError) as caught:
        pacer.reserve(GROUP_ID)
    assert caught.value.code == "paced" and 55 < caught.value.retry_after <= 60


def test_http_proxy_is_used_for_sender_and_for_the_bot(fake_tg, settings):
    """T8：代理与自定义 API 地址。假服务器兼任 HTTP 代理：请求行是绝对 URL。"""
    settings.TELEGRAM_PROXY_URL = fake_tg.url
    settings.TELEGRAM_API_URL = "http://api.telegram.invalid"
    TelegramSender().send_message(GROUP_ID, "经代理")
    assert fake_tg.ok_calls("sendMessage")[-1].via_proxy is True

    from telegram_bot.application import build_application

    async def ask() -> str:
        bot = build_application().bot
        async with bot:
            return (await bot.get_me()).username

    assert async_to_sync(ask)() == "approval_test_bot"
    assert fake_tg.ok_calls("getMe")[-1].via_proxy is True


def test_socks5_proxy_is_used_for_sender_and_for_the_bot(fake_tg, settings):
    """T8：socks5:// 代理（socksio）。代理把“api.telegram.invalid:80”接到假服务器上。"""
    from tests.fake_telegram import Socks5Proxy

    port = int(fake_tg.url.rsplit(":", 1)[1])
    proxy = Socks5Proxy(resolve={"api.telegram.invalid:80": ("127.0.0.1", port)})
    try:
        settings.TELEGRAM_PROXY_URL = proxy.url
        settings.TELEGRAM_API_URL = "http://api.telegram.invalid"
        TelegramSender().send_message(GROUP_ID, "经 SOCKS5")
        assert fake_tg.chat_messages(GROUP_ID)[-1].text == "经 SOCKS5"

        from telegram_bot.application import build_application

        async def ask() -> str:
            bot = build_application().bot
            async with bot:
                return (await bot.get_me()).username

        assert async_to_sync(ask)() == "approval_test_bot"
        assert ("api.telegram.invalid", 80) in proxy.connections
    finally:
        proxy.close()
