"""处理器共用的部分：数据库调用、回答用的语言、update 去重、只服务已配置的聊天、回复工具。

异步处理器通过 sync_to_async（thread_sensitive）调用同步的服务；一次决定只用一次调用，
所以整个决定在服务层的一个事务里完成。
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection
from django.utils import translation
from telegram import Message, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from accounts.app_config import app_defaults
from accounts.models import ProjectRule
from approvalbot.trace import ENABLED as TRACE_ENABLED
from approvalbot.trace import trace

from ..identity import telegram_identify
from ..language import user_language
from ..messages import callback_answer_text, plain_text, render_not_served
from ..sender import chats_with_successors
from ..services import update_mark_processed

logger = logging.getLogger("telegram_bot.handlers")

P = ParamSpec("P")
R = TypeVar("R")


def _fresh_connection() -> None:
    # 机器人是长期运行的进程：像 Django 处理请求那样，每次工作前丢弃过期/坏掉的连接
    if not connection.in_atomic_block:
        close_old_connections()


def db(fn: Callable[P, R]) -> Callable[P, Any]:
    """把同步的数据库函数包装成可 await 的（同一个线程，保证连接与事务语义）。"""

    def run(*args: Any, **kwargs: Any) -> R:
        _fresh_connection()
        return fn(*args, **kwargs)

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return await sync_to_async(run, thread_sensitive=True)(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------- 语言


def in_user_language(callback: Callable[[Any, Any], Awaitable[R]]) -> Callable[[Any, Any], Awaitable[R]]:
    """处理器用操作人的 Telegram 语言（update 里的 language_code）渲染回答；不支持的语言用 TELEGRAM_LANGUAGE。

    所有处理器在注册时统一套上它（handlers.register_handlers），这是决定回答语言的唯一地方。
    激活的语言存放在 contextvar 里：db() 的 sync_to_async 会把它带进执行同步代码的线程，
    所以服务层抛出的错误说明也是这种语言。群消息由 Celery 任务渲染，任务自己切回 TELEGRAM_LANGUAGE。
    """

    @functools.wraps(callback)
    async def wrapper(update: Any, context: Any) -> R:
        user = update.effective_user if isinstance(update, Update) else None
        with translation.override(user_language(getattr(user, "language_code", None))):
            return await callback(update, context)

    return wrapper


# ---------------------------------------------------------------- 去重与只服务已配置的聊天


def _bot_id(context: ContextTypes.DEFAULT_TYPE) -> int:
    # token 的冒号前是机器人的数字 id（不是秘密部分）
    return int(context.bot.token.split(":", 1)[0]) if ":" in context.bot.token else 0


def served_group_chats() -> set[int]:
    """服务的群：默认群（环境变量与 app.json）与每条启用规则的群，及其迁移后的超级群；
    设置了 telegram.allowed_chat_ids 时只留其中允许的。"""
    chats: set[int] = set()
    defaults = app_defaults()  # 默认群与允许的群在同一次读取里
    default = defaults.get("chat_id")
    if default:
        chats.add(int(default))
    chats.update(
        int(c) for c in ProjectRule.objects.filter(is_active=True, chat_id__isnull=False)
        .values_list("chat_id", flat=True)
    )
    chats = chats_with_successors(chats)
    allowed = defaults["allowed_chat_ids"]
    if allowed is not None:
        chats &= chats_with_successors(set(allowed))
    return chats


def chat_is_served(*, chat_id: int, chat_type: str, user_id: int | None, username: str | None) -> bool:
    """群：在配置里才服务；私聊：对方是登记的审批人（首次联系时按用户名绑定）才服务。"""
    if chat_type == ChatType.PRIVATE:
        if user_id is None:
            return False
        identity = telegram_identify(user_id=user_id, username=username, chat_id=chat_id)
        return identity.approver is not None
    return chat_id in served_group_chats()


def update_admit(*, bot_id: int, update_id: int, chat_id: int | None, chat_type: str | None,
                 user_id: int | None, username: str | None) -> tuple[bool, bool]:
    """(是否第一次见到这个 update, 这个聊天是否在服务范围)。一次数据库往返：点按的路径上每一跳都算数。"""
    if not update_mark_processed(bot_id=bot_id, update_id=update_id):
        return False, False
    if chat_id is None or chat_type is None:
        return True, False
    return True, chat_is_served(chat_id=chat_id, chat_type=chat_type, user_id=user_id, username=username)


async def admit_update(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """第一组处理器，先于一切：同一个 update 只处理一次（webhook 重投、轮询重放）；
    不在服务范围的聊天说明一次，然后什么也不做。"""
    if not isinstance(update, Update):
        raise ApplicationHandlerStop
    if TRACE_ENABLED and update.callback_query is not None:  # 关闭时不为打点拆字符串
        trace("update_received", ((update.callback_query.data or "").split(":") + ["-", "-"])[1])
    chat = update.effective_chat
    user = update.effective_user
    checkable = chat is not None and user is not None and not user.is_bot
    fresh, served = await db(update_admit)(
        bot_id=_bot_id(context), update_id=update.update_id,
        chat_id=chat.id if checkable else None, chat_type=chat.type if checkable else None,
        user_id=user.id if checkable else None, username=user.username if checkable else None,
    )
    if not fresh:
        logger.info("update %s 已处理过，忽略重复投递", update.update_id)
        raise ApplicationHandlerStop
    if served:
        return
    if not checkable:
        if update.callback_query:
            await safe_answer(update, _not_served_text(None, None, user), alert=True, is_html=True)
        raise ApplicationHandlerStop
    logger.info("拒绝服务未配置的聊天 %s（%s），用户 %s", chat.id, chat.type, user.id)
    text = _not_served_text(chat.id, chat.type, user)
    if update.callback_query:
        await safe_answer(update, text, alert=True, is_html=True)
    elif update.effective_message and (update.effective_message.text or "").startswith("/"):
        # 只回应命令：不在没配置的群里对每句闲聊都插话
        await safe_reply(update, text)
    raise ApplicationHandlerStop


def _not_served_text(chat_id: int | None, chat_type: str | None, user: Any) -> str:
    return render_not_served(
        chat_id=chat_id or 0, chat_type=chat_type or "", user_id=getattr(user, "id", None),
        username=getattr(user, "username", None),
    )


# ---------------------------------------------------------------- 回复工具


async def safe_reply(update: Update, html_text: str, **kwargs: Any) -> Message | None:
    """回复当前消息，返回发出的消息；发送失败只记录（回复失败不能影响已做的决定）。"""
    message = update.effective_message
    if message is None:
        return None
    try:
        return await message.reply_text(html_text, do_quote=message.chat.type != ChatType.PRIVATE, **kwargs)
    except TelegramError:
        logger.warning("回复 chat %s 失败", message.chat_id, exc_info=True)
        return None


async def safe_answer(update: Update, text: str | None = None, *, alert: bool = False, is_html: bool = False) -> None:
    """回答按钮（必须回答，否则按钮一直转圈）。回调答复是纯文本，最多 200 字，超出截短。"""
    query = update.callback_query
    if query is None:
        return
    try:
        if text:
            plain = plain_text(text) if is_html else text
            await query.answer(callback_answer_text(plain), show_alert=alert)
        else:
            await query.answer()
    except TelegramError:
        logger.warning("回答按钮 %s 失败", query.id, exc_info=True)
