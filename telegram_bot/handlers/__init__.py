"""注册所有处理器。轮询与 webhook 两种模式用同一套（application.build_application 调用这里）。"""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, TypeHandler, filters

from .commands import (
    cmd_help,
    cmd_jenkins,
    cmd_pending,
    cmd_start,
    cmd_status,
    cmd_whoami,
    on_pending_page,
    on_unknown_button,
)
from .common import admit_update, in_user_language
from .decisions import cmd_approve, cmd_reject, on_approval_button, on_reply
from .errors import on_error
from .policy import cmd_delegate, cmd_freeze, cmd_undelegate, cmd_unfreeze
from .stats import cmd_stats

# 只处理新消息，不处理编辑过的消息：编辑一条旧的 /approve 不应再次投票
NEW_MESSAGES = filters.UpdateType.MESSAGE


def register_handlers(application: Application) -> None:
    # 每个处理器都套上 in_user_language：回答用操作人的 Telegram 语言（唯一决定语言的地方）
    lang = in_user_language
    # 组 -1：去重并且只服务已配置的聊天（一次数据库往返），可能用 ApplicationHandlerStop 终止后续处理
    application.add_handler(TypeHandler(Update, lang(admit_update)), group=-1)

    for name, callback in (
        ("start", cmd_start),
        ("help", cmd_help),
        ("whoami", cmd_whoami),
        ("approve", cmd_approve),
        ("reject", cmd_reject),
        ("status", cmd_status),
        ("pending", cmd_pending),
        ("jenkins", cmd_jenkins),
        ("stats", cmd_stats),
        ("freeze", cmd_freeze),
        ("unfreeze", cmd_unfreeze),
        ("delegate", cmd_delegate),
        ("undelegate", cmd_undelegate),
    ):
        application.add_handler(CommandHandler(name, lang(callback), filters=NEW_MESSAGES))
    application.add_handler(CallbackQueryHandler(lang(on_approval_button), pattern=r"^ap:"))
    application.add_handler(CallbackQueryHandler(lang(on_pending_page), pattern=r"^pd:"))
    application.add_handler(CallbackQueryHandler(lang(on_unknown_button)))
    application.add_handler(
        MessageHandler(NEW_MESSAGES & filters.REPLY & filters.TEXT & ~filters.COMMAND, lang(on_reply))
    )
    application.add_error_handler(lang(on_error))
