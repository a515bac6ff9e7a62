"""把 Telegram 用户映射为审批人，并把绑定/接管企图写入身份审计（X13）。"""

from __future__ import annotations

from accounts.services import TelegramIdentity, approver_for_telegram_user

from .models import IdentityEvent, IdentityEventKind


def telegram_identify(*, user_id: int, username: str | None, chat_id: int | None = None) -> TelegramIdentity:
    """按数字 id 识别；首次联系按用户名绑定。绑定与被拒绝的接管都留下审计记录。"""
    identity = approver_for_telegram_user(telegram_id=user_id, username=username)
    if identity.bound:
        IdentityEvent.objects.create(
            kind=IdentityEventKind.BOUND, approver=identity.approver, telegram_id=user_id,
            telegram_username=(username or "")[:64], chat_id=chat_id,
        )
    elif identity.conflict is not None:
        IdentityEvent.objects.create(
            kind=IdentityEventKind.AMBIGUOUS if identity.ambiguous else IdentityEventKind.TAKEOVER_REFUSED,
            approver=identity.conflict, telegram_id=user_id, telegram_username=(username or "")[:64],
            chat_id=chat_id, details={"bound_id": identity.conflict.telegram_id},
        )
    return identity
