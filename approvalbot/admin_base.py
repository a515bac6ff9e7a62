"""各 app 的后台共用的基类。"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdminMixin:
    """只读：能看、能搜、能导出，不能增改（历史只追加，状态只经服务层或进程自己变化）。

    allow_delete = True 的（已处理 update、心跳之类的簿记）管理员可以删掉，别的连删也不行。
    """

    allow_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self.allow_delete and super().has_delete_permission(request, obj)  # type: ignore[misc]


class BookkeepingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """进程自己写的簿记（已处理 update、心跳、租约…）：只读，管理员可以清掉。"""

    allow_delete = True
