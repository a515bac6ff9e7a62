"""python manage.py runbot —— 运行 Telegram 机器人。

- polling（默认）：长轮询；SIGINT/SIGTERM 优雅停止；网络故障由 PTB 的轮询循环退避重连
  （启动时连不上 Telegram 也会一直重试，而不是退出）。
- webhook：只向 Telegram 注册 {PUBLIC_BASE_URL}/telegram/webhook/（带密钥）后退出，update 由 web 进程接收。
- --set-webhook：任何模式下都只做注册；--delete-webhook：删除 webhook（回到轮询前用）。
没有 token 时给出明确的中文说明并以非零状态退出。
"""

from __future__ import annotations

import asyncio
import re

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from telegram.error import InvalidToken, TelegramError

from telegram_bot.application import ALLOWED_UPDATES, build_application, set_bot_commands

SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
EXIT_NOT_CONFIGURED = 2


def webhook_url() -> str:
    return f"{settings.PUBLIC_BASE_URL}/telegram/webhook/"


class Command(BaseCommand):
    help = "运行 Telegram 机器人（polling 长轮询）；webhook 模式下注册 webhook 后退出。"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--set-webhook", action="store_true", help="注册 webhook 后退出")
        parser.add_argument("--delete-webhook", action="store_true", help="删除 webhook 后退出")
        parser.add_argument("--drop-pending-updates", action="store_true", help="丢弃 Telegram 上积压的 update")
        parser.add_argument("--poll-timeout", type=int, default=30, help="长轮询等待秒数（默认 30）")

    def handle(self, *args, **options) -> None:
        if not settings.TELEGRAM_BOT_TOKEN:
            raise CommandError(
                _("没有设置 TELEGRAM_BOT_TOKEN，机器人无法启动。请从 @BotFather 获取 token，"
                  "写入 .env 或环境变量 TELEGRAM_BOT_TOKEN 后重试。"),
                returncode=EXIT_NOT_CONFIGURED,
            )
        mode = settings.TELEGRAM_MODE
        if mode not in ("polling", "webhook"):
            raise CommandError(_("TELEGRAM_MODE 只能是 polling 或 webhook，当前是「%(m)s」。") % {"m": mode})
        if options["delete_webhook"]:
            asyncio.run(self._delete_webhook(drop=options["drop_pending_updates"]))
            return
        if options["set_webhook"] or mode == "webhook":
            self._check_webhook_settings()
            asyncio.run(self._set_webhook(drop=options["drop_pending_updates"]))
            return
        self._poll(timeout=options["poll_timeout"], drop=options["drop_pending_updates"])

    # ------------------------------------------------------------ webhook

    def _check_webhook_settings(self) -> None:
        secret = settings.TELEGRAM_WEBHOOK_SECRET
        if not secret or not SECRET_RE.match(secret):
            raise CommandError(
                _("webhook 模式需要 TELEGRAM_WEBHOOK_SECRET：1–256 个字符，只能包含 A-Z、a-z、0-9、_ 和 -。"),
                returncode=EXIT_NOT_CONFIGURED,
            )
        if not settings.PUBLIC_BASE_URL.startswith("https://"):
            raise CommandError(
                _("Telegram 只向 HTTPS 地址推送 webhook：请把 PUBLIC_BASE_URL 设为 https://…（当前 %(u)s）。")
                % {"u": settings.PUBLIC_BASE_URL},
                returncode=EXIT_NOT_CONFIGURED,
            )

    async def _set_webhook(self, *, drop: bool) -> None:
        bot = build_application(webhook=True).bot
        url = webhook_url()
        try:
            async with bot:
                await bot.set_webhook(
                    url=url, secret_token=settings.TELEGRAM_WEBHOOK_SECRET, allowed_updates=ALLOWED_UPDATES,
                    drop_pending_updates=drop, max_connections=40,
                )
                await set_bot_commands(bot)
        except TelegramError as exc:
            raise CommandError(_("注册 webhook 失败：%(e)s") % {"e": exc}) from None
        self.stdout.write(self.style.SUCCESS(_("已注册 webhook：%(url)s（由 web 进程接收 update）") % {"url": url}))

    async def _delete_webhook(self, *, drop: bool) -> None:
        bot = build_application(webhook=True).bot
        try:
            async with bot:
                await bot.delete_webhook(drop_pending_updates=drop)
        except TelegramError as exc:
            raise CommandError(_("删除 webhook 失败：%(e)s") % {"e": exc}) from None
        self.stdout.write(self.style.SUCCESS(_("已删除 webhook，可以用轮询模式运行。")))

    # ------------------------------------------------------------ polling

    def _poll(self, *, timeout: int, drop: bool) -> None:
        application = build_application()
        self.stdout.write(_("Telegram 机器人以轮询模式启动（Ctrl+C 或 SIGTERM 停止）…"))
        try:
            # bootstrap_retries=-1：启动时 Telegram 不可达就一直退避重试；轮询中的网络故障同样退避重连
            application.run_polling(
                allowed_updates=ALLOWED_UPDATES, timeout=timeout, bootstrap_retries=-1,
                drop_pending_updates=drop or None,
            )
        except InvalidToken:
            raise CommandError(
                _("Telegram 拒绝了 TELEGRAM_BOT_TOKEN（无效或已被撤销）。请在 @BotFather 重新获取。"),
                returncode=EXIT_NOT_CONFIGURED,
            ) from None
        self.stdout.write(_("Telegram 机器人已停止。"))
