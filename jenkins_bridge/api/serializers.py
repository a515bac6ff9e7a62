"""API 的输入校验与输出形状。输入在这里校验干净，再交给 approvals.services；这里不放业务逻辑。"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import serializers

from accounts.models import MAX_TIMEOUT_MINUTES
from approvals.display import voter_label
from approvals.links import log_url, status_url
from approvals.models import Approval, BuildResultValue, Status

from ..models import JenkinsServer
from .fields import (
    Described,
    DocumentedField,
    RequiredAlternatives,
    SecondsField,
    TextField,
    UpperChoiceField,
    WholeNumberField,
)

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
    "emergency": ("emergency", "EMERGENCY", "is_emergency"),
    "emergency_reason": ("emergency_reason", "EMERGENCY_REASON", "emergencyReason"),
}


def _repeated(name: str) -> list[str]:
    return [_("「%(name)s」只能给一次。") % {"name": name}]


def single_values(source: Any, names: Any) -> dict[str, Any]:
    """查询串或表单（QueryDict）→ 普通 dict：同一个参数给了多次是 400，而不是悄悄取最后一个。

    也让 DRF 把空值当作给了空值：它对 QueryDict 里的空串（status=）会当作“没给”。
    """
    data: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in names:
        values = source.getlist(name) if hasattr(source, "getlist") else [source[name]] if name in source else []
        if len(values) > 1:
            errors[name] = _repeated(name)
        elif values:
            data[name] = values[0]
    if errors:
        raise serializers.ValidationError(errors)
    return data


def canonical_input(*sources: Any) -> dict[str, Any]:
    """把查询串与请求体（JSON 或表单）合并成规范字段名；后面的来源覆盖前面的。null 等于没给。"""
    data: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for source in sources:
        if source is None:
            continue
        if not isinstance(source, Mapping) and not hasattr(source, "getlist"):
            raise serializers.ValidationError({"non_field_errors": [_("请求体必须是 JSON 对象或表单。")]})
        for canonical, aliases in WAIT_ALIASES.items():
            for alias in aliases:
                if alias not in source:
                    continue
                values = source.getlist(alias) if hasattr(source, "getlist") else [source[alias]]
                if len(values) > 1:
                    errors[canonical] = _repeated(alias)
                if values[-1] is not None:
                    data[canonical] = values[-1]
                    break
    if errors:
        raise serializers.ValidationError(errors)
    return data


def alias_help(text: str, canonical: str) -> Any:
    """字段说明后面列出它的其他写法（来自 WAIT_ALIASES，文档与解析用同一张表）。"""
    others = [alias for alias in WAIT_ALIASES[canonical] if alias != canonical]
    if not others:
        return text
    return format_lazy("{}{}", text, format_lazy(gettext_lazy("（也可写作 {}）"), "、".join(others)))


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


class JenkinsServerField(TextField):
    """Jenkins 服务器名 → JenkinsServer；未知的名字是 400。

    不设 max_length：CharField 的长度校验器跑在转换后的值（JenkinsServer）上，会变成 500；长度在转换前检查。
    """

    default_error_messages = {"unknown": gettext_lazy("未知的 Jenkins 服务器「{name}」。")}
    NAME_MAX_LENGTH = 64  # JenkinsServer.name

    def to_internal_value(self, data: Any) -> JenkinsServer | None:
        if isinstance(data, str) and len(data) > self.NAME_MAX_LENGTH:
            self.fail("max_length", max_length=self.NAME_MAX_LENGTH)
        name = super().to_internal_value(data)
        if not name:
            return None
        if len(name) > self.NAME_MAX_LENGTH:
            self.fail("max_length", max_length=self.NAME_MAX_LENGTH)
        server = JenkinsServer.objects.filter(name=name, is_active=True).first()
        if server is None:
            self.fail("unknown", name=name[:64])
        return server

    def openapi_schema(self, location: str) -> dict[str, Any]:
        schema = super().openapi_schema(location)
        for branch in schema.get("oneOf", [schema]):
            if branch.get("type") == "string":
                branch["maxLength"] = self.NAME_MAX_LENGTH
        return schema


# 英文文档里不能有中文：中文的环境写法只在中文说明里举例
ENVIRONMENT_HELP = gettext_lazy("环境，如 production、prod 或 生产；同一环境的常见写法都认")


def _text(name: str, help_text: str, max_length: int, **kwargs: Any) -> TextField:
    kwargs.setdefault("default", "")
    return TextField(required=False, allow_blank=True, max_length=max_length,
                     help_text=alias_help(help_text, name), **kwargs)


_FLAG_VALUES = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": False}
_FLAG_PATTERN = r"^\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0)?\s*$"


class FlagField(DocumentedField, serializers.BooleanField):
    """是/否：JSON 的 true/false、0/1，或字符串 true/false/yes/no/1/0（大小写与首尾空白不计；空串是否）。"""

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        if isinstance(data, int) and data in (0, 1):
            return bool(data)
        if isinstance(data, str) and data.strip().lower() in _FLAG_VALUES:
            return _FLAG_VALUES[data.strip().lower()]
        self.fail("invalid", input=str(data)[:20])

    def openapi_schema(self, location: str) -> dict[str, Any]:
        text = {"type": "string", "pattern": _FLAG_PATTERN}
        if location == "query":
            return text
        return {"oneOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}, text]}


class WaitInputSerializer(RequiredAlternatives, serializers.Serializer):
    openapi_description = gettext_lazy(
        "没有 id 时，必须有项目（project 或 job_name，任一写法）与构建号；有 id 时只查询那条审批。")
    required_alternatives = (("id",), ("project", "build_number"), ("job_name", "build_number"))

    project = _text("project", gettext_lazy("项目名（缺省时用任务名）"), 200, default=None)
    job_name = _text("job_name", gettext_lazy("Jenkins 任务名，可带文件夹（缺省时用项目名）"), 255, default=None)
    # 长度上限与 approvals.models.Approval 的列一致：超长是 400，而不是 MySQL 上的 500（DataError）
    environment = _text("environment", ENVIRONMENT_HELP, 32)
    build_number = WholeNumberField(required=False, min_value=0, max_value=2_147_483_647,
                                    help_text=alias_help(gettext_lazy("构建号"), "build_number"))
    build_url = _text("build_url", gettext_lazy("构建链接（http 或 https）"), 500, validators=[validate_http_url])
    version = _text("version", gettext_lazy("版本号"), 200)
    description = _text("description", gettext_lazy("发布说明，中文可"), 10000, trim_whitespace=False)
    operation = _text("operation", gettext_lazy("操作类型，如 部署 / 回滚"), 200)
    requested_by = _text("requested_by", gettext_lazy("发起人（Jenkins 用户名）"), 150)
    input_id = _text("input_id", gettext_lazy("流水线随后等待的 input 步骤 id"), 100)
    callback_url = _text("callback_url", gettext_lazy("Webhook Step 的 hook.url，必须在这台 Jenkins 的地址之下"), 500)
    timeout_minutes = WholeNumberField(required=False, min_value=1, max_value=MAX_TIMEOUT_MINUTES, allow_null=True,
                                       default=None, help_text=alias_help(gettext_lazy("超时分钟数（缺省按规则）"),
                                                                          "timeout_minutes"))
    wait = SecondsField(required=False, min_value=0, max_value=60, default=0,
                        help_text=alias_help(gettext_lazy("最多等待秒数（0–60）"), "wait"))
    id = _text("id", gettext_lazy("已有审批的编号（轮询）"), 32)
    jenkins = JenkinsServerField(required=False, allow_blank=True, allow_null=True, default=None,
                                 help_text=alias_help(gettext_lazy("Jenkins 服务器名（默认服务器可省略）"), "jenkins"))
    emergency = FlagField(required=False, default=False, help_text=alias_help(gettext_lazy(
        "紧急发布：封版期间也不被拒绝，但在规则的票数之外还要一位管理员同意；必须同时写 emergency_reason"),
        "emergency"))
    emergency_reason = _text("emergency_reason", gettext_lazy(
        "紧急发布的理由（emergency 为真时必填，缺了是 400 emergency_reason_required）"), 1000)

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
                server = JenkinsServer.objects.default()
            if not callback_url_allowed(callback, [server]):
                errors["callback_url"] = [_("回调地址必须位于已配置的 Jenkins 地址之下。")]
        if errors:
            raise serializers.ValidationError(errors)
        attrs["job_name"] = attrs.get("job_name") or attrs["project"]
        attrs["project"] = attrs.get("project") or attrs["job_name"]
        return attrs


class FreezeSerializer(serializers.Serializer):
    window = serializers.CharField(help_text=gettext_lazy("封版窗口的名称"))
    ends_at = serializers.DateTimeField(allow_null=True, help_text=gettext_lazy("封版结束的时间"))


class EmergencySerializer(serializers.Serializer):
    reason = serializers.CharField()
    admin_approval_required = serializers.BooleanField(help_text=gettext_lazy(
        "true：突破了封版，在规则的票数之外还要一位管理员同意"))


class LinksSerializer(serializers.Serializer):
    status = serializers.CharField()
    logs = serializers.CharField()


# 契约字段（见 DESIGN “HTTP API”）；只用于文档，实际的回答由 approval_reply() 生成
class ApprovalReplySerializer(Described, serializers.Serializer):
    openapi_description = gettext_lazy("一条审批的当前状态：proceed 为 true 时流水线可以继续。")

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
    reason_code = serializers.CharField(required=False, help_text=gettext_lazy(
        "只在有机器可读的原因时出现：frozen 表示封版期间被拒绝"))
    freeze = FreezeSerializer(required=False, help_text=gettext_lazy("只在封版拒绝或紧急发布突破封版时出现"))
    emergency = EmergencySerializer(required=False, help_text=gettext_lazy("只在紧急发布时出现"))


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
        **policy_reply(approval),
    }


def policy_reply(approval: Approval) -> dict[str, Any]:
    """发布策略的字段（X4）：只在有时出现，普通审批的回答与从前完全一样。"""
    extra: dict[str, Any] = {}
    if approval.reason_code:
        extra["reason_code"] = approval.reason_code
    if approval.freeze_name:
        extra["freeze"] = {"window": approval.freeze_name, "ends_at": _iso(approval.freeze_ends_at)}
    if approval.emergency:
        extra["emergency"] = {"reason": approval.emergency_reason,
                              "admin_approval_required": approval.admin_approval_required}
    return extra


class VoteSerializer(serializers.Serializer):
    approver = serializers.CharField(source="approver.username")
    approver_name = serializers.SerializerMethodField(help_text=gettext_lazy("代投时写作“B（代 A）”"))
    on_behalf_of = serializers.CharField(source="on_behalf_of.username", allow_null=True, default=None,
                                         help_text=gettext_lazy("受托人代谁投的票；自己投的为 null"))
    decision = serializers.CharField()
    reason = serializers.CharField()
    channel = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_approver_name(self, vote: Any) -> str:
        return voter_label(vote)


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
    openapi_description = gettext_lazy("一条审批的详情：等待接口的字段 + 构建信息、投票与完整历史。")

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
    """列表的过滤条件（查询串）。值原样比较、不去首尾空白；给了就不能是空的（status= 是 400）。"""

    status = serializers.ChoiceField(choices=Status.choices, required=False, help_text=gettext_lazy("状态"))
    project = TextField(required=False, max_length=200, trim_whitespace=False, help_text=gettext_lazy("项目名"))
    environment = TextField(required=False, max_length=64, trim_whitespace=False, help_text=ENVIRONMENT_HELP)
    created_from = serializers.DateTimeField(required=False, help_text=gettext_lazy("创建时间不早于（ISO 8601）"))
    created_to = serializers.DateTimeField(required=False, help_text=gettext_lazy("创建时间不晚于（ISO 8601）"))
    search = TextField(required=False, max_length=100, trim_whitespace=False,
                       help_text=gettext_lazy("在编号、任务、版本、说明、发起人里搜索"))


class DecisionInputSerializer(serializers.Serializer):
    approver = TextField(max_length=150, help_text=gettext_lazy("审批人用户名（users.json 里的名字）"))
    reason = TextField(required=False, allow_blank=True, max_length=1000, default="",
                       help_text=gettext_lazy("理由（可选）"))


class DecisionReplySerializer(ApprovalReplySerializer):
    openapi_description = gettext_lazy("投票后审批的状态；final 表示这一票是否让审批有了结果。")

    final = serializers.BooleanField(help_text=gettext_lazy("这一票是否让审批进入终态"))


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


class BuildResultInputSerializer(RequiredAlternatives, serializers.Serializer):
    openapi_description = gettext_lazy(
        "必须有项目（project 或 job_name，任一写法）、构建号与结果；带 id 时关联到那条审批。")
    required_alternatives = (("project",), ("job_name",))

    project = _text("project", gettext_lazy("项目名（缺省时用任务名）"), 200, default=None)
    job_name = _text("job_name", gettext_lazy("Jenkins 任务名，可带文件夹（缺省时用项目名）"), 255, default=None)
    build_number = WholeNumberField(min_value=0, max_value=2_147_483_647,
                                    help_text=alias_help(gettext_lazy("构建号"), "build_number"))
    build_url = _text("build_url", gettext_lazy("构建链接（http 或 https）"), 500, validators=[validate_http_url])
    result = UpperChoiceField(choices=BuildResultValue.choices, help_text=alias_help(format_lazy(
        gettext_lazy("构建结果，不分大小写：{}"), "、".join(BuildResultValue.values)), "result"))
    duration = WholeNumberField(required=False, min_value=0, max_value=10**13, allow_null=True, default=None,
                                help_text=alias_help(gettext_lazy("耗时（毫秒）"), "duration"))
    id = _text("id", gettext_lazy("这次构建的审批编号（可选）"), 32)
    jenkins = JenkinsServerField(required=False, allow_blank=True, allow_null=True, default=None,
                                 help_text=alias_help(gettext_lazy("Jenkins 服务器名（默认服务器可省略）"), "jenkins"))

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
