"""日志里没有密钥：走一遍完整流程（发送、重试、按钮、命令、错误处理、webhook、API 决定），
任何日志记录（含堆栈）都不含 Bot token、API token 或 webhook 密钥。"""

from __future__ import annotations

import logging
import sys

import pytest
from django.test import Client
from telegram.error import InvalidToken

from approvalbot.logging import RedactSecretsFilter
from telegram_bot.sender import TelegramSender, TelegramSendError
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db(transaction=True)

API_TOKEN = "apitoken-SECRET-0123456789abcdef"
WEBHOOK_SECRET = "wh-SECRET-0123456789abcdef"


def all_log_text(caplog) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def test_a_full_flow_logs_no_secrets(bot, fake_tg, tg_users, shop_rule, make_approval, people, settings, caplog):
    settings.APPROVAL_API_TOKEN = API_TOKEN
    settings.TELEGRAM_WEBHOOK_SECRET = WEBHOOK_SECRET
    caplog.set_level(logging.DEBUG)  # 一切都开到 DEBUG；httpx/telegram 保持设置里的级别

    fake_tg.server_error("sendMessage", times=1)
    fake_tg.rate_limit("sendMessage", retry_after=1)
    first = make_approval(environment="test")
    second = make_approval(environment="staging")
    first_id = fake_tg.chat_messages(GROUP_ID)[0].message["message_id"]

    async def scenario(h):
        await h.tap(tg_users["outsider"], GROUP_ID, first_id, f"ap:{first.public_id}:a")
        await h.tap(tg_users["approver"], GROUP_ID, first_id, "ap:" + "Z" * 80)
        await h.say(tg_users["approver"], GROUP_ID, "/approve ???")
        await h.tap(tg_users["approver"], GROUP_ID, first_id, f"ap:{first.public_id}:r")
        for n in range(6):
            await h.db(make_approval, job_name=f"folder/shop-{n}")
        reply = await h.say(tg_users["approver"], GROUP_ID, "/pending")
        fake_tg.fail_next("editMessageText", status=400, description="Bad Request: message to edit not found")
        await h.tap(tg_users["approver"], GROUP_ID, reply.message["message_id"], "pd:2:1002")
        await fake_tg.await_for(lambda: any(r.levelno >= logging.ERROR for r in caplog.records))

    bot.run(scenario)

    # 发送器的永久错误与网络错误
    fake_tg.add_user(8888, "gone")
    fake_tg.block(8888)
    with pytest.raises(TelegramSendError):
        TelegramSender().send_message(8888, "hi")
    with pytest.raises(TelegramSendError):
        TelegramSender(api_url="http://127.0.0.1:9").send_message(GROUP_ID, "x")

    # API 决定（带 Bearer token）与 webhook（错误密钥、正确密钥但 token 被撤销）
    api = Client().post(f"/api/approve/{second.public_id}", data={"approver": "bob"},
                        content_type="application/json", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert api.status_code in (200, 403)  # 引导 token 可能没有 approve 权限范围；两种情况都要写日志
    settings.TELEGRAM_MODE = "webhook"
    Client().post("/telegram/webhook/", data={"update_id": 1}, content_type="application/json",
                  headers={"X-Telegram-Bot-Api-Secret-Token": "guess-" + WEBHOOK_SECRET})
    settings.TELEGRAM_BOT_TOKEN = "123456789:AArevokedTOKENrevokedTOKENrevoked1"
    response = Client().post("/telegram/webhook/", data={"update_id": 2}, content_type="application/json",
                             headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET})
    assert response.status_code == 503 and response.json()["error"]["code"] == "invalid_token"

    text = all_log_text(caplog)
    assert "审批" in text and "处理 update" in text  # 确实记录了流程与错误
    for secret in (fake_tg.token, fake_tg.token.split(":", 1)[1], API_TOKEN, WEBHOOK_SECRET,
                   "AArevokedTOKENrevokedTOKENrevoked1"):
        assert secret not in text


def test_console_handler_redacts_tokens_in_library_tracebacks(settings):
    """最后一道防线：即使某个库（如 PTB 的 InvalidToken）把 token 写进异常，输出时也被抹掉。"""
    token = "123456789:AAHleakedTOKENleakedTOKENleaked12"
    settings.TELEGRAM_BOT_TOKEN = token
    try:
        raise InvalidToken(f"The token `{token}` was rejected by the server.")
    except InvalidToken:
        record = logging.getLogger("telegram.ext").makeRecord(
            "telegram.ext", logging.ERROR, __file__, 1, "Invalid token %s", (token,), sys.exc_info()
        )
    RedactSecretsFilter().filter(record)
    output = logging.Formatter("%(message)s").format(record)
    assert token not in output and "***" in output and "InvalidToken" in output
