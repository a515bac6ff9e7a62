"""运维告警与恢复通知（O3/O4）：发到管理员群（TELEGRAM_ADMIN_CHAT_ID），没有则发到默认群。

内容（组件名、问题、开始与恢复时间）在入箱时由运维的检查定下（payload），这里只排版；
幂等键由运维给出（组件 + 开始失败的时刻 + 告警/恢复），同一次故障无论投递几次都只有一行、只发一次。
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime

from approvals.display import format_time

from ..messages import duration_text, render_fitted
from ..models import MessageKind, TelegramMessage
from ..outbox import outbox_add
from ..sender import chat_resolve
from .common import default_chat_id

logger = logging.getLogger(__name__)


def alert_chat_id() -> int | None:
    chat = settings.TELEGRAM_ADMIN_CHAT_ID or default_chat_id()
    return chat_resolve(int(chat)) if chat else None


def alert_enqueue(*, key: str, payload: dict[str, Any]) -> TelegramMessage | None:
    """放进发件箱；既没有管理员群也没有默认群时只记日志（运维那边已按 ERROR 记过这次告警）。"""
    chat_id = alert_chat_id()
    if chat_id is None:
        logger.warning("告警通知没有可发的群（TELEGRAM_ADMIN_CHAT_ID 与默认群都没有设置）：%s", key)
        return None
    return outbox_add(key=key, kind=MessageKind.ALERT, chat_id=chat_id, payload=payload)


def _time(value: Any) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) else None


def render_alert(payload: dict[str, Any]) -> str:
    """templates/telegram/notices/alert.html；问题描述里可能有外部系统的错误原文，转义、超长截短。"""
    since, at = _time(payload.get("since")), _time(payload.get("at"))
    context = {
        "recovered": payload.get("event") == "recovery",
        "label": str(payload.get("label") or payload.get("component") or ""),
        "since": format_time(since) if since else "-",
        "at": format_time(at) if at else "-",
        "duration": duration_text((at - since).total_seconds()) if since and at else "-",
    }
    return render_fitted("telegram/notices/alert.html", context, free_text_name="problem",
                         free_text=str(payload.get("problem") or ""))


def alert_render(row: TelegramMessage) -> str:
    return render_alert(row.payload or {})
