"""Telegram 测试的夹具：假 Bot API 服务器、与之对应的人与群、以及把真实 PTB Application 跑起来的线束。"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from tests.fake_telegram import FakeTelegram, StoredMessage

GROUP_ID = -1001234567890  # 与 conftest.shop_rule 的 chat_id 相同


@pytest.fixture
def fake_tg(settings):
    """启动假 Telegram，并把设置指向它。节流间隔置 0，测试不必等待（节流另有专门的测试）。"""
    from telegram_bot.sender import close_http_clients

    fake = FakeTelegram().start()
    settings.TELEGRAM_BOT_TOKEN = fake.token
    settings.TELEGRAM_API_URL = fake.url
    settings.TELEGRAM_PROXY_URL = ""
    settings.TELEGRAM_DEFAULT_CHAT_ID = None
    settings.TELEGRAM_MODE = "polling"
    settings.TELEGRAM_PACING_GROUP_SECONDS = 0
    settings.TELEGRAM_PACING_PRIVATE_SECONDS = 0
    settings.TELEGRAM_PACING_GLOBAL_SECONDS = 0
    settings.TELEGRAM_MAX_INLINE_WAIT_SECONDS = 3
    settings.TELEGRAM_SEND_TIMEOUT_SECONDS = 5
    fake.add_group(GROUP_ID, "商城发布群")
    yield fake
    fake.stop()
    close_http_clients()


@pytest.fixture
def tg_users(fake_tg, people):
    """conftest.people 里每个人在假 Telegram 上的账号（数字 id 与用户名一致）。"""
    users = {}
    for key, approver in people.items():
        users[key] = fake_tg.add_user(approver.telegram_id, approver.telegram_username, approver.display_name)
    users["stranger"] = fake_tg.add_user(4242, "stranger", "Stranger")
    return users


class BotHarness:
    """在一个事件循环里跑真实的 PTB Application（长轮询假 Telegram），场景函数在同一循环里驱动它。

    用 async_to_sync 运行：处理器里 thread_sensitive 的数据库调用回到测试主线程，
    与测试自己的断言共用一个数据库连接（SQLite 内存库与 MariaDB 都可靠）。
    """

    def __init__(self, fake: FakeTelegram) -> None:
        self.fake = fake
        self.application: Any = None

    def run(self, scenario: Callable[[BotHarness], Awaitable[None]], *, timeout: float = 30.0) -> None:
        from telegram_bot.application import ALLOWED_UPDATES, build_application

        async def main() -> None:
            application = build_application()
            self.application = application
            async with application:
                await application.updater.start_polling(poll_interval=0, timeout=1, allowed_updates=ALLOWED_UPDATES)
                await application.start()
                try:
                    await asyncio.wait_for(scenario(self), timeout)
                finally:
                    await application.updater.stop()
                    await application.stop()

        async_to_sync(main)()

    # ------------------------------------------------------------ 场景里用的动作

    async def say(self, user: dict, chat_id: int, text: str, *, reply_to: int | None = None) -> StoredMessage:
        """用户发一条消息，等机器人在这个聊天里的下一条回复。"""
        update = self.fake.user_message(user, chat_id, text, reply_to_message_id=reply_to)
        after = update["message"]["message_id"]
        return await self.fake.await_for(lambda: next(
            (m for m in self.fake.chat_messages(chat_id) if m.message["message_id"] > after), None
        ))

    async def tap(self, user: dict, chat_id: int, message_id: int, data: str) -> dict:
        """用户点按钮，等机器人回答（answerCallbackQuery 的参数）。"""
        query_id = self.fake.tap(user, chat_id, message_id, data)
        return await self.fake.await_for(lambda: self.fake.answer(query_id))

    @staticmethod
    async def db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await sync_to_async(fn)(*args, **kwargs)


@pytest.fixture
def bot(fake_tg) -> BotHarness:
    return BotHarness(fake_tg)


@pytest.fixture(autouse=True)
def celery_eager(monkeypatch):
    """提交后的任务当场同步执行；任务里的异常（例如重试用尽）不冒泡到调用方，和生产一样只记录。"""
    from approvalbot.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", False)
