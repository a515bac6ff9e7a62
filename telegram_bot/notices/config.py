"""配置变化通知（C7）：config/*.json 重新加载生效或被拒绝时，告诉默认群。内容在入箱时定下（payload）。"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings

from ..messages import render_fitted
from ..models import MessageKind, TelegramMessage
from ..outbox import outbox_add, outbox_key
from ..sender import chat_resolve
from .common import default_chat_id

logger = logging.getLogger(__name__)


def render_config_changed(name: str, ok: bool, summary: str) -> str:
    """templates/telegram/notices/config.html；summary 可能含文件内容，一律转义、超长截短。"""
    files = {"users": settings.USERS_CONFIG_FILE.name, "app": settings.APP_CONFIG_FILE.name}
    return render_fitted("telegram/notices/config.html", {"ok": ok, "filename": files.get(name, name)},
                         free_text_name="summary", free_text=summary or "")


def config_notice_enqueue(*, name: str, ok: bool, summary: str) -> TelegramMessage | None:
    """放进发件箱；没有默认群时只记日志。同一次变化不会重复入箱：重复判断在配置加载器（按文件校验和）。"""
    chat_id = default_chat_id()
    if chat_id is None:
        logger.info("配置变化通知：没有默认群，只记日志（%s，ok=%s）", name, ok)
        return None
    return outbox_add(key=outbox_key(MessageKind.CONFIG, name, uuid.uuid4().hex), kind=MessageKind.CONFIG,
                      chat_id=chat_resolve(chat_id), payload={"name": name, "ok": ok, "summary": summary})


def config_render(row: TelegramMessage) -> str:
    payload = row.payload or {}
    return render_config_changed(str(payload.get("name", "")), bool(payload.get("ok")), str(payload.get("summary", "")))
