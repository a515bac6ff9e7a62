"""日志格式与脱敏：结构化 JSON 输出，并把任何泄露到消息里的密钥替换掉。"""

from __future__ import annotations

import json
import logging
import re

# Telegram Bot token 形如 123456:ABC...，常出现在 httpx 的请求 URL 里
_BOT_TOKEN_RE = re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{20,}")
_BEARER_RE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def redact(text: str) -> str:
    """把 Bot token、Bearer token 以及已配置的密钥替换为 ***。"""
    from django.conf import settings

    text = _BOT_TOKEN_RE.sub("***", text)
    text = _BEARER_RE.sub(r"\1***", text)
    for name in ("TELEGRAM_BOT_TOKEN", "APPROVAL_API_TOKEN", "JENKINS_API_TOKEN", "TELEGRAM_WEBHOOK_SECRET"):
        value = getattr(settings, name, "") or ""
        if len(value) >= 8 and value in text:
            text = text.replace(value, "***")
    return text


class RedactSecretsFilter(logging.Filter):
    """最后一道防线：即使某个库把 token 写进日志，也在输出前抹掉。"""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - 格式化失败时保持原样交给 handler 报告
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        # 异常文字也要抹：python-telegram-bot 的 InvalidToken 把整个 token 写进异常信息，
        # 文本格式的 handler 会原样打印堆栈（Formatter 优先使用已缓存的 exc_text）
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """一行一个 JSON 对象，便于日志系统检索（O5/O7）。"""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("approval_id", "task_id", "chat_id"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False)
