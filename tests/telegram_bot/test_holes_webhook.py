"""探测出的漏洞 1 与 3：webhook 收到嵌套很深的 JSON、形状不对的 update、超出 64 位的 update_id。

以前：HTML 500、或先回 200 再在后台 DataError。现在：400 统一错误形状（invalid_update / nesting_too_deep），
什么都不写入、后台不崩；WSGI（测试客户端、runserver）与 ASGI 两条路都一样。
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections
from django.test import AsyncClient, Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telegram_bot.models import ProcessedUpdate
from telegram_bot.views import processor

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "wh-Secret_0123456789abcdef"
URL = "/telegram/webhook/"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}


@pytest.fixture
def webhook(settings, fake_tg):
    settings.TELEGRAM_MODE = "webhook"
    settings.TELEGRAM_WEBHOOK_SECRET = SECRET
    return fake_tg


def post(body: str, **extra) -> object:
    return Client().post(URL, data=body, content_type="application/json", headers={**HEADERS, **extra})


def post_asgi(body: str) -> tuple[int, dict]:
    async def scenario() -> tuple[int, dict]:
        response = await AsyncClient().post(URL, data=body, content_type="application/json", headers=HEADERS)
        await processor.drain()
        await asyncio.get_running_loop().create_task(
            sync_to_async(connections.close_all)(), context=contextvars.Context()
        )
        return response.status_code, json.loads(response.content)

    return async_to_sync(scenario)()


def assert_json_error(status: int, body: dict, code: str) -> dict:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body
    return body["error"]


MALFORMED = [
    '{"update_id": 1, "message": "x"}',
    '{"update_id": 2, "message": {"text": "hi"}}',
    '{"update_id": 3, "callback_query": {"id": 5}}',
    '{"update_id": 4, "message": {"message_id": 1, "date": 0, "chat": "nope"}}',
    '{"update_id": 5, "callback_query": {"id": "q", "from": 7, "chat_instance": "c"}}',
    '{"update_id": 6, "edited_message": []}',
    '{"update_id": 7, "my_chat_member": {"chat": {}}}',
]
BAD_IDS = ['{"update_id": 1180591620717411303424}', '{"update_id": 9223372036854775808}',
           '{"update_id": -9223372036854775809}', '{"update_id": true}', '{"update_id": false}',
           '{"update_id": 1.0}', '{"update_id": null}']


@pytest.mark.parametrize("body", MALFORMED)
def test_wrong_shaped_update_is_400_under_wsgi(webhook, body, caplog):
    response = post(body)
    assert response.status_code == 400, response.content
    assert_json_error(400, response.json(), "invalid_update")
    assert not ProcessedUpdate.objects.exists()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and "update" in r.getMessage()]


@pytest.mark.parametrize("body", MALFORMED)
def test_wrong_shaped_update_is_400_under_asgi(webhook, body):
    status, data = post_asgi(body)
    assert status == 400
    assert_json_error(status, data, "invalid_update")
    assert not ProcessedUpdate.objects.exists()


@pytest.mark.parametrize("body", BAD_IDS)
def test_update_id_must_be_a_64_bit_integer(webhook, body):
    response = post(body)
    assert response.status_code == 400, response.content
    assert_json_error(400, response.json(), "invalid_update")
    status, data = post_asgi(body)
    assert status == 400 and data["error"]["code"] == "invalid_update"
    assert not ProcessedUpdate.objects.exists()


def test_largest_64_bit_update_id_is_processed(webhook):
    update = {"update_id": 2**63 - 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 4242, "type": "private"},
                                                  "from": {"id": 4242, "is_bot": False, "first_name": "S"},
                                                  "text": "/help"}}
    response = post(json.dumps(update))
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert ProcessedUpdate.objects.filter(update_id=2**63 - 1).count() == 1


@pytest.mark.parametrize("kind", ["object", "array"])
def test_deeply_nested_body_is_400_not_html_500(webhook, kind):
    body = '{"update_id": 1, "message": ' + ('{"a":' * 1000 + "1" + "}" * 1000 if kind == "object"
                                            else "[" * 1000 + "]" * 1000) + "}"
    response = post(body)
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")
    error = assert_json_error(400, response.json(), "nesting_too_deep")
    assert "32" in error["message"]
    status, data = post_asgi(body)
    assert status == 400 and data["error"]["code"] == "nesting_too_deep"
    assert not ProcessedUpdate.objects.exists()


def test_nesting_error_in_english(webhook):
    response = post("[" * 1000, **{"Accept-Language": "en"})
    error = assert_json_error(400, response.json(), "nesting_too_deep")
    assert error["message"] == "The JSON request body is nested too deeply (at most 32 levels)."


# ---------------------------------------------------------------- 随机形状（Hypothesis）

SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
JUNK = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=12)
FIELDS = ["message", "edited_message", "callback_query", "my_chat_member", "chat_member", "channel_post",
          "inline_query", "message_reaction"]
# 像样的局部：让一部分例子深入到 PTB 的 de_json 里各个对象，而不是全在第一层被挡回
CHAT = st.fixed_dictionaries({"id": st.one_of(st.integers(), JUNK), "type": st.sampled_from(["private", "group", "x"])})
USER = st.fixed_dictionaries({"id": st.one_of(st.integers(min_value=1, max_value=2**40), JUNK),
                              "is_bot": st.one_of(st.booleans(), JUNK), "first_name": st.one_of(st.text(), JUNK)})
MESSAGE = st.fixed_dictionaries({"message_id": st.one_of(st.integers(), JUNK), "date": st.one_of(st.integers(), JUNK),
                                 "chat": st.one_of(CHAT, JUNK)},
                                optional={"from": st.one_of(USER, JUNK), "text": st.one_of(st.text(), JUNK),
                                          "entities": JUNK, "reply_to_message": JUNK})
CALLBACK = st.fixed_dictionaries({"id": st.one_of(st.text(min_size=1), JUNK), "from": st.one_of(USER, JUNK),
                                  "chat_instance": st.one_of(st.text(), JUNK)},
                                 optional={"data": st.one_of(st.text(), JUNK), "message": st.one_of(MESSAGE, JUNK)})
UPDATE = st.fixed_dictionaries(
    {"update_id": st.one_of(st.integers(min_value=1, max_value=2**31), st.integers(), JUNK)},
    optional={"message": st.one_of(MESSAGE, JUNK), "callback_query": st.one_of(CALLBACK, JUNK),
              **{name: JUNK for name in FIELDS[2:]}},
)


def test_random_json_shapes_never_give_a_5xx(webhook, caplog):
    client = Client()
    seen: set[int] = set()

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(body=st.one_of(UPDATE, UPDATE, JUNK))
    def run(body):
        response = client.post(URL, data=json.dumps(body), content_type="application/json", headers=HEADERS)
        assert response.status_code < 500, (body, response.content[:300])
        seen.add(response.status_code)
        data = response.json()
        if response.status_code >= 400:
            assert data["error"]["code"] in ("invalid_update", "invalid_json"), data
        else:
            assert data == {"ok": True}

    run()
    assert {200, 400} <= seen  # 既有被拒绝的，也有一路进到处理器里的
    # PTB 自身（而不是我们的处理器）从未因这些输入崩溃
    assert not [r for r in caplog.records if "后台处理 webhook update 失败" in r.getMessage()]


@pytest.mark.parametrize("update", [
    {"update_id": 11, "message": {"message_id": 1, "date": 0, "chat": {"id": [1], "type": "private"}}},
    {"update_id": 12, "message": {"message_id": 1, "date": 0, "chat": {"id": -100, "type": "group"},
                                  "from": {"id": "7", "is_bot": False, "first_name": "x"}}},
    {"update_id": 13, "callback_query": {"id": "5", "chat_instance": "c", "data": "x",
                                         "from": {"id": {"a": 1}, "is_bot": False, "first_name": "x"}}},
])
def test_chat_or_user_id_that_is_not_an_integer_is_refused(webhook, update):
    # hypothesis 找到过：id 是列表时 PTB 处理完后记录聊天时崩溃（500）
    response = Client().post(URL, data=json.dumps(update), content_type="application/json", headers=HEADERS)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_update"
