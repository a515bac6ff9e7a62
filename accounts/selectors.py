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


def approver_by_handle(handle: str) -> Approver | None:
    """命令里写的人（@Telegram 用户名或审批系统的用户名，不分大小写）→ 启用的审批人。"""
    name = (handle or "").strip().lstrip("@").lower()
    if not name:
        return None
    return (Approver.objects.select_related("role").filter(telegram_username=name, is_active=True).first()
            or Approver.objects.select_related("role").filter(username__iexact=name, is_active=True).first())
