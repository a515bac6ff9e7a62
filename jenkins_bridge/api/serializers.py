"""API 的输入校验与输出形状。输入在这里校验干净，再交给 approvals.services；这里不放业务逻辑。"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import serializers

from approvals.links import log_url, status_url
from approvals.models import Approval, BuildResultValue, Status
from approvals.services import MAX_TIMEOUT_MINUTES

from ..models import JenkinsServer

# 字段的各种写法（J3）：规范名在前；Jenkins 的环境变量名、下划线/大写变体都认
WAIT_ALIASES: dict[str, tuple[str, ...]] = {
    "project": ("project", "PROJECT", "project_name", "PROJECT_NAME"),
    "job_name": ("job_name", "JOB_NAME", "job", "JOB", "jobName"),
    "environment": ("environment", "ENVIRONMENT", "env", "ENV", "deploy_env", "DEPLOY_ENV"),
    "build_number": ("build_number", "BUILD_NUMBER", "build", "buildNumber", "BUILD_ID", "build_id"),
    "build_url": ("build_url", "BUILD_URL", "buildUrl"),
    "version": ("version", "VERSION", "app_version", "APP_VERSION"),
    "description": ("description", "DESCRIPTION", "desc", "changelog", "CHANGELOG"),
    "operation": ("operation", "OPERATION", "op"),
    "requested_by": ("requested_by", "BUILD_USER_ID", "build_user_id", "BUILD_USER", "requester", "requestedBy"),
    "input_id": ("input_id", "INPUT_ID", "inputId"),
    "callback_url": ("callback_url", "CALLBACK_URL", "callbackUrl", "webhook_url", "hook_url"),
    "timeout_minutes": ("timeout_minutes", "TIMEOUT_MINUTES", "timeout"),
    "wait": ("wait", "WAIT"),
    "id": ("id", "approval_id", "APPROVAL_ID"),
    "jenkins": ("jenkins", "JENKINS", "jenkins_server"),
    "result": ("result", "RESULT", "BUILD_RESULT", "build_result", "currentBuild.result"),
    "duration": ("duration", "DURATION", "duration_ms"),
}


def _value(source: Any, key: str) -> Any:
    if hasattr(source, "getlist"):
        values = source.getlist(key)
        return values[-1] if values else None
    return source.get(key)


def canonical_input(*sources: Any) -> dict[str, Any]:
    """把查询串与请求体（JSON 或表单）合并成规范字段名；后面的来源覆盖前面的。"""
    data: dict[str, Any] = {}
    for source in sources:
        if source is None:
            continue
        if not isinstance(source, Mapping) and not hasattr(source, "getlist"):
            raise serializers.ValidationError({"non_field_errors": [_("请求体必须是 JSON 对象或表单。")]})
        for canonical, aliases in WAIT_ALIASES.items():
            for alias in aliases:
                if alias in source:
                    value = _value(source, alias)
                    if value is not None:
                        data[canonical] = value
                        break
    return data


def validate_http_url(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise serializers.ValidationError(_("必须是 http(s) 地址。"))
    return value


def callback_url_allowed(url: str, servers: list[JenkinsServer]) -> bool:
    """回调地址必须落在某个已配置 Jenkins 的地址之下：防止把服务变成任意内网请求的跳板（SSRF）。"""
    try:
        target = urlsplit(url)
        target_port = target.port
    except ValueError:
        return False
    if target.scheme not in ("http", "https") or not target.hostname or target.username or target.password:
        return False
    raw_path = unquote(target.path or "/")
    if any(segment in ("..", ".") for segment in raw_path.split("/")) or "\\" in raw_path:
        return False
    default_port = {"http": 80, "https": 443}
    for server in servers:
        if not server.base_url:
            continue
        base = urlsplit(server.base_url)
        same_origin = (
            base.scheme == target.scheme
            and (base.hostname or "").lower() == target.hostname.lower()
            and (base.port or default_port[base.scheme]) == (target_port or default_port[target.scheme])
        )
        base_path = base.path if base.path.endswith("/") else base.path + "/"
        # 必须在基地址“之下”，而不是基地址本身
        if same_origin and raw_path.startswith(base_path) and raw_path != base_path:
            return True
    return False


class JenkinsServerField(serializers.CharField):
    """Jenkins 服务器名 → JenkinsServer；未知的名字是 400。

    长度在转换前检查：CharField 的 max_length 校验器跑在转换后的值（JenkinsServer）上，会变成 500。
    """

    default_error_messages = {"unknown": gettext_lazy("未知的 Jenkins 服务器「{name}」。")}
    NAME_MAX_LENGTH = 64  # JenkinsServer.name

    def to_internal_value(self, data: Any) -> JenkinsServer | None:
        name = super().to_internal_value(data)
        if not name:
            return None
        if len(name) > self.NAME_MAX_LENGTH:
            self.fail("max_length", max_length=self.NAME_MAX_LENGTH)
        server = JenkinsServer.objects.filter(name=name, is_active=True).first()
        if server is None:
            self.fail("unknown", name=name[:64])
        return server


class WaitInputSerializer(serializers.Serializer):
    project = serializers.CharField(required=False, allow_blank=True, max_length=200)
    job_name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    # 长度上限与 approvals.models.Approval 的列一致：超长是 400，而不是 MySQL 上的 500（DataError）
    environment = serializers.CharField(required=False, allow_blank=True, max_length=32, default="")
    build_number = serializers.IntegerField(required=False, min_value=0, max_value=2_147_483_647)
    build_url = serializers.CharField(required=False, allow_blank=True, max_length=500, default="",
                                      validators=[validate_http_url])
    version = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    description = serializers.CharField(required=False, allow_blank=True, max_length=10000, default="",
                                        trim_whitespace=False)
    operation = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    requested_by = serializers.CharField(required=False, allow_blank=True, max_length=150, default="")
    input_id = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    callback_url = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")
    timeout_minutes = serializers.IntegerField(required=False, min_value=1, max_value=MAX_TIMEOUT_MINUTES,
                                               allow_null=True, default=None)
    wait = serializers.FloatField(required=False, min_value=0, max_value=60, default=0)
    id = serializers.CharField(required=False, allow_blank=True, max_length=32, default="")
    jenkins = JenkinsServerField(required=False, allow_blank=True, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("id"):
            return attrs
        errors: dict[str, list[str]] = {}
        if not (attrs.get("project") or attrs.get("job_name")):
            errors["project"] = [_("缺少项目/任务名（project 或 JOB_NAME）。")]
        if attrs.get("build_number") is None:
            errors["build_number"] = [_("缺少构建号（build_number 或 BUILD_NUMBER）。")]
        callback = attrs.get("callback_url")
        if callback:
            # 回调只发往这条审批所属的那台 Jenkins（它的回调认证头也只该发给它）；
            # 没指定时就是默认服务器——全新安装时它那一行此刻才建立，所以先解析再检查
            server = attrs.get("jenkins")
            if not server:
                from approvals.services import jenkins_server_default

                server = jenkins_server_default()
            if not callback_url_allowed(callback, [server]):
                errors["callback_url"] = [_("回调地址必须位于已配置的 Jenkins 地址之下。")]
        if errors:
            raise serializers.ValidationError(errors)
        attrs["job_name"] = attrs.get("job_name") or attrs["project"]
        attrs["project"] = attrs.get("project") or attrs["job_name"]
        return attrs


class LinksSerializer(serializers.Serializer):
    status = serializers.CharField()
    logs = serializers.CharField()


class ApprovalReplySerializer(serializers.Serializer):
    """等待接口的回答（契约字段，见 DESIGN “HTTP API”）。只用于文档；实际由 approval_reply() 生成。"""

    id = serializers.CharField()
    status = serializers.ChoiceField(choices=Status.choices)
    proceed = serializers.BooleanField(help_text=gettext_lazy("true 表示已同意，流水线可以继续"))
    project = serializers.CharField()
    environment = serializers.CharField()
    build_number = serializers.IntegerField()
    version = serializers.CharField()
    required_approvals = serializers.IntegerField()
    approvals_received = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decided_by = serializers.CharField(allow_null=True)
    reason = serializers.CharField()
    links = LinksSerializer()


def _iso(value: datetime | None) -> str | None:
    return timezone.localtime(value).isoformat() if value else None


def approval_reply(approval: Approval) -> dict[str, Any]:
    """等待接口与决定接口共用的回答体；长轮询的观察线程也直接用它，唤醒时无需再查库。"""
    return {
        "id": approval.public_id,
        "status": approval.status,
        "proceed": approval.status == Status.APPROVED,
        "project": approval.project,
        "environment": approval.environment,
        "build_number": approval.build_number,
        "version": approval.version,
        "required_approvals": approval.required_approvals,
        "approvals_received": approval.approvals_received,
        "created_at": _iso(approval.created_at),
        "expires_at": _iso(approval.expires_at),
        "decided_at": _iso(approval.decided_at),
        "decided_by": approval.decided_by_name or None,
        "reason": approval.reason,
        # 日志链接带签名（X5）：流水线日志里打印出来，点开即可看，不必登录
        "links": {"status": status_url(approval), "logs": log_url(approval)},
    }


class VoteSerializer(serializers.Serializer):
    approver = serializers.CharField(source="approver.username")
    approver_name = serializers.CharField(source="approver.label")
    decision = serializers.CharField()
    reason = serializers.CharField()
    channel = serializers.CharField()
    created_at = serializers.DateTimeField()


class EventSerializer(serializers.Serializer):
    kind = serializers.CharField()
    actor = serializers.CharField(source="actor_name")
    channel = serializers.CharField()
    details = serializers.JSONField()
    created_at = serializers.DateTimeField()


class JenkinsActionSerializer(serializers.Serializer):
    server = serializers.CharField(source="jenkins_server.name")
    resume_mode = serializers.CharField()
    state = serializers.CharField(source="jenkins_action_state")
    attempts = serializers.IntegerField(source="jenkins_action_attempts")
    error = serializers.CharField(source="jenkins_action_error")
    at = serializers.DateTimeField(source="jenkins_action_at", allow_null=True)


class ApprovalDetailSerializer(ApprovalReplySerializer):
    """一条审批的详情：等待接口的字段 + 构建信息、投票与完整历史。"""

    job_name = serializers.CharField()
    build_url = serializers.CharField()
    description = serializers.CharField()
    operation = serializers.CharField()
    requested_by = serializers.CharField()
    jenkins = JenkinsActionSerializer()
    votes = VoteSerializer(many=True)
    events = EventSerializer(many=True)


def approval_detail_data(approval: Approval) -> dict[str, Any]:
    data = approval_reply(approval)
    data.update({
        "job_name": approval.job_name,
        "build_url": approval.build_url,
        "description": approval.description,
        "operation": approval.operation,
        "requested_by": approval.requested_by,
        "jenkins": JenkinsActionSerializer(approval).data,
        "votes": VoteSerializer(approval.votes.all(), many=True).data,
        "events": EventSerializer(approval.events.all(), many=True).data,
    })
    return data


class ApprovalListFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    project = serializers.CharField(required=False, max_length=200)
    environment = serializers.CharField(required=False, max_length=64)
    created_from = serializers.DateTimeField(required=False)
    created_to = serializers.DateTimeField(required=False)
    search = serializers.CharField(required=False, max_length=100)


class DecisionInputSerializer(serializers.Serializer):
    approver = serializers.CharField(max_length=150, help_text=gettext_lazy("审批人用户名（users.json 里的名字）"))
    reason = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")


class DecisionReplySerializer(ApprovalReplySerializer):
    final = serializers.BooleanField(help_text=gettext_lazy("这一票是否让审批进入终态"))


class StatusReplySerializer(serializers.Serializer):
    total = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())
    today = serializers.IntegerField()
    median_decision_seconds = serializers.FloatField(allow_null=True)


class RoleSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    is_admin = serializers.BooleanField()
    can_approve = serializers.BooleanField()


class ApproverSerializer(serializers.Serializer):
    username = serializers.CharField()
    display_name = serializers.CharField(source="label")
    role = RoleSerializer()
    telegram_username = serializers.CharField()
    telegram_bound = serializers.SerializerMethodField()
    projects = serializers.ListField(child=serializers.CharField())
    environments = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()

    def get_telegram_bound(self, obj: Any) -> bool:
        return obj.telegram_id is not None


class BuildResultInputSerializer(serializers.Serializer):
    project = serializers.CharField(required=False, allow_blank=True, max_length=200)
    job_name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    build_number = serializers.IntegerField(min_value=0, max_value=2_147_483_647)
    build_url = serializers.CharField(required=False, allow_blank=True, max_length=500, default="",
                                      validators=[validate_http_url])
    result = serializers.ChoiceField(choices=BuildResultValue.choices)
    duration = serializers.IntegerField(required=False, min_value=0, max_value=10**13, allow_null=True, default=None)
    id = serializers.CharField(required=False, allow_blank=True, max_length=32, default="")
    jenkins = JenkinsServerField(required=False, allow_blank=True, allow_null=True, default=None)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict) and isinstance(data.get("result"), str):
            data = {**data, "result": data["result"].strip().upper()}
        return super().to_internal_value(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (attrs.get("project") or attrs.get("job_name")):
            raise serializers.ValidationError({"project": [_("缺少项目/任务名（project 或 JOB_NAME）。")]})
        attrs["job_name"] = attrs.get("job_name") or attrs["project"]
        return attrs


class BuildResultReplySerializer(serializers.Serializer):
    project = serializers.CharField()
    job_name = serializers.CharField()
    build_number = serializers.IntegerField()
    result = serializers.CharField()
    duration = serializers.IntegerField(allow_null=True)
    approval = serializers.CharField(allow_null=True)
    approval_status = serializers.CharField(allow_null=True)
    created = serializers.BooleanField()


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()
