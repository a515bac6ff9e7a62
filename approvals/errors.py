"""领域错误：一个基类，带机器可读的 code、给人看的 message（已翻译）和 HTTP 状态。

API、Telegram、后台都把它原样转述给用户，不必各自再拼文案。
"""

from __future__ import annotations

from typing import Any


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
