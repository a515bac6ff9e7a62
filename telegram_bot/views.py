"""Webhook 模式（X11）：Telegram 把 update POST 到 /telegram/webhook/，由 web 进程用同一套处理器处理。

- 先用常量时间比较校验 X-Telegram-Bot-Api-Secret-Token，不符一律 403（未配置密钥时也 403）；
- ASGI（生产）下立即回 200，在事件循环里后台处理——Telegram 不会因为我们慢而重投；
- WSGI（runserver、同步测试客户端）没有常驻事件循环，只能在请求内处理完再回答；
- 同一个 update 只处理一次：去重在处理器第一组里按 update_id 落库，两种模式共用。
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from telegram import Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application

from .application import build_application

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "details": {}}}, status=status,
                        json_dumps_params={"ensure_ascii": False})


def secret_matches(given: str | None) -> bool:
    """常量时间比较；没有配置密钥时拒绝一切（不能让任何人冒充 Telegram）。"""
    expected = settings.TELEGRAM_WEBHOOK_SECRET or ""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


class WebhookProcessor:
    """每个事件循环一个已初始化的 Application；ASGI 下整个进程复用同一个。"""

    def __init__(self) -> None:
        self._application: Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task] = set()

    async def application(self) -> Application:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._application, self._loop, self._lock = None, loop, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            if self._application is None:
                application = build_application(webhook=True)
                await application.initialize()
                self._application = application
        return self._application

    async def process_in_background(self, data: dict[str, Any]) -> None:
        application = await self.application()
        update = Update.de_json(data, application.bot)
        # 用全新的 contextvars 上下文：请求结束后，后台任务不能再绑在请求的同步线程上
        task = asyncio.get_running_loop().create_task(
            application.process_update(update), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # 处理器的异常已由错误处理器记录；走到这里的是 PTB 自身的失败
            logger.error("后台处理 webhook update 失败", exc_info=task.exception())

    async def process_now(self, data: dict[str, Any]) -> None:
        """没有常驻事件循环时：临时建一个 Application，处理完就关闭。"""
        application = build_application(webhook=True)
        async with application:
            await application.process_update(Update.de_json(data, application.bot))

    async def drain(self) -> None:
        """等后台处理完（测试与优雅关闭用）。"""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


processor = WebhookProcessor()


@csrf_exempt
async def telegram_webhook(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return _error(405, "method_not_allowed", _("只接受 POST。"))
    if not secret_matches(request.headers.get(SECRET_HEADER)):
        logger.warning("拒绝了一个密钥不符的 webhook 请求（来自 %s）", request.META.get("REMOTE_ADDR", "?"))
        return _error(403, "forbidden", _("webhook 密钥不正确。"))
    if settings.TELEGRAM_MODE != "webhook":
        return _error(404, "webhook_disabled", _("未启用 webhook 模式（TELEGRAM_MODE=polling）。"))
    if not settings.TELEGRAM_BOT_TOKEN:
        return _error(503, "not_configured", _("没有设置 TELEGRAM_BOT_TOKEN。"))
    try:
        data = json.loads(request.body or b"null")
    except RequestDataTooBig:
        return _error(413, "too_large", _("请求体过大。"))
    except ValueError:
        return _error(400, "invalid_json", _("请求体不是合法的 JSON。"))
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
        return _error(400, "invalid_update", _("不是 Telegram update：缺少整数 update_id。"))
    try:
        if isinstance(request, ASGIRequest):
            await processor.process_in_background(data)
        else:
            await processor.process_now(data)
    except InvalidToken:
        # 不记录异常文字（其中含 token）；回 503 让 Telegram 稍后重投
        logger.error("Telegram 拒绝了 TELEGRAM_BOT_TOKEN，webhook 无法处理 update %s", data["update_id"])
        return _error(503, "invalid_token", _("Telegram 拒绝了 TELEGRAM_BOT_TOKEN。"))
    except NetworkError as exc:
        logger.warning("初始化机器人时连不上 Telegram（%s），update %s 交给 Telegram 重投", exc, data["update_id"])
        return _error(503, "telegram_unreachable", _("暂时连不上 Telegram，请稍后重投。"))
    return JsonResponse({"ok": True})
