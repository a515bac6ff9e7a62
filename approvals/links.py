"""对外链接（X5）：日志查看器链接带签名与有效期，放进 Telegram 消息也不会让日志被随便看到。"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.urls import reverse

from .models import Approval

LOG_LINK_SALT = "approvals.logs"
LOG_LINK_MAX_AGE = 7 * 24 * 3600  # 一周：覆盖审批到复盘的常见时间


def log_token(approval: Approval) -> str:
    return signing.TimestampSigner(salt=LOG_LINK_SALT).sign(approval.public_id).split(":", 1)[1]


def log_token_valid(approval: Approval, token: str) -> bool:
    try:
        signing.TimestampSigner(salt=LOG_LINK_SALT).unsign(f"{approval.public_id}:{token}", max_age=LOG_LINK_MAX_AGE)
    except signing.BadSignature:
        return False
    return True


def log_url(approval: Approval) -> str:
    """带签名的日志查看器绝对地址。"""
    path = reverse("approvals:log_viewer", args=[approval.public_id])
    return f"{settings.PUBLIC_BASE_URL}{path}?t={log_token(approval)}"


def status_url(approval: Approval) -> str:
    return f"{settings.PUBLIC_BASE_URL}/api/status/{approval.public_id}"
