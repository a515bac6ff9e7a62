"""accounts 的只读查询：从各种写法认出一个人。"""

from __future__ import annotations

from .models import Approver


def approver_for_requester(requested_by: str) -> Approver | None:
    """按 Jenkins 用户 id / 用户名 / 邮箱 / Telegram 用户名认出构建的发起人（用于防止自审）。"""
    value = (requested_by or "").strip()
    if not value:
        return None
    lowered = value.lower().lstrip("@")
    for lookup in ({"jenkins_user__iexact": value}, {"username__iexact": lowered}, {"email__iexact": value},
                   {"telegram_username": lowered}):
        found = Approver.objects.filter(**lookup).first()
        if found:
            return found
    return None
