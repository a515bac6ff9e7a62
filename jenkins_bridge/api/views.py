"""API 视图：每个操作一个 APIView，校验后调用 approvals.services / selectors（thin callers）。"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.environments import normalize_environment
from accounts.models import Approver
from approvals import selectors
from approvals.models import Approval, Channel, Status, Vote
from approvals.services import approval_create, approval_decide, approval_get, build_result_record

from ..models import ApiScope
from .authentication import BearerTokenAuthentication
from .errors import InvalidInput, PayloadTooLarge, json_bytes
from .longpoll import watcher
from .permissions import HasScope
from .serializers import (
    ApprovalDetailSerializer,
    ApprovalListFilterSerializer,
    ApprovalReplySerializer,
    ApproverSerializer,
    BuildResultInputSerializer,
    BuildResultReplySerializer,
    DecisionInputSerializer,
    DecisionReplySerializer,
    ErrorSerializer,
    StatusReplySerializer,
    WaitInputSerializer,
    approval_detail_data,
    approval_reply,
    canonical_input,
)


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """让 OpenAPI 文档知道我们的认证方式。"""

    target_class = "jenkins_bridge.api.authentication.BearerTokenAuthentication"
    name = "BearerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": _("manage.py create_api_token 生成的 token")}


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description=_("参数错误")),
    401: OpenApiResponse(ErrorSerializer, description=_("缺少或无效的 token")),
    403: OpenApiResponse(ErrorSerializer, description=_("token 权限范围不足，或审批人无权审批")),
    413: OpenApiResponse(ErrorSerializer, description=_("请求体太大")),
}

ERROR_EXAMPLE = OpenApiExample(
    _("错误（统一形状）"),
    value={"error": {"code": "already_decided", "message": "审批 7K3M9Q2A 已由 Bob 于 2026-01-01 10:00:00 已同意。",
                     "details": {"status": "approved", "decided_by": "Bob",
                                 "decided_at": "2026-01-01T02:00:00+00:00"}}},
    response_only=True,
    status_codes=["409"],
)

REPLY_EXAMPLE = {
    "id": "7K3M9Q2A", "status": "pending", "proceed": False, "project": "shop-backend",
    "environment": "production", "build_number": 128, "version": "v2.3.0", "required_approvals": 2,
    "approvals_received": 0, "created_at": "2026-01-01T10:00:00+08:00", "expires_at": "2026-01-01T10:30:00+08:00",
    "decided_at": None, "decided_by": None, "reason": "",
    "links": {"status": "https://approval.example.com/api/status/7K3M9Q2A",
              "logs": "https://approval.example.com/logs/7K3M9Q2A"},
}


class ApiView(APIView):
    """所有 API 的基类：Bearer token + 权限范围；先检查请求体大小（413），再认证。"""

    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [HasScope]
    required_scope = ApiScope.READ

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        try:
            request._request.body  # noqa: B018 - 读取即触发 DATA_UPLOAD_MAX_MEMORY_SIZE 检查
        except RequestDataTooBig:
            raise PayloadTooLarge() from None
        super().initial(request, *args, **kwargs)


# ---------------------------------------------------------------- 等待（J1/J2/A5）


@extend_schema(
    tags=["jenkins"],
    summary=_("申请（或查询）发布审批，可长轮询等待结果"),
    description=_(
        "流水线调用：没有 id 时按 (Jenkins, 任务, 构建号, input_id) 创建或找到审批（新建 201，已存在 200）；"
        "带 id 时查询已有审批。wait（0–60 秒）让回答一直等到审批有了结果或时间到。"
        "字段也接受 Jenkins 的写法：JOB_NAME、BUILD_NUMBER、BUILD_URL、BUILD_USER_ID、env 等。"
    ),
    parameters=[
        OpenApiParameter("project", OpenApiTypes.STR, description=_("项目名（或 JOB_NAME / job_name）")),
        OpenApiParameter("environment", OpenApiTypes.STR, description=_("环境（或 env），如 production / 生产")),
        OpenApiParameter("build_number", OpenApiTypes.INT, description=_("构建号（或 BUILD_NUMBER）")),
        OpenApiParameter("build_url", OpenApiTypes.STR, description=_("构建链接（或 BUILD_URL）")),
        OpenApiParameter("version", OpenApiTypes.STR),
        OpenApiParameter("description", OpenApiTypes.STR, description=_("发布说明，中文可")),
        OpenApiParameter("operation", OpenApiTypes.STR, description=_("操作类型，如 部署 / 回滚")),
        OpenApiParameter("requested_by", OpenApiTypes.STR, description=_("发起人（或 BUILD_USER_ID）")),
        OpenApiParameter("input_id", OpenApiTypes.STR, description=_("流水线随后等待的 input 步骤 id")),
        OpenApiParameter("callback_url", OpenApiTypes.STR, description=_("Webhook Step 的 hook.url")),
        OpenApiParameter("timeout_minutes", OpenApiTypes.INT),
        OpenApiParameter("wait", OpenApiTypes.FLOAT, description=_("最多等待秒数（0–60）")),
        OpenApiParameter("id", OpenApiTypes.STR, description=_("已有审批的编号（轮询）")),
        OpenApiParameter("jenkins", OpenApiTypes.STR, description=_("Jenkins 服务器名（默认服务器可省略）")),
    ],
    request={"application/json": WaitInputSerializer, "application/x-www-form-urlencoded": WaitInputSerializer},
    responses={200: ApprovalReplySerializer, 201: ApprovalReplySerializer, 404: ErrorSerializer, **ERRORS},
    examples=[
        OpenApiExample(
            _("input 方式申请（中文说明）"),
            value={"JOB_NAME": "shop-backend", "BUILD_NUMBER": "128", "env": "生产", "version": "v2.3.0",
                   "description": "修复支付回调；升级 Redis 客户端 🚀", "operation": "部署",
                   "BUILD_USER_ID": "dave", "BUILD_URL": "https://jenkins.example.com/job/shop-backend/128/",
                   "input_id": "Release"},
            request_only=True,
        ),
        OpenApiExample(_("轮询已有审批"), value={"id": "7K3M9Q2A", "wait": 30}, request_only=True),
        OpenApiExample(_("回答"), value=REPLY_EXAMPLE, response_only=True, status_codes=["200", "201"]),
    ],
)
class ApprovalWaitApi(ApiView):
    required_scope = ApiScope.JENKINS

    def get(self, request: Request) -> Response:
        return self._handle(request, canonical_input(request.query_params))

    def post(self, request: Request) -> Response:
        return self._handle(request, canonical_input(request.query_params, request.data))

    def _handle(self, request: Request, data: dict[str, Any]) -> Response:
        serializer = WaitInputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        created = False
        if values["id"]:
            approval = approval_get(values["id"])
        else:
            approval, created = approval_create(
                job_name=values["job_name"],
                project=values["project"],
                build_number=values["build_number"],
                environment=values["environment"],
                jenkins_server=values["jenkins"],
                input_id=values["input_id"],
                build_url=values["build_url"],
                callback_url=values["callback_url"],
                version=values["version"],
                description=values["description"],
                operation=values["operation"],
                requested_by=values["requested_by"],
                timeout_minutes=values["timeout_minutes"],
                channel=Channel.API,
            )
        response = Response(approval_reply(approval), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
        if values["wait"] > 0 and approval.status == Status.PENDING:
            # 交给异步外壳去等；同步视图本身不睡眠
            response.longpoll = (approval.pk, float(values["wait"]))
        return response


_wait_sync_view = ApprovalWaitApi.as_view()

SCOPE_FLAG = "approvalbot.longpoll"  # 与 api/asgi.py 一致
MARKER_HEADER = "X-Approvalbot-Longpoll"


def _reply_for(pk: int) -> dict[str, Any] | None:
    approval = Approval.objects.filter(pk=pk).prefetch_related("votes").first()
    return approval_reply(approval) if approval else None


def _wait_sync_in_pool(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
    """在共享的小线程池里跑同步部分，并像请求开始/结束那样管理本线程的数据库连接。

    Django 在 ASGI 下给每个请求一个自己的同步线程；上千个并发等待就是上千个线程、上千个数据库连接。
    放进有界线程池后，线程与连接数都有上限（连接在池线程里按 CONN_MAX_AGE 复用，并做健康检查）。
    """
    close_old_connections()
    try:
        return _wait_sync_view(request, *args, **kwargs)
    finally:
        close_old_connections()


async def approval_wait_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """异步外壳：认证、校验、创建仍由同步 DRF 视图完成；需要等待时在事件循环里挂起，不占线程。"""
    behind_wrapper = bool(getattr(request, "scope", {}).get(SCOPE_FLAG))
    if behind_wrapper:
        response = await sync_to_async(_wait_sync_in_pool, thread_sensitive=False)(request, *args, **kwargs)
    else:  # runserver / WSGI / 测试客户端：留在本请求的线程里（与其余视图共用同一个连接与事务）
        response = await sync_to_async(_wait_sync_view)(request, *args, **kwargs)
    longpoll = getattr(response, "longpoll", None)
    if not longpoll:
        return response
    pk, seconds = longpoll
    if behind_wrapper:
        # 在 ASGI 外层下：立即结束 Django 请求周期，由外层挂起等待（见 api/asgi.py）
        response = HttpResponse(json_bytes(response.data), status=response.status_code,
                                content_type="application/json")
        response[MARKER_HEADER] = f"{pk} {seconds}"
        return response
    reply = await watcher.wait(pk, seconds)
    if reply is None:  # 等到时间仍未决定：返回最新状态（票数可能变了）
        reply = await sync_to_async(_reply_for)(pk) or response.data
    return HttpResponse(json_bytes(reply), status=response.status_code, content_type="application/json")


# DRF/Spectacular 与 CSRF 需要的标记：文档由 ApprovalWaitApi 生成；token 认证的 API 不用 CSRF
approval_wait_view.csrf_exempt = True
approval_wait_view.cls = ApprovalWaitApi
approval_wait_view.initkwargs = {}


# ---------------------------------------------------------------- 状态与列表（A7/D10）


@extend_schema(tags=["read"], summary=_("审批总数与各状态计数"), responses={200: StatusReplySerializer, **ERRORS},
               examples=[OpenApiExample(_("统计"), value={"total": 42, "by_status": {"pending": 3, "approved": 30,
                                                                                    "rejected": 5, "timeout": 2,
                                                                                    "cancelled": 2},
                                                        "today": 4, "median_decision_seconds": 312.5},
                                        response_only=True)])
class ApprovalStatusApi(ApiView):
    required_scope = ApiScope.READ

    # /api/status 与 /api/status/<id> 否则会得到相同的 operationId
    @extend_schema(operation_id="status_totals")
    def get(self, request: Request) -> Response:
        return Response(selectors.approval_stats())


@extend_schema(tags=["read"], summary=_("一条审批的详情、投票与历史"),
               responses={200: ApprovalDetailSerializer, 404: ErrorSerializer, **ERRORS})
class ApprovalDetailApi(ApiView):
    required_scope = ApiScope.READ

    @extend_schema(operation_id="status_detail")
    def get(self, request: Request, public_id: str) -> Response:
        return Response(approval_detail_data(selectors.approval_detail(public_id)))


class ApprovalPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


@extend_schema(tags=["read"], summary=_("审批列表（分页、可过滤）"),
               parameters=[ApprovalListFilterSerializer,
                           OpenApiParameter("page", OpenApiTypes.INT), OpenApiParameter("page_size", OpenApiTypes.INT)],
               responses={200: ApprovalReplySerializer(many=True), 404: ErrorSerializer, **ERRORS})
class ApprovalListApi(ApiView):
    required_scope = ApiScope.READ
    pagination_class = ApprovalPagination

    def get(self, request: Request) -> Response:
        filters = ApprovalListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        values = dict(filters.validated_data)
        if values.get("environment"):
            values["environment"] = normalize_environment(values["environment"])
        queryset = selectors.approval_list(**values).prefetch_related("votes")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response([approval_reply(a) for a in page])


# ---------------------------------------------------------------- 决定（A6）


class _DecisionApi(ApiView):
    required_scope = ApiScope.APPROVE
    decision = Vote.Decision.APPROVE

    def post(self, request: Request, public_id: str) -> Response:
        approval = approval_get(public_id)
        serializer = DecisionInputSerializer(data=request.data if isinstance(request.data, dict) or hasattr(
            request.data, "getlist") else {})
        serializer.is_valid(raise_exception=True)
        username = serializer.validated_data["approver"].strip().lstrip("@")
        approver = Approver.objects.select_related("role").filter(username__iexact=username).first()
        if approver is None:
            raise InvalidInput(_("没有名为「%(name)s」的审批人。") % {"name": username[:150]}, code="unknown_approver")
        outcome = approval_decide(approval=approval, approver=approver, decision=self.decision,
                                  reason=serializer.validated_data["reason"], channel=Channel.API)
        fresh = Approval.objects.prefetch_related("votes").get(pk=outcome.approval.pk)
        return Response({**approval_reply(fresh), "final": outcome.final})


DECISION_EXAMPLES = [
    OpenApiExample(_("同意"), value={"approver": "bob", "reason": "已核对变更单"}, request_only=True),
    ERROR_EXAMPLE,
]


@extend_schema(tags=["approve"], summary=_("以指定审批人身份同意"), request=DecisionInputSerializer,
               responses={200: DecisionReplySerializer, 404: ErrorSerializer, 409: ErrorSerializer, **ERRORS},
               examples=DECISION_EXAMPLES)
class ApprovalApproveApi(_DecisionApi):
    decision = Vote.Decision.APPROVE


@extend_schema(tags=["approve"], summary=_("以指定审批人身份拒绝"), request=DecisionInputSerializer,
               responses={200: DecisionReplySerializer, 404: ErrorSerializer, 409: ErrorSerializer, **ERRORS},
               examples=[OpenApiExample(_("拒绝"), value={"approver": "bob", "reason": "数据库迁移未评审"},
                                        request_only=True), ERROR_EXAMPLE])
class ApprovalRejectApi(_DecisionApi):
    decision = Vote.Decision.REJECT


# ---------------------------------------------------------------- 用户（A8）


@extend_schema(tags=["read"], summary=_("审批人与角色（分页）"),
               parameters=[OpenApiParameter("page", OpenApiTypes.INT)],
               responses={200: ApproverSerializer(many=True), **ERRORS})
class UserListApi(ApiView):
    required_scope = ApiScope.READ

    def get(self, request: Request) -> Response:
        queryset = Approver.objects.select_related("role").order_by("username")
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(ApproverSerializer(page, many=True).data)


# ---------------------------------------------------------------- 构建结果（B1/B2）


@extend_schema(
    tags=["jenkins"], summary=_("回报构建结果"), request=BuildResultInputSerializer,
    responses={200: BuildResultReplySerializer, 201: BuildResultReplySerializer, 404: ErrorSerializer, **ERRORS},
    examples=[OpenApiExample(_("构建失败"), value={"JOB_NAME": "shop-backend", "BUILD_NUMBER": 128,
                                                 "result": "FAILURE", "duration": 183000, "id": "7K3M9Q2A"},
                             request_only=True)],
)
class BuildResultApi(ApiView):
    required_scope = ApiScope.JENKINS

    def post(self, request: Request) -> Response:
        serializer = BuildResultInputSerializer(data=canonical_input(request.query_params, request.data))
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        approval = approval_get(values["id"]) if values["id"] else None
        server = values["jenkins"] or (approval.jenkins_server if approval else None)
        record, created = build_result_record(
            job_name=approval.job_name if approval else values["job_name"],
            build_number=values["build_number"],
            result=values["result"],
            jenkins_server=server,
            build_url=values["build_url"],
            duration_ms=values["duration"],
            approval=approval,
        )
        linked = Approval.objects.filter(pk=record.approval_id).first() if record.approval_id else None
        return Response(
            {"project": record.project, "job_name": record.job_name, "build_number": record.build_number,
             "result": record.result, "duration": record.duration_ms,
             "approval": linked.public_id if linked else None, "approval_status": linked.status if linked else None,
             "created": created},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
