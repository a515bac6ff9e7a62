"""列表接口的分页：page、page_size 必须是正整数，否则 400 invalid_page（DRF 默认把 page=null 当 404、
把不合法的 page_size 悄悄换成默认值，文档里都没有）。页码超出范围仍是 404，文档里写明。"""

from __future__ import annotations

import re
from typing import Any

from django.core.paginator import Paginator
from django.utils.translation import gettext as _
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from .errors import InvalidInput
from .examples import BASE_URL as EXAMPLE_BASE_URL

_POSITIVE = re.compile(r"[0-9]{1,18}")
MAX_PAGE = 2_147_483_647  # 文档写明上限：更大的数不是“超出最后一页”（404），而是不合法（400）


class ApiPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    last_page_strings = ()  # 不认 page=last：文档只说整数
    # 文档示例里翻页链接的路径（列表视图用子类给出）。示例是 page_size=1 时的第一页：与只列一条的 results 对得上
    example_path = "/api/approvals"

    def _positive(self, request: Request, name: str, maximum: int) -> int | None:
        values = request.query_params.getlist(name)
        if not values:
            return None
        value = values[0] if len(values) == 1 else values
        if isinstance(value, str) and _POSITIVE.fullmatch(value) and 1 <= int(value) <= maximum:
            return int(value)
        if name == self.page_query_param:
            message = _("页码（page）必须是 1–%(max)s 的整数，只能给一次。") % {"max": maximum}
        else:
            message = _("每页条数（page_size）必须是 1–%(max)s 的整数，只能给一次。") % {"max": maximum}
        raise InvalidInput(message, code="invalid_page", details={name: value})

    def get_page_size(self, request: Request) -> int:
        return self._positive(request, self.page_size_query_param, self.max_page_size) or self.page_size

    def get_page_number(self, request: Request, paginator: Paginator) -> int:
        return self._positive(request, self.page_query_param, MAX_PAGE) or 1

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paged = super().get_paginated_response_schema(schema)
        properties = paged["properties"]
        properties["count"]["example"] = 2
        properties["next"]["example"] = f"{EXAMPLE_BASE_URL}{self.example_path}?page=2&page_size=1"
        properties["previous"]["example"] = None
        return paged

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": self.page_query_param, "required": False, "in": "query",
             "description": _("页码，从 1 开始；超出最后一页是 404"),
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
            {"name": self.page_size_query_param, "required": False, "in": "query",
             "description": _("每页条数（默认 %(default)s）") % {"default": self.page_size},
             "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size}},
        ]
