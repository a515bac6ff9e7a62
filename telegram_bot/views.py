"""Webhook 模式（X11）：Telegram 把 update POST 到 /telegram/webhook/，由 web 进程用同一套处理器处理。

- 先用常量时间比较校验 X-Telegram-Bot-Api-Secret-Token，不符一律 403（未配置密钥时也 403）；
- ASGI（生产）下立即回 200，在事件循环里后台处理——Telegram 不会因为我们慢而重投；
- WSGI（runserver、同步测试客户端）没有常驻事件循环，只能在请求内处理完再回答；
- 同一个 update 只处理一次：去重在处理器第一组里按 update_id 落库，两种模式共用；
- 形状不对的 update（嵌套过深、update_id 不是 64 位整数、PTB 解析不了）在请求里就回 400，决不进入后台。
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
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

from jenkins_bridge.api.parsers import MAX_JSON_DEPTH, JsonTooDeep, json_loads_limited, too_deep_message

from .application import build_application

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# ProcessedUpdate.update_id 是 BigIntegerField：有符号 64 位
UPDATE_ID_MIN, UPDATE_ID_MAX = -(2**63), 2**63 - 1
# PTB 的 de_json 不校验形状：字段类型不对时抛出的就是这些
DE_JSON_ERRORS = (TypeError, KeyError, ValueError, AttributeError, OverflowError, IndexError)


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "details": details or {}}}, status=status,
                        json_dumps_params={"ensure_ascii": False})


def update_id_valid(value: Any) -> bool:
    """真正的整数（不是 true/false），且放得进数据库的 64 位列。"""
    return type(value) is int and UPDATE_ID_MIN <= value <= UPDATE_ID_MAX


def update_shape_problem(data: dict[str, Any]) -> str | None:
    """PTB 能否把它解析成 Update：不能时返回异常类名（记日志用），能则 None。

    先不带 bot 解析一次：形状不对的 update 不必为它初始化机器人（getMe），更不能进入后台再崩。
    """
    try:
        update = Update.de_json(data, None)
        chat, user = update.effective_chat, update.effective_user
    except DE_JSON_ERRORS as exc:
        return exc.__class__.__name__
    # PTB 不检查字段类型：聊天或用户的 id 不是整数（例如是列表）时，它自己在处理完之后记录聊天时就会崩
    for what, entity in (("chat.id", chat), ("from.id", user)):
        if entity is not None and type(entity.id) is not int:
            return what
    return None


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
        data = json_loads_limited(request.body or b"null")
    except RequestDataTooBig:
        return _error(413, "too_large", _("请求体过大。"))
    except JsonTooDeep:
        logger.warning("拒绝了一个嵌套超过 %s 层的 webhook 请求体", MAX_JSON_DEPTH)
        return _error(400, "nesting_too_deep", too_deep_message(), {"max_depth": MAX_JSON_DEPTH})
    except ValueError:
        return _error(400, "invalid_json", _("请求体不是合法的 JSON。"))
    if not isinstance(data, dict) or not update_id_valid(data.get("update_id")):
        logger.warning("拒绝了一个 update_id 缺失或不是 64 位整数的 webhook 请求")
        return _error(400, "invalid_update", _("不是 Telegram update：缺少整数 update_id。"))
    problem = update_shape_problem(data)
    if problem:
        logger.warning("拒绝了形状不对、无法解析的 webhook update %s（%s）", data["update_id"], problem)
        return _error(400, "invalid_update", _("不是合法的 Telegram update：字段的类型或结构不对。"),
                      {"update_id": data["update_id"]})
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
