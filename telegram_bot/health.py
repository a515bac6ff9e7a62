"""给 /health 用的 Telegram 组件状态：配置、永久失败的消息与聊天、可选的 getMe 连通性检查。"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from accounts.app_config import allowed_chat_ids, app_defaults
from accounts.models import ProjectRule

from .models import GLOBAL_PACING_CHAT_ID, MessageState, TelegramChat, TelegramMessage
from .sender import TelegramSender, TelegramSendError, chat_allowed


def telegram_health(*, check_api: bool = False, timeout: float = 5.0) -> dict[str, Any]:
    """返回 {"status": ok|degraded|error|disabled, ...}。

    - disabled：没有配置 token（机器人未启用，不算故障）；
    - error：getMe 失败（check_api=True 时才检查）；
    - degraded：24 小时内有永久失败的消息，或有聊天处于永久错误（被拉黑/踢出/不存在），
      或规则/默认群指向 telegram.allowed_chat_ids 之外的群（机器人不会往那里发）。
    """
    now = timezone.now()
    data: dict[str, Any] = {"configured": bool(settings.TELEGRAM_BOT_TOKEN), "mode": settings.TELEGRAM_MODE}
    failed = TelegramMessage.objects.filter(state=MessageState.FAILED, updated_at__gte=now - timedelta(hours=24))
    data["failed_messages_24h"] = failed.count()
    data["recent_failures"] = [
        {"kind": r.kind, "approval": r.approval.public_id if r.approval else None, "chat_id": r.chat_id,
         "code": r.error_code, "error": r.last_error[:200]}
        for r in failed.select_related("approval").order_by("-updated_at")[:5]
    ]
    # 待发超过 5 分钟：重试在排队，或投递丢了等着补发扫描
    data["stuck_messages"] = TelegramMessage.objects.filter(
        state=MessageState.PENDING, created_at__lte=now - timedelta(minutes=5), created_at__gte=now - timedelta(hours=24)
    ).count()
    data["failed_chats"] = [
        {"chat_id": c.chat_id, "code": c.error_code, "error": c.last_error[:200],
         "at": c.last_error_at.isoformat() if c.last_error_at else None}
        for c in TelegramChat.objects.filter(error_permanent=True).exclude(chat_id=GLOBAL_PACING_CHAT_ID)[:20]
    ]
    allowed = allowed_chat_ids()
    data["allowed_chat_ids"] = sorted(allowed) if allowed is not None else None
    if allowed is not None:
        # 规则或默认群指向不允许的群：机器人不会往那里发，审批人收不到消息
        wanted = {int(c) for c in ProjectRule.objects.filter(is_active=True, chat_id__isnull=False)
                  .values_list("chat_id", flat=True)}
        default = app_defaults().get("chat_id")
        if default:
            wanted.add(int(default))
        data["chats_not_allowed"] = sorted(c for c in wanted if not chat_allowed(c))
    if not data["configured"]:
        data["status"] = "disabled"
        return data
    if check_api:
        try:
            me = TelegramSender(timeout=timeout, pacing=False).get_me()
            data["api"] = "ok"
            data["bot_username"] = me.get("username")
        except TelegramSendError as exc:
            data["api"] = "error"
            data["api_error"] = str(exc)
            data["status"] = "error"
            return data
    data["status"] = "degraded" if (data["failed_messages_24h"] or data["failed_chats"]
                                    or data.get("chats_not_allowed")) else "ok"
    return data
