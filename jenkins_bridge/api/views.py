"""API 视图：每个操作一个 APIView，校验后调用 approvals.services / selectors（thin callers）。"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.environments import normalize_environment
from accounts.models import Approver
from approvals import selectors
from approvals.analytics import approval_analytics, stats_filters
from approvals.builds import build_result_record
from approvals.errors import freeze_refused_error
from approvals.freeze import FROZEN
from approvals.models import Approval, Channel, Status, Vote
from approvals.selectors import approval_get
from approvals.services import approval_create, approval_decide

from ..models import ApiScope
from . import examples
from .authentication import BearerTokenAuthentication
from .errors import InvalidInput, PayloadTooLarge, json_bytes
from .fields import query_parameters
from .longpoll import MARKER_HEADER, SCOPE_FLAG, watcher
from .pagination import ApiPagination
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
    WaitInputSerializer,
    approval_detail_data,
    approval_reply,
    canonical_input,
    single_values,
)
from .status_serializers import StatusAnalyticsSerializer, StatusFilterSerializer, StatusReplySerializer


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """让 OpenAPI 文档知道我们的认证方式（含签名 token 的签名规则）。"""

    target_class = "jenkins_bridge.api.authentication.BearerTokenAuthentication"
    name = "BearerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer",
                "description": format_lazy("{}。{}", _("manage.py create_api_token 生成的 token"), SIGNING_HELP)}


SIGNING_HELP = _(
    "设置了签名密钥的 token，每个请求还要带 X-Approval-Timestamp（Unix 秒，与服务器相差不超过 5 分钟）、"
    "X-Approval-Nonce（每个请求新生成，16–64 个字母、数字、- 或 _，不能重复使用）与 "
    "X-Approval-Signature（sha256= 后接十六进制的 HMAC-SHA256）。签名的原文是时间戳、nonce、方法（大写）、路径、"
    "规范查询串各占一行（每行以换行符结尾），再接原始请求体；规范查询串是把参数按名、值排序，"
    "名与值按 UTF-8 百分号编码（只有 A-Z a-z 0-9 - _ . ~ 不编码），写成 名=值 用 & 连接。"
    "签名不对是 401：signature_required、invalid_signature、signature_expired、replayed。"
)

ERROR_TEXT = {
    400: _("参数错误"),
    401: _("缺少或无效的 token"),
    403: _("token 权限范围不足，或审批人无权审批"),
    404: _("找不到：审批编号不存在，或页码超出范围"),
    409: _("审批已有结果，不能再决定"),
    413: _("请求体太大"),
    415: _("不支持的请求体格式（Content-Type）"),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """这个操作可能回答的错误：都是统一的错误形状。"""
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_TEXT[code]) for code in codes}


class ApiAutoSchema(AutoSchema):
    """回答写成 OpenApiResponse（为了给它说明）后，spectacular 判断“是不是列表”看的是这层包装：
    列表接口会丢掉分页参数，operationId 也从 *_list 变成 *_retrieve。先拆开包装再判断。"""

    def _is_list_view(self, serializer: Any = None) -> bool:
        if serializer is None:
            serializer = self.get_response_serializers()
        if isinstance(serializer, dict) and serializer:
            serializer = {str(code): item for code, item in serializer.items()}
            serializer = serializer[min(serializer)]  # 与 spectacular 一样取最小的状态码
        if isinstance(serializer, OpenApiResponse):
            serializer = serializer.response
        return super()._is_list_view(serializer)


class ApiView(APIView):
    """所有 API 的基类：Bearer token + 权限范围；先检查请求体大小（413），再认证。"""

    schema = ApiAutoSchema()
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


WAIT_DESCRIPTION = _(
    "流水线调用：没有 id 时按 (Jenkins, 任务, 构建号, input_id) 创建或找到审批（新建 201，已存在 200）；"
    "带 id 时查询已有审批。wait（0–60 秒）让回答一直等到审批有了结果或时间到。"
    "字段也接受 Jenkins 的写法：JOB_NAME、BUILD_NUMBER、BUILD_URL、BUILD_USER_ID、env 等。"
)
FROZEN_RESPONSE = OpenApiResponse(ErrorSerializer, description=_(
    "封版期间：申请已记录并立即拒绝（frozen），details 带 id、status（rejected）、window（封版名称）、"
    "ends_at（封版结束时间）；带 id 查询这样的审批也是这个回答。要在封版期间发布，请以紧急发布申请"
    "（emergency=true 并写明 emergency_reason）。"))
WAIT_SCHEMA = {
    "tags": ["jenkins"],
    "summary": _("申请（或查询）发布审批，可长轮询等待结果"),
    "responses": {
        200: OpenApiResponse(ApprovalReplySerializer, description=_(
            "已有的审批（带 id 查询，或这次构建已申请过）：它的当前状态；带 wait 时是等待结束时的状态。")),
        201: OpenApiResponse(ApprovalReplySerializer, description=_(
            "新建了审批：它的当前状态；带 wait 时是等待结束时的状态。")),
        **errors(400, 401, 403, 404, 413),
        409: FROZEN_RESPONSE,
    },
}


class ApprovalWaitApi(ApiView):
    required_scope = ApiScope.JENKINS

    @extend_schema(
        **WAIT_SCHEMA,
        description=format_lazy("{}{}", WAIT_DESCRIPTION, _(
            "GET 的字段都写在查询串里；没有 id 时必须有 project（或 job_name）与 build_number。")),
        parameters=query_parameters(WaitInputSerializer()),
        examples=examples.WAIT_REPLIES,
    )
    def get(self, request: Request) -> Response:
        return self._handle(request, canonical_input(request.query_params))

    @extend_schema(
        **{**WAIT_SCHEMA, "responses": {**WAIT_SCHEMA["responses"], **errors(415)}},
        description=format_lazy("{}{}", WAIT_DESCRIPTION, _(
            "POST 的字段写在请求体里（JSON 对象或表单）；查询串里的同名字段也读取，请求体里的优先。")),
        request=WaitInputSerializer,
        examples=[*examples.WAIT_REQUESTS, *examples.WAIT_REPLIES],
    )
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
                emergency=values["emergency"],
                emergency_reason=values["emergency_reason"],
            )
        if approval.reason_code == FROZEN:
            # 审批已记录并拒绝（已提交）；流水线得到一个明确的错误，而不是一条“已拒绝”的普通回答
            raise freeze_refused_error(approval)
        response = Response(approval_reply(approval), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
        if values["wait"] > 0 and approval.status == Status.PENDING:
            # 交给异步外壳去等；同步视图本身不睡眠
            response.longpoll = (approval.pk, float(values["wait"]))
        return response


_wait_sync_view = ApprovalWaitApi.as_view()



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


STATUS_FILTERS = StatusFilterSerializer()


@extend_schema(tags=["read"], summary=_("审批总数、各状态计数与审批分析"),
               description=_("total、by_status、today、median_decision_seconds：全部历史的各状态审批数、今天新建的"
                             "审批数、从申请到决定所用时间的中位数（秒），不受查询参数影响。analytics：截至 until 的 "
                             "days 天里新建的审批（可按项目、环境过滤）的决定耗时（中位数与 P90，按项目、按审批人）、"
                             "每天按结果的数量、每周的超时与封版拒绝、决定前的提醒次数，以及此刻待审批已等待的时长。"
                             "参数格式不对、为空或给了多次是 400 validation_error。"),
               parameters=query_parameters(STATUS_FILTERS),
               responses={200: OpenApiResponse(StatusReplySerializer, description=_("统计数字与所选范围的审批分析。")),
                          **errors(400, 401, 403, 413)},
               examples=[examples.STATUS_REPLY])
class ApprovalStatusApi(ApiView):
    required_scope = ApiScope.READ

    # /api/status 与 /api/status/<id> 否则会得到相同的 operationId
    @extend_schema(operation_id="status_totals")
    def get(self, request: Request) -> Response:
        filters = StatusFilterSerializer(data=single_values(request.query_params, STATUS_FILTERS.fields))
        filters.is_valid(raise_exception=True)
        analytics = approval_analytics(stats_filters(**filters.validated_data))
        return Response({**selectors.approval_stats(), "analytics": StatusAnalyticsSerializer(analytics).data})


@extend_schema(tags=["read"], summary=_("一条审批的详情、投票与历史"),
               description=_("按编号查询一条审批：等待接口回答的字段，加上构建信息、Jenkins 操作的状态、每一票与完整历史。"
                             "编号不存在是 404。"),
               responses={200: OpenApiResponse(ApprovalDetailSerializer, description=_(
                   "这条审批的详情：当前状态、构建信息、Jenkins 操作、每一票与完整历史（按时间先后）。")),
                   **errors(401, 403, 404, 413)},
               examples=[examples.DETAIL_REPLY])
class ApprovalDetailApi(ApiView):
    required_scope = ApiScope.READ

    @extend_schema(operation_id="status_detail")
    def get(self, request: Request, public_id: str) -> Response:
        return Response(approval_detail_data(selectors.approval_detail(public_id)))


class ApprovalListPagination(ApiPagination):
    example_path = "/api/approvals"


class UserListPagination(ApiPagination):
    example_path = "/api/users"


PAGING_HELP = _("page 从 1 开始，超出最后一页是 404；page、page_size 不是正整数（或给了多次）是 400 invalid_page。")
LIST_FILTERS = ApprovalListFilterSerializer()


@extend_schema(tags=["read"], summary=_("审批列表（分页、可过滤）"),
               description=format_lazy("{}{}", _("按状态、项目、环境、创建时间与关键词过滤审批，分页返回。"
                                                 "过滤参数给了就不能为空，每个只能给一次。"), PAGING_HELP),
               parameters=query_parameters(LIST_FILTERS),
               responses={200: OpenApiResponse(ApprovalReplySerializer(many=True), description=_(
                   "一页审批（按创建时间从新到旧）：count 是符合条件的总数，next、previous 是前后页的链接（没有时为 null）。")),
                   **errors(400, 401, 403, 404, 413)},
               examples=[examples.LIST_REPLY])
class ApprovalListApi(ApiView):
    required_scope = ApiScope.READ
    pagination_class = ApprovalListPagination

    def get(self, request: Request) -> Response:
        filters = ApprovalListFilterSerializer(data=single_values(request.query_params, LIST_FILTERS.fields))
        filters.is_valid(raise_exception=True)
        values = dict(filters.validated_data)
        if values.get("environment"):
            values["environment"] = normalize_environment(values["environment"])
        queryset = selectors.approval_list(**values).prefetch_related("votes")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response([approval_reply(a) for a in page])


# ---------------------------------------------------------------- 决定（A6）


DECISION_FIELDS = tuple(DecisionInputSerializer().fields)


class _DecisionApi(ApiView):
    required_scope = ApiScope.APPROVE
    decision = Vote.Decision.APPROVE

    def post(self, request: Request, public_id: str) -> Response:
        approval = approval_get(public_id)
        data = request.data
        if hasattr(data, "getlist"):
            data = single_values(data, DECISION_FIELDS)
        serializer = DecisionInputSerializer(data=data if isinstance(data, dict) else {})
        serializer.is_valid(raise_exception=True)
        username = serializer.validated_data["approver"].strip().lstrip("@")
        approver = Approver.objects.select_related("role").filter(username__iexact=username).first()
        if approver is None:
            raise InvalidInput(_("没有名为「%(name)s」的审批人。") % {"name": username[:150]}, code="unknown_approver")
        outcome = approval_decide(approval=approval, approver=approver, decision=self.decision,
                                  reason=serializer.validated_data["reason"], channel=Channel.API)
        fresh = Approval.objects.prefetch_related("votes").get(pk=outcome.approval.pk)
        return Response({**approval_reply(fresh), "final": outcome.final})


DECISION_HELP = _(
    "需要 approve 权限范围的 token。审批人不存在是 400（unknown_approver）；不是这个项目的审批人、角色不能审批、"
    "发起人审批自己的构建是 403；审批已有结果是 409（already_decided，说明由谁在何时决定）；编号不存在是 404。"
)
DECISION_RESPONSES = {
    200: OpenApiResponse(DecisionReplySerializer, description=_(
        "票已记下：审批此刻的状态；final 为 true 表示这一票让审批有了结果（通过或拒绝）。")),
    **errors(400, 401, 403, 404, 409, 413, 415),
}


@extend_schema(tags=["approve"], summary=_("以指定审批人身份同意"), request=DecisionInputSerializer,
               description=format_lazy("{}{}", _("以 approver 指定的审批人身份投同意票；票数够了审批即通过。"),
                                       DECISION_HELP),
               responses=DECISION_RESPONSES,
               examples=examples.APPROVE)
class ApprovalApproveApi(_DecisionApi):
    decision = Vote.Decision.APPROVE


@extend_schema(tags=["approve"], summary=_("以指定审批人身份拒绝"), request=DecisionInputSerializer,
               description=format_lazy("{}{}", _("以 approver 指定的审批人身份拒绝；一票拒绝审批即结束。"),
                                       DECISION_HELP),
               responses=DECISION_RESPONSES,
               examples=examples.REJECT)
class ApprovalRejectApi(_DecisionApi):
    decision = Vote.Decision.REJECT


# ---------------------------------------------------------------- 用户（A8）


@extend_schema(tags=["read"], summary=_("审批人与角色（分页）"),
               description=format_lazy("{}{}", _("所有审批人（按用户名排序）与各自的角色、负责的项目和环境。"),
                                       PAGING_HELP),
               responses={200: OpenApiResponse(ApproverSerializer(many=True), description=_(
                   "一页审批人：count 是审批人总数，next、previous 是前后页的链接（没有时为 null）。")),
                   **errors(400, 401, 403, 404, 413)},
               examples=[examples.USERS_REPLY])
class UserListApi(ApiView):
    required_scope = ApiScope.READ
    pagination_class = UserListPagination

    def get(self, request: Request) -> Response:
        queryset = Approver.objects.select_related("role").order_by("username")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(ApproverSerializer(page, many=True).data)


# ---------------------------------------------------------------- 构建结果（B1/B2）


@extend_schema(
    tags=["jenkins"], summary=_("回报构建结果"), request=BuildResultInputSerializer,
    description=_("构建结束时调用：记下结果（第一次 201，同一构建再次回报 200），并关联到这次构建的审批；"
                  "审批还在等待时随之取消。带 id 时按编号关联，编号不存在是 404。"
                  "字段写在请求体里；查询串里的同名字段也读取，请求体里的优先。"),
    responses={
        200: OpenApiResponse(BuildResultReplySerializer, description=_(
            "这次构建已回报过：结果已更新，不再重复通知。")),
        201: OpenApiResponse(BuildResultReplySerializer, description=_(
            "第一次回报这次构建的结果：已记下；approval、approval_status 是关联的审批（没有时为 null）。")),
        **errors(400, 401, 403, 404, 413, 415),
    },
    examples=examples.BUILD_RESULT,
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
