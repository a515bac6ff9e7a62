"""python manage.py runbot —— 运行 Telegram 机器人。

- polling（默认）：长轮询；SIGINT/SIGTERM 优雅停止；网络故障由 PTB 的轮询循环退避重连
  （启动时连不上 Telegram 也会一直重试，而不是退出）。
- webhook：只向 Telegram 注册 {PUBLIC_BASE_URL}/telegram/webhook/（带密钥）后退出，update 由 web 进程接收。
- 轮询只能有一个实例（H3）：另一个实例用同一个 token 轮询时 Telegram 回 409 Conflict。刚启动（TELEGRAM_POLL_CONFLICT_GRACE_SECONDS，
  默认 60 秒内）就遇到冲突的是后来的那个：记 ERROR、说明原因、以退出码 2 退出（systemd 不会反复拉起它）；已经稳定运行的
  那个记 ERROR 后继续轮询。
- --set-webhook：任何模式下都只做注册；--delete-webhook：删除 webhook（回到轮询前用）。
没有 token 时给出明确的中文说明并以非零状态退出。
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ContextTypes

from telegram_bot.application import ALLOWED_UPDATES, build_application, set_bot_commands

logger = logging.getLogger("telegram_bot.runbot")

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
        except InvalidToken:
            raise self._invalid_token() from None
        except TelegramError as exc:
            raise CommandError(_("注册 webhook 失败：%(e)s") % {"e": exc}) from None
        self.stdout.write(self.style.SUCCESS(_("已注册 webhook：%(url)s（由 web 进程接收 update）") % {"url": url}))

    async def _delete_webhook(self, *, drop: bool) -> None:
        bot = build_application(webhook=True).bot
        try:
            async with bot:
                await bot.delete_webhook(drop_pending_updates=drop)
        except InvalidToken:
            raise self._invalid_token() from None
        except TelegramError as exc:
            raise CommandError(_("删除 webhook 失败：%(e)s") % {"e": exc}) from None
        self.stdout.write(self.style.SUCCESS(_("已删除 webhook，可以用轮询模式运行。")))

    # ------------------------------------------------------------ polling

    @staticmethod
    def _invalid_token() -> CommandError:
        # 不附带 PTB 的异常文字：InvalidToken 的信息里含有完整 token
        return CommandError(
            _("Telegram 拒绝了 TELEGRAM_BOT_TOKEN（无效或已被撤销）。请在 @BotFather 重新获取。"),
            returncode=EXIT_NOT_CONFIGURED,
        )

    def _poll(self, *, timeout: int, drop: bool) -> None:
        application = build_application()
        self.stdout.write(_("Telegram 机器人以轮询模式启动（Ctrl+C 或 SIGTERM 停止）…"))
        # 先在同一个事件循环里自己完成初始化（getMe）：token 无效时干净地退出，网络不通时退避重试；
        # run_polling 随后复用这个循环，发现已初始化就直接开始轮询
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._initialize(application))
        except InvalidToken:
            loop.close()
            raise self._invalid_token() from None
        self._conflict: str | None = None
        self._polling_since = time.monotonic()
        application.add_error_handler(self._on_conflict)
        # 轮询中的网络故障由 PTB 的轮询循环退避重连；SIGINT/SIGTERM 触发优雅停止
        application.run_polling(allowed_updates=ALLOWED_UPDATES, timeout=timeout, drop_pending_updates=drop or None)
        if self._conflict is not None:
            raise CommandError(self._conflict, returncode=EXIT_NOT_CONFIGURED)
        self.stdout.write(_("Telegram 机器人已停止。"))

    async def _on_conflict(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """409 Conflict：另一个实例在用同一个 token 轮询（或别处注册了 webhook）。后来的那个退出，先来的继续。"""
        error = context.error
        if not isinstance(error, Conflict):
            return
        running = time.monotonic() - self._polling_since
        if "webhook" in str(error).lower():
            reason = _("Telegram 上注册了 webhook（有一处以 webhook 模式运行），轮询拿不到消息")
        else:
            reason = _("另一个机器人实例正在用同一个 TELEGRAM_BOT_TOKEN 轮询（Telegram 409 Conflict）")
        if running > settings.TELEGRAM_POLL_CONFLICT_GRACE_SECONDS:
            logger.error("%s；本实例已稳定运行 %.0f 秒，继续轮询。请停掉多出来的那个实例。", reason, running)
            return
        if self._conflict is None:
            self._conflict = _("%(reason)s。轮询模式只能运行一个实例，本实例退出；"
                               "要多实例请用 webhook 模式（TELEGRAM_MODE=webhook，由 web 进程接收）。") % {"reason": reason}
            logger.error("%s", self._conflict)
            # 退出时不要再调用一次 getUpdates（PTB 用它确认已取到的 update）：那会把正在工作的实例挤掉。
            # 取到而未确认的 update 由另一个实例再取到，已处理过的按 ProcessedUpdate 去重
            updater = context.application.updater
            if updater is not None and hasattr(updater, "_Updater__polling_cleanup_cb"):
                updater._Updater__polling_cleanup_cb = None
            context.application.stop_running()

    @staticmethod
    async def _initialize(application: Application) -> None:
        delay = 1.0
        while True:
            try:
                await application.initialize()
                return
            except RetryAfter as exc:
                wait = exc.retry_after if isinstance(exc.retry_after, int | float) else exc.retry_after.total_seconds()
            except NetworkError as exc:
                wait = delay
                delay = min(delay * 2, 60.0)
                logger.warning("连接 Telegram 失败（%s），%.0f 秒后重试", exc, wait)
            await asyncio.sleep(wait)
