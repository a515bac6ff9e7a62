"""构建 python-telegram-bot 的 Application：轮询（runbot）与 webhook（web 进程）共用。

- base_url = {TELEGRAM_API_URL}/bot，文件地址 {TELEGRAM_API_URL}/file/bot（可指向自建 Bot API 服务器，T8）；
- TELEGRAM_PROXY_URL 支持 http(s):// 与 socks5://（socksio 已安装），同时用于 getUpdates；
- AIORateLimiter 控制机器人进程自己的发送速率；
- httpx 会把含 token 的 URL 写进 INFO 日志，所以它的日志级别固定为 WARNING。
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from telegram import Bot, BotCommand, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.ext import AIORateLimiter, Application, Defaults

from .handlers import register_handlers
from .language import bot_language

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query"]

COMMANDS = [
    ("start", gettext_lazy("开始使用")),
    ("help", gettext_lazy("使用帮助")),
    ("approve", gettext_lazy("同意发布：/approve 编号")),
    ("reject", gettext_lazy("拒绝发布：/reject 编号 理由")),
    ("pending", gettext_lazy("我可以审批的待办")),
    ("status", gettext_lazy("审批统计；/status 编号 查看详情")),
    ("jenkins", gettext_lazy("Jenkins 状态")),
    ("stats", gettext_lazy("审批分析（管理员）")),
    ("freeze", gettext_lazy("封版窗口；管理员可临时封版")),
    ("unfreeze", gettext_lazy("结束临时封版（管理员）")),
    ("delegate", gettext_lazy("委托审批权：/delegate @用户 开始 结束")),
    ("undelegate", gettext_lazy("撤销委托")),
    ("whoami", gettext_lazy("我的 Telegram ID 与审批权限")),
]


def quiet_http_loggers() -> None:
    """token 在请求 URL 里：httpx/httpcore 的 INFO 日志、PTB 的 DEBUG 日志都会带上它。

    settings.LOGGING 已这样配置；这里再保证一次（例如 LOGGING 被覆盖、或在 Django 之外构建应用时）。
    """
    for name, level in (("httpx", logging.WARNING), ("httpcore", logging.WARNING), ("telegram", logging.INFO)):
        logger_ = logging.getLogger(name)
        if logger_.getEffectiveLevel() < level:
            logger_.setLevel(level)


def api_urls(root: str | None = None) -> tuple[str, str]:
    root = (root or settings.TELEGRAM_API_URL).rstrip("/")
    return f"{root}/bot", f"{root}/file/bot"


def build_application(
    *,
    token: str | None = None,
    api_url: str | None = None,
    proxy: str | None = None,
    webhook: bool = False,
) -> Application:
    """构建并注册好处理器的 Application（尚未 initialize）。webhook=True 时不带 Updater。"""
    token = token or settings.TELEGRAM_BOT_TOKEN
    if not token:
        raise ImproperlyConfigured(_("没有设置 TELEGRAM_BOT_TOKEN"))
    quiet_http_loggers()
    base_url, base_file_url = api_urls(api_url)
    proxy = settings.TELEGRAM_PROXY_URL if proxy is None else proxy
    builder = (
        Application.builder()
        .token(token)
        .base_url(base_url)
        .base_file_url(base_file_url)
        .defaults(Defaults(parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True)))
        .rate_limiter(AIORateLimiter(max_retries=2))
        # 并发处理 update：一个慢的 /jenkins 不会挡住别人点按钮
        .concurrent_updates(8)
        .connect_timeout(10.0)
        .read_timeout(15.0)
        .write_timeout(15.0)
        .pool_timeout(5.0)
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
    )
    if proxy:
        builder = builder.proxy(proxy).get_updates_proxy(proxy)
    if webhook:
        builder = builder.updater(None)
    application = builder.build()
    register_handlers(application)
    return application


def _bot_commands() -> list[BotCommand]:
    return [BotCommand(name, str(description)) for name, description in COMMANDS]


async def set_bot_commands(bot: Bot) -> None:
    """登记命令菜单的说明：每种支持的语言一份（Telegram 按用户客户端语言显示），
    最后登记不限语言的默认一份（TELEGRAM_LANGUAGE），给其他语言的用户。"""
    for language, _label in settings.LANGUAGES:
        with translation.override(language):
            await bot.set_my_commands(_bot_commands(), language_code=language.split("-")[0])
    with translation.override(bot_language()):
        await bot.set_my_commands(_bot_commands())


async def _post_init(application: Application) -> None:
    """仅在 run_polling 时调用：登记命令菜单。失败不影响启动。"""
    from telegram.error import TelegramError

    try:
        await set_bot_commands(application.bot)
    except TelegramError as exc:
        logger.warning("登记命令菜单失败（不影响使用）：%s", exc)
    logger.info("Telegram 机器人已启动：@%s（id %s）", application.bot.username, application.bot.id)


async def _post_shutdown(application: Application) -> None:
    from asgiref.sync import sync_to_async
    from django.db import connections

    # 释放处理器线程里的数据库连接
    await sync_to_async(connections.close_all, thread_sensitive=True)()
