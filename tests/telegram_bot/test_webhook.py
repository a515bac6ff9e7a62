"""Webhook 模式（X11）：密钥头常量时间校验，不符一律 403；同一 update 只处理一次；与轮询共用处理器。"""

from __future__ import annotations

import asyncio
import contextvars
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections
from django.test import AsyncClient, Client

from approvals.models import Approval, Status, Vote
from telegram_bot.models import ProcessedUpdate, TelegramMessage
from telegram_bot.views import processor
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "wh-Secret_0123456789abcdef"
URL = "/telegram/webhook/"


@pytest.fixture
def webhook(settings, fake_tg):
    settings.TELEGRAM_MODE = "webhook"
    settings.TELEGRAM_WEBHOOK_SECRET = SECRET
    return fake_tg


def tap_update(fake, user, approval, action="a") -> dict:
    """构造一个点按钮的 update（假 Telegram 记下查询 id，机器人回答时会校验它）。"""
    message_id = TelegramMessage.objects.get(approval=approval).message_id
    query_id = fake.tap(user, GROUP_ID, message_id, f"ap:{approval.public_id}:{action}")
    # webhook 模式下 Telegram 不走 getUpdates：把它从队列里取出来由测试 POST
    with fake.cond:
        queued = fake._queue.pop()
    assert queued.update["callback_query"]["id"] == query_id
    return queued.update


def post(client: Client, update: dict | str | bytes, **headers) -> object:
    body = update if isinstance(update, str | bytes) else json.dumps(update)
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def error_code(response) -> str:
    return response.json()["error"]["code"]


@pytest.mark.parametrize("headers", [{}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
                                     {"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"},
                                     {"X-Telegram-Bot-Api-Secret-Token": SECRET[:-1]}])
def test_missing_or_wrong_secret_is_403_and_nothing_happens(webhook, tg_users, shop_rule, make_approval, headers):
    approval = make_approval()
    update = tap_update(webhook, tg_users["approver"], approval)
    response = post(Client(), update, **headers)
    assert response.status_code == 403 and error_code(response) == "forbidden"
    assert not ProcessedUpdate.objects.exists()
    assert Approval.objects.get(pk=approval.pk).status == Status.PENDING
    assert webhook.calls_to("answerCallbackQuery") == []


def test_no_secret_configured_refuses_everything(webhook, settings, tg_users, shop_rule, make_approval):
    settings.TELEGRAM_WEBHOOK_SECRET = ""
    update = tap_update(webhook, tg_users["approver"], make_approval())
    for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": ""}):
        response = post(Client(), update, **headers)
        assert response.status_code == 403 and error_code(response) == "forbidden"
    assert not ProcessedUpdate.objects.exists()


@pytest.mark.parametrize(("body", "status", "code"), [
    ("{not json", 400, "invalid_json"),
    ("[]", 400, "invalid_update"),
    ('{"message": {}}', 400, "invalid_update"),
    ('{"update_id": "12"}', 400, "invalid_update"),
])
def test_malformed_bodies_are_rejected_without_side_effects(webhook, body, status, code):
    response = post(Client(), body, **{"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status_code == status and error_code(response) == code
    assert not ProcessedUpdate.objects.exists()


def test_only_post_and_only_in_webhook_mode(webhook, settings):
    response = Client().get(URL, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"
    settings.TELEGRAM_MODE = "polling"
    response = post(Client(), {"update_id": 1}, **{"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status_code == 404 and error_code(response) == "webhook_disabled"


def test_button_through_webhook_decides_once_even_when_redelivered(webhook, tg_users, shop_rule, make_approval):
    approval = make_approval(environment="production")  # 两票：重复处理会变成第二次投票尝试
    update = tap_update(webhook, tg_users["approver"], approval)
    client = Client()
    for _ in range(3):  # Telegram 没收到 200 时会重投同一个 update
        response = post(client, update, **{"X-Telegram-Bot-Api-Secret-Token": SECRET})
        assert response.status_code == 200 and response.json() == {"ok": True}
    answers = webhook.ok_calls("answerCallbackQuery")
    assert len(answers) == 1 and answers[0].params["text"].startswith("✅ 已记录你对")
    assert Vote.objects.filter(approval=approval).count() == 1
    assert ProcessedUpdate.objects.filter(update_id=update["update_id"]).count() == 1
    assert "同意票数：1/2（Bob）" in webhook.chat_messages(GROUP_ID)[0].text


def test_under_asgi_the_update_is_acknowledged_first_and_processed_in_the_background(
    webhook, tg_users, shop_rule, make_approval
):
    approval = make_approval()
    update = tap_update(webhook, tg_users["approver"], approval)
    webhook.delay("answerCallbackQuery", 0.5)  # 处理很慢时，Telegram 也应立刻得到 200

    async def scenario() -> tuple[int, float, bool]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await AsyncClient().post(URL, data=json.dumps(update), content_type="application/json",
                                            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
        elapsed = loop.time() - started
        answered_before_reply = bool(webhook.calls_to("answerCallbackQuery"))
        await processor.drain()
        # 后台处理跑在全局同步线程里：关掉它的数据库连接
        await asyncio.get_running_loop().create_task(
            sync_to_async(connections.close_all)(), context=contextvars.Context()
        )
        return response.status_code, elapsed, answered_before_reply

    status, elapsed, answered_before_reply = async_to_sync(scenario)()
    assert status == 200 and elapsed < 0.5 and not answered_before_reply
    assert webhook.ok_calls("answerCallbackQuery")[0].params["text"].startswith("✅ 已同意发布")
    assert Approval.objects.get(pk=approval.pk).status == Status.APPROVED
