"""错误处理器：带上下文与堆栈记录每个未处理的异常（不含 token），并尽量给用户一个回答。"""

from __future__ import annotations

import logging

from django.utils.translation import gettext as _
from telegram import Update
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.ext import ContextTypes

logger = logging.getLogger("telegram_bot.handlers")


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    error = context.error
    chat_id = None
    if isinstance(update, Update):
        chat_id = update.effective_chat.id if update.effective_chat else None
        user_id = update.effective_user.id if update.effective_user else None
        where = f"update {update.update_id} (chat={chat_id}, user={user_id})"
    else:
        where = "轮询/后台任务"
    if isinstance(error, NetworkError) and not isinstance(error, BadRequest):
        # 网络抖动由 PTB 的轮询循环退避重连，不必每次打印堆栈
        logger.warning("Telegram 网络错误（%s）：%s", where, error)
        return
    logger.error("处理 %s 时出错：%s", where, error, exc_info=error, extra={"chat_id": chat_id})
    if not isinstance(update, Update):
        return
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(_("处理失败，已记录错误，请稍后重试。"), show_alert=True)
        elif update.effective_message is not None and (update.effective_message.text or "").startswith("/"):
            await update.effective_message.reply_text(_("⚠️ 处理失败，已记录错误，请稍后重试。"))
    except TelegramError:
        # 按钮可能已经回答过（只能回答一次）；这里失败无需再报
        logger.debug("错误提示未能送达", exc_info=True)
