"""/health 与 /metrics：不需要登录（负载均衡与 Prometheus 探测用），失败明细只给已登录的后台用户。"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .health import health_report

# /health 不需要登录（负载均衡探测用）：失败明细（审批编号、群 ID、错误原文、备份文件名）只给已登录的后台用户看
DETAIL_KEYS = ("recent_failures", "failed_chats", "examples", "oldest", "oldest_overdue", "last_error", "file")


def _public_summary(component: dict[str, Any]) -> dict[str, Any]:
    summary = {k: v for k, v in component.items() if k not in DETAIL_KEYS}
    if "failed_chats" in component:
        summary["failed_chats_count"] = len(component["failed_chats"])
    return summary


@never_cache
@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    report = health_report()
    if not (request.user.is_authenticated and request.user.is_staff):
        report["components"] = {name: _public_summary(c) for name, c in report["components"].items()}
    return JsonResponse(report, status=200 if report["status"] != "error" else 503,
                        json_dumps_params={"ensure_ascii": False})


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST

    from .metrics import exposition

    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
