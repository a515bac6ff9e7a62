"""一种错误形状：{"error": {"code", "message", "details"}}，API 的每一种失败都用它（A3）。

DRF 视图里的异常由 api_exception_handler 转换；Django 自己在 /api/ 下产生的 404/500
（路由不存在、中间件或视图外的崩溃）由 api_error_middleware 转换。
Host 头不在 ALLOWED_HOSTS 里的请求（Jenkins 用内网地址访问时最常见）也在这里回答：API 是 disallowed_host，
网页是一页说明；日志里写明要改 DJANGO_ALLOWED_HOSTS，DEBUG 时回答里也写明。
日志是给运维看的：一律用配置的语言（LANGUAGE_CODE），不随发请求的浏览器变。
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig, TooManyFieldsSent
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import exceptions, status
from rest_framework.response import Response

from approvals.errors import ApprovalError

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = gettext_lazy("请求体太大。")
    default_code = "payload_too_large"


class InsufficientScope(exceptions.PermissionDenied):
    default_detail = gettext_lazy("该 token 没有此操作所需的权限范围。")
    default_code = "insufficient_scope"


class InvalidInput(exceptions.APIException):
    """单个业务级输入错误（带自己的 code），例如回调地址不在允许范围。"""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, message: str, *, code: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, code)
        self.error_code = code
        self.details = details or {}


def error_payload(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": str(message), "details": details or {}}}


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for value in detail.values():
            return _first_message(value)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF 的异常处理入口（settings.REST_FRAMEWORK["EXCEPTION_HANDLER"]）。"""
    headers: dict[str, str] = {}
    if isinstance(exc, ApprovalError):
        return Response(error_payload(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, (RequestDataTooBig,)):
        exc = PayloadTooLarge()
    elif isinstance(exc, TooManyFieldsSent):
        exc = exceptions.ParseError(_("表单字段太多。"))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ParseError) and str(exc.detail).startswith("JSON parse error"):
        # DRF 的这句没有中文翻译；给出中文说明，同时保留解析器指出的位置
        detail = str(exc.detail).split(" - ", 1)[-1]
        return Response(error_payload("parse_error", _("请求体不是合法的 JSON：%(detail)s") % {"detail": detail}),
                        status=400)
    if isinstance(exc, InvalidInput):
        return Response(error_payload(exc.error_code, str(exc.detail), exc.details), status=exc.status_code)
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        message = _("请求参数不正确：%(reason)s") % {"reason": _first_message(fields)}
        return Response(error_payload("validation_error", message, {"fields": fields}), status=400)
    if isinstance(exc, exceptions.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        return Response(error_payload(code, _first_message(exc.detail), getattr(exc, "details", None)),
                        status=exc.status_code, headers=headers)
    # 未预料的错误：记录完整堆栈，对外只给统一的 500，不泄露内部细节
    view = context.get("view")
    logger.error("API 未处理的异常（%s）", view.__class__.__name__ if view else "-", exc_info=exc)
    return Response(error_payload("server_error", _("服务器内部错误，请稍后重试。")), status=500)


_DJANGO_ERRORS = {
    400: ("bad_request", gettext_lazy("请求不正确。")),
    403: ("permission_denied", gettext_lazy("没有权限。")),
    404: ("not_found", gettext_lazy("接口不存在。")),
    405: ("method_not_allowed", gettext_lazy("不支持该请求方法。")),
    413: ("payload_too_large", gettext_lazy("请求体太大。")),
    500: ("server_error", gettext_lazy("服务器内部错误，请稍后重试。")),
}


HOST_SETTING = "DJANGO_ALLOWED_HOSTS"


def _disallowed_host(request: HttpRequest) -> str | None:
    """Host 头不被接受时返回它（截短），否则 None。Django 自己要到 CommonMiddleware 才检查，那时只剩一句 400。"""
    try:
        request.get_host()
    except DisallowedHost:
        raw = request._get_raw_host() if hasattr(request, "_get_raw_host") else request.META.get("HTTP_HOST", "")
        return str(raw)[:200]
    return None


def disallowed_host_response(request: HttpRequest, host: str) -> HttpResponse:
    """400：API 是统一的错误形状（code=disallowed_host），网页是一页说明。DEBUG 时写明改哪个设置。"""
    logger.warning("拒绝了 Host 头为 %r 的请求（%s %s）：这个主机名不在 %s 里。Jenkins 或反向代理用这个地址访问时，"
                   "把它加进 %s（逗号分隔）并重启 web 进程", host, request.method, request.path[:200],
                   HOST_SETTING, HOST_SETTING)
    # LocaleMiddleware 还没运行：回答用访问者的语言，日志（上面）用配置的语言
    with translation.override(translation.get_language_from_request(request)):
        if settings.DEBUG:
            message = _("主机名「%(host)s」不在 %(setting)s 里：把它加进去（逗号分隔，例如 "
                        "%(setting)s=localhost,127.0.0.1,%(host)s）后重启 web 进程。") % {
                "host": host, "setting": HOST_SETTING}
            details = {"host": host, "setting": HOST_SETTING}
        else:
            message = _("请求的主机名不在本服务允许的列表里。请服务管理员查看服务器日志。")
            details = {}
        if request.path.startswith(API_PREFIX):
            return JsonResponse(error_payload("disallowed_host", message, details), status=400,
                                json_dumps_params={"ensure_ascii": False})
        html = render_to_string("errors/disallowed_host.html", {"message": message,
                                                                "language": translation.get_language()})
    return HttpResponse(html, status=400, content_type="text/html; charset=utf-8")


def _convert(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if not request.path.startswith(API_PREFIX) or response.status_code < 400:
        return response
    if (response.get("Content-Type") or "").startswith("application/json"):
        return response
    code, message = _DJANGO_ERRORS.get(response.status_code, ("error", gettext_lazy("请求失败。")))
    converted = JsonResponse(error_payload(code, str(message)), status=response.status_code,
                             json_dumps_params={"ensure_ascii": False})
    for header in ("Allow", "WWW-Authenticate", "Retry-After"):
        if response.has_header(header):
            converted[header] = response[header]
    return converted


def api_error_middleware(get_response):
    """把 /api/ 下 Django 生成的 HTML 错误页（404 路由不存在、500 崩溃）换成统一的 JSON 错误形状；
    不被接受的 Host 头在进入后面的中间件之前就回答（API 与网页都说清原因）。"""
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            host = _disallowed_host(request)
            if host is not None:
                return disallowed_host_response(request, host)
            return _convert(request, await get_response(request))

        markcoroutinefunction(middleware)
    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            host = _disallowed_host(request)
            if host is not None:
                return disallowed_host_response(request, host)
            return _convert(request, get_response(request))

    return middleware


api_error_middleware.sync_capable = True
api_error_middleware.async_capable = True


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
