"""Telegram 文字用哪种语言。

- 群里的审批消息、提醒、通知没有单一的读者：用服务器的语言 TELEGRAM_LANGUAGE（默认即 LANGUAGE_CODE）；
- 回答某个人的命令或按钮：用这个人 Telegram 客户端的语言（每个 update 都带 language_code），
  不支持的语言退回服务器语言。

这里只做映射，不依赖 python-telegram-bot：Celery worker 也用它。
"""

from __future__ import annotations

from django.conf import settings


def supported_language(code: str | None) -> str | None:
    """IETF 语言标签（Telegram 给的 en、en-US、zh-hans、zh-CN……）→ 我们支持的语言代码；不支持返回 None。

    只比较主标签：zh-TW 也得到 zh-hans（我们只有一种中文，总比退回别的语言更好读）。
    """
    if not code:
        return None
    primary = code.strip().lower().replace("_", "-").split("-")[0]
    for language, _name in settings.LANGUAGES:
        if language.lower().split("-")[0] == primary:
            return language
    return None


def bot_language() -> str:
    """群消息与后台任务的语言：TELEGRAM_LANGUAGE，默认与 LANGUAGE_CODE 相同。"""
    configured = getattr(settings, "TELEGRAM_LANGUAGE", "") or settings.LANGUAGE_CODE
    return supported_language(configured) or settings.LANGUAGE_CODE


def user_language(language_code: str | None) -> str:
    """回答个人时的语言：对方的 Telegram 语言受支持就用它，否则用服务器语言。"""
    return supported_language(language_code) or bot_language()
