"""领域错误：一个基类，带机器可读的 code、给人看的 message（已翻译）和 HTTP 状态。

API、Telegram、后台都把它原样转述给用户，不必各自再拼文案。
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils import timezone
from django.utils.translation import gettext as _

from .display import format_time

if TYPE_CHECKING:
    from .models import Approval


class ApprovalError(Exception):
    code = "approval_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class ApprovalNotFound(ApprovalError):
    code = "not_found"
    http_status = 404


class PermissionDenied(ApprovalError):
    code = "permission_denied"
    http_status = 403


class SelfApprovalDenied(PermissionDenied):
    code = "self_approval"


class AlreadyDecided(ApprovalError):
    code = "already_decided"
    http_status = 409


class AlreadyVoted(ApprovalError):
    code = "already_voted"
    http_status = 409


class InvalidRequest(ApprovalError):
    code = "invalid"
    http_status = 400


class FreezeRefused(ApprovalError):
    """X4：封版期间的申请已记录并被拒绝。409：与此刻的状态（封版）冲突；details 带 id、状态、窗口与结束时间。"""

    code = "frozen"
    http_status = 409


def freeze_refused_error(approval: Approval) -> FreezeRefused:
    ends = format_time(approval.freeze_ends_at) if approval.freeze_ends_at else "-"
    return FreezeRefused(
        _("封版期间不能发布：「%(window)s」至 %(ends)s 结束，审批 %(id)s 已记录并拒绝。"
          "确需发布请以紧急发布申请（emergency=true 并写明 emergency_reason）。") % {
            "window": approval.freeze_name or "-", "ends": ends, "id": approval.public_id},
        details={"id": approval.public_id, "status": approval.status, "window": approval.freeze_name,
                 # 与等待接口的其他时间一样按 TIME_ZONE 的本地时间、带时区写出
                 "ends_at": timezone.localtime(approval.freeze_ends_at).isoformat() if approval.freeze_ends_at else None},
    )


def already_decided_message(approval: Approval) -> str:
    """“已由 X 于 T 审批”——给第二个、迟到的决定者的回答。"""
    from .models import Status  # 模型导入放进函数：错误类型被中间件与异常处理器早早导入

    when = format_time(approval.decided_at) if approval.decided_at else "-"
    if approval.status == Status.TIMEOUT:
        return _("审批 %(id)s 已于 %(time)s 超时，不能再操作。") % {"id": approval.public_id, "time": when}
    if approval.status == Status.REJECTED and approval.reason_code == "frozen":
        return _("审批 %(id)s 已于 %(time)s 因封版被拒绝（%(reason)s），不能再操作。") % {
            "id": approval.public_id, "time": when, "reason": approval.reason}
    if approval.status == Status.CANCELLED:
        return _("审批 %(id)s 已于 %(time)s 取消（%(reason)s），不能再操作。") % {
            "id": approval.public_id,
            "time": when,
            "reason": approval.reason or _("构建已结束"),
        }
    return _("审批 %(id)s 已由 %(who)s 于 %(time)s %(status)s。") % {
        "id": approval.public_id,
        "who": approval.decided_by_name or _("系统"),
        "time": when,
        "status": approval.get_status_display(),
    }


def already_decided_error(approval: Approval) -> AlreadyDecided:
    """第二个、迟到的决定得到的 409：消息与 details 都说清谁、何时、什么结果。"""
    return AlreadyDecided(
        already_decided_message(approval),
        details={"status": approval.status, "decided_by": approval.decided_by_name,
                 "decided_at": approval.decided_at.isoformat() if approval.decided_at else None},
    )
