"""accounts 的写操作：目前只有 Telegram 身份绑定（X13）。

人以数字 Telegram id 识别。只按 @用户名 配置的人，第一次和机器人说话时把 id 绑定上；
之后改用户名不影响身份，另一个账号改成同一个用户名也得不到任何权限。
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import Approver

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TelegramIdentity:
    """approver_for_telegram_user 的结果。

    approver 为 None 表示不是审批人；bound=True 表示这次调用刚完成绑定；
    conflict 是用户名对上了、但已绑定到另一个 id（或有歧义）的审批人——调用方据此写审计。
    """

    approver: Approver | None
    bound: bool = False
    conflict: Approver | None = None
    ambiguous: bool = False


def approver_for_telegram_user(*, telegram_id: int, username: str | None) -> TelegramIdentity:
    """按数字 id 找审批人；找不到时用用户名做首次绑定（只绑定尚无 id 的启用账号）。

    用条件更新绑定：两个请求同时到达也只会绑定一次。
    """
    found = Approver.objects.select_related("role").filter(telegram_id=telegram_id).first()
    if found is not None:
        return TelegramIdentity(found)
    name = (username or "").lstrip("@").strip().lower()
    if not name:
        return TelegramIdentity(None)
    candidates = list(Approver.objects.select_related("role").filter(telegram_username=name, is_active=True))
    if not candidates:
        return TelegramIdentity(None)
    unbound = [a for a in candidates if a.telegram_id is None]
    if len(candidates) > 1:
        # 同一用户名配给了多个人：无法判断是谁，宁可不绑
        logger.warning("Telegram 用户名 @%s 对应多个审批人，拒绝自动绑定 id %s", name, telegram_id)
        return TelegramIdentity(None, conflict=unbound[0] if unbound else candidates[0], ambiguous=True)
    candidate = candidates[0]
    if candidate.telegram_id is not None:
        logger.warning(
            "Telegram id %s 使用用户名 @%s，但该用户名的审批人 %s 已绑定另一个 id，拒绝接管",
            telegram_id, name, candidate.username,
        )
        return TelegramIdentity(None, conflict=candidate)
    now = timezone.now()
    try:
        with transaction.atomic():
            changed = Approver.objects.filter(pk=candidate.pk, telegram_id__isnull=True).update(
                telegram_id=telegram_id, telegram_bound_at=now, updated_at=now
            )
    except IntegrityError:
        # 这个 id 刚被并发绑定到别的审批人上：按 id 重新查
        changed = 0
    if changed != 1:
        again = Approver.objects.select_related("role").filter(telegram_id=telegram_id).first()
        if again is not None:
            return TelegramIdentity(again)
        candidate.refresh_from_db()
        return TelegramIdentity(None, conflict=candidate)
    candidate.telegram_id = telegram_id
    candidate.telegram_bound_at = now
    logger.info("审批人 %s 首次联系，已绑定 Telegram id %s（@%s）", candidate.username, telegram_id, name)
    return TelegramIdentity(candidate, bound=True)
