"""权限范围：jenkins（申请审批、回报结果）、approve（同意/拒绝）、read（状态、列表、用户）。"""

from __future__ import annotations

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from .errors import InsufficientScope


class HasScope(BasePermission):
    """视图用 required_scope 声明需要的范围；未认证返回 False，DRF 据此回 401。"""

    def has_permission(self, request: Request, view: APIView) -> bool:
        principal = request.user
        if principal is None or not getattr(principal, "is_authenticated", False):
            return False
        scope = getattr(view, "required_scope", None)
        if scope and not principal.has_scope(scope):
            raise InsufficientScope(detail=None)
        return True
