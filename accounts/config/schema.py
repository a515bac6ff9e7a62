"""config/users.json 与 config/app.json 的形状（pydantic v2）。

类型一律严格：true 不是整数，"5" 也不是；宽容的只有写法——简单格式、简写、单个字符串当列表，
都在 mode="before" 里先规范化。"_" 开头的键是注释。跨记录的检查（引用、别名、与后台记录冲突）在 checks.py。
"""

import re
from typing import Annotated, Any, Literal, Self

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..environments import normalize_environment
from ..models import MAX_TIMEOUT_MINUTES, FreezePending, TimeoutPolicy
from . import timespec

MAX_TELEGRAM_ID = 2**53  # Telegram 用户 id 最多 52 位
USERNAME_MAX = 150
ROLE_KEY_MAX = 64
TELEGRAM_USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{3,32}$")
CLOCK_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


def strip_comments(value: Any) -> Any:
    """"_comment" 之类以下划线开头的键是注释，校验与保存前去掉。"""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if not (isinstance(k, str) and k.startswith("_"))}
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value  # 只写一个时常被写成字符串；宽容接受


def _unique(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _reworded(error_type: str) -> WrapValidator:
    """这个字段的任何错误都报成 error_type：对人说“必须是 1 到 10 之间的数字”，比分别说类型与范围清楚。"""

    def wrap(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(error_type, error_type) from None

    return WrapValidator(wrap)


def _email(value: str) -> str:
    try:
        validate_email(value)
    except DjangoValidationError:
        raise PydanticCustomError("email", "invalid email {email}", {"email": value}) from None
    return value


def _telegram_username(value: str) -> str:
    value = value.lstrip("@")
    if not TELEGRAM_USERNAME_RE.match(value):
        raise PydanticCustomError("telegram_username", "invalid telegram username {tg}", {"tg": value})
    return value.lower()


def _nonzero(value: int) -> int:
    if value == 0:
        raise PydanticCustomError("zero_chat_id", "chat id must not be 0")
    return value


def _clock_time(value: str) -> str:
    """"HH:MM"（24 小时制），规范成两位数的写法。"""
    match = CLOCK_TIME_RE.match(value)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise PydanticCustomError("clock_time", "invalid time {time}", {"time": value})
    return f"{int(match[1]):02d}:{match[2]}"


def _project_level_only(value: Any) -> Any:
    raise PydanticCustomError("project_level_only", "only allowed at project level")


def _environments(values: list[str]) -> list[str]:
    return _unique([normalize_environment(v) for v in values])


Text64 = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=ROLE_KEY_MAX)]
Text100 = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Text150 = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=USERNAME_MAX)]
Text200 = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text32 = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
Text254 = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=254)]

UserRefs = Annotated[list[Text150], BeforeValidator(_as_list), AfterValidator(_unique)]
RoleRefs = Annotated[list[Text64], BeforeValidator(_as_list), AfterValidator(_unique)]
Names = Annotated[list[Text200], BeforeValidator(_as_list), AfterValidator(_unique)]
Environments = Annotated[list[Text32], BeforeValidator(_as_list), AfterValidator(_environments)]
Email = Annotated[Text254, AfterValidator(_email)]
TelegramUsername = Annotated[Text64, AfterValidator(_telegram_username)]
TelegramUserId = Annotated[StrictInt, Field(ge=1, le=MAX_TELEGRAM_ID)]
ChatId = Annotated[StrictInt, AfterValidator(_nonzero)]
RequiredApprovals = Annotated[StrictInt, Field(ge=1, le=50)]
TimeoutMinutes = Annotated[StrictInt, Field(ge=1, le=MAX_TIMEOUT_MINUTES)]
TimeoutPolicyName = Annotated[Literal[tuple(TimeoutPolicy.values)], _reworded("timeout_policy")]
Backoff = Annotated[float, Field(ge=1, le=10), _reworded("backoff")]
Days = Annotated[StrictInt, Field(ge=0, le=36500)]  # 0 = 永久保留（显式关闭这一类的清理）
ProjectLevelOnly = Annotated[Any, AfterValidator(_project_level_only)]
ClockTime = Annotated[StrictStr, AfterValidator(_clock_time)]


class Section(BaseModel):
    """文件里的一个 JSON 对象：未知的键是笔误（报错），类型严格。"""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, value: Any) -> Any:
        return strip_comments(cls.shorthand(value))

    @classmethod
    def shorthand(cls, value: Any) -> Any:
        """简写 → 完整写法；默认没有简写。"""
        return value


class OpenSection(Section):
    """其他模块也会读的分区：未知的键只给警告并原样保存。"""

    model_config = ConfigDict(extra="allow", strict=True)


# 注意：不可为 null 的可选字段写成 `类型 = None`：缺省时不校验默认值，写了 null 则按类型报错（与“没写”区分）。


class Reminders(Section):
    interval_minutes: Annotated[StrictInt, Field(ge=1, le=24 * 60)] | None = None
    backoff: Backoff | None = None
    max_count: Annotated[StrictInt, Field(ge=0, le=100)] | None = None


FreezePendingName = Annotated[Literal[tuple(FreezePending.values)], _reworded("freeze_pending")]


class Escalation(Section):
    """X15：无人决定时拉进来的人（approvers）或角色（roles），以及时机（提醒几次后、截止前几分钟，任一先到）。"""

    approvers: UserRefs = []
    roles: RoleRefs = []
    after_reminders: Annotated[StrictInt, Field(ge=1, le=100)] = None
    before_deadline_minutes: Annotated[StrictInt, Field(ge=1, le=MAX_TIMEOUT_MINUTES)] = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if not (self.approvers or self.roles):
            raise PydanticCustomError("escalation_nobody", "escalation needs approvers or roles")
        if self.after_reminders is None and self.before_deadline_minutes is None:
            raise PydanticCustomError("escalation_when", "escalation needs after_reminders or before_deadline_minutes")
        return self


# ---------------------------------------------------------------- users.json


class RoleEntry(Section):
    name: Text100 = None
    is_admin: StrictBool = None
    can_use_bot: StrictBool = None
    can_approve: StrictBool = None

    @classmethod
    def shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value  # {"ops_lead": "运维负责人"}


class UserEntry(Section):
    role: Text64
    telegram_id: TelegramUserId | None = None
    telegram_username: TelegramUsername = None
    email: Email = ""
    name: Text150 = ""
    projects: Names = []
    environments: Environments = []
    jenkins_user: Text150 = ""
    roles: RoleRefs = []  # 兼任的角色（X1）

    @classmethod
    def shorthand(cls, value: Any) -> Any:
        return {"role": value} if isinstance(value, str) else value  # {"alice": "admin"}


class RuleEntry(Section):
    """项目或项目下某个环境的审批规则。"""

    approvers: UserRefs = []
    approver_roles: RoleRefs = []
    owners: UserRefs = []
    chat_id: ChatId | None = None
    required_approvals: RequiredApprovals | None = None
    timeout_minutes: TimeoutMinutes | None = None
    timeout_policy: TimeoutPolicyName | None = None
    stop_build: StrictBool | None = None
    reminders: Reminders | None = None
    required_roles: RoleRefs = []  # X1：这些角色各要一人同意
    escalation: Escalation | None = None  # X15
    freeze_pending: FreezePendingName | None = None  # X4：封版开始时仍在等的审批


class EnvironmentRule(RuleEntry):
    # 只为说清楚“这些只能写在项目一级”而声明；不在可用键列表里
    aliases: ProjectLevelOnly = Field(default=None, exclude=True)
    patterns: ProjectLevelOnly = Field(default=None, exclude=True)
    environments: ProjectLevelOnly = Field(default=None, exclude=True)


CommentFree = BeforeValidator(strip_comments)


class ProjectEntry(RuleEntry):
    aliases: Names = []
    patterns: Names = []
    environments: Annotated[dict[str, EnvironmentRule], CommentFree] = {}

    @classmethod
    def shorthand(cls, value: Any) -> Any:
        return {"approvers": value} if isinstance(value, list) else value  # {"shop": ["bob"]}


Records = Annotated[dict[str, Any], CommentFree]  # 每条记录单独校验（validate.py），一条坏的不挡住别的记录的检查


class UsersFile(Section):
    """详细格式的顶层。简单格式 {"alice": "admin"} 的顶层就是用户表，见 validate.py。"""

    roles: Records = {}
    users: Records = {}
    projects: Records = {}
    default_approvers: UserRefs = None


DETAILED_KEYS = tuple(UsersFile.model_fields)


# ---------------------------------------------------------------- app.json


class ApprovalSection(Section):
    timeout_minutes: TimeoutMinutes | None = None
    timeout_policy: TimeoutPolicyName | None = None
    stop_build: StrictBool | None = None


class TelegramSection(OpenSection):
    default_chat_id: ChatId | None = None
    allowed_chat_ids: list[ChatId] | None = None


_DAYS_BY_KEY = TypeAdapter(dict[str, Days])


class RetentionSection(OpenSection):
    approvals_days: Days = None
    events_days: Days = None
    build_logs_days: Days = None
    build_results_days: Days = None

    @model_validator(mode="wrap")
    @classmethod
    def _other_days(cls, value: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """不认识的 *_days 键只警告，但值仍要是天数：写错一个字母也不该悄悄存进一个负数。"""
        errors: list[Any] = []
        if isinstance(value, dict):
            other = {k: v for k, v in strip_comments(value).items()
                     if isinstance(k, str) and k.endswith("_days") and k not in cls.model_fields}
            try:
                _DAYS_BY_KEY.validate_python(other)
            except ValidationError as exc:
                errors = exc.errors()
        try:
            result = handler(value)
        except ValidationError as exc:
            errors = [*exc.errors(), *errors]
        if errors:
            # 原样转交：类型名与 ctx 不变，errors.py 照常翻译
            raise ValidationError.from_exception_data(cls.__name__, [
                {"type": PydanticCustomError(e["type"], e["msg"], e.get("ctx")), "loc": e["loc"], "input": e["input"]}
                for e in errors])
        return result


class BackupSection(Section):
    """每日备份（D7）：保留最近几份、每天几点（TIME_ZONE 的本地时间）。"""

    keep: Annotated[StrictInt, Field(ge=1, le=1000)] = None
    time: ClockTime = None


class AlertsSection(Section):
    """告警（O3）：组件持续失败多少分钟才告警；0 = 第一次检查失败就告警。"""

    after_minutes: Annotated[StrictInt, Field(ge=0, le=24 * 60)] = None


def _weekly_time(value: str) -> str:
    parsed = timespec.parse_weekly(value)
    if parsed is None:
        raise PydanticCustomError("weekly_time", "invalid weekly time {text}", {"text": value})
    return timespec.format_weekly(*parsed)


def _local_datetime(value: str) -> str:
    parsed = timespec.parse_local(value)
    if parsed is None:
        raise PydanticCustomError("freeze_datetime", "invalid date time {text}", {"text": value})
    return parsed.isoformat(timespec="minutes") if parsed.second == 0 else parsed.isoformat()


def _timezone(value: str) -> str:
    if timespec.zone(value) is None:
        raise PydanticCustomError("timezone", "unknown time zone {tz}", {"tz": value})
    return value


def _freeze_environments(values: list[str]) -> list[str]:
    if not values:
        raise PydanticCustomError("freeze_environments", "at least one environment")
    return values


WeeklyTime = Annotated[StrictStr, AfterValidator(_weekly_time)]
LocalDateTime = Annotated[StrictStr, AfterValidator(_local_datetime)]
TimeZoneName = Annotated[Text64, AfterValidator(_timezone)]
FreezeEnvironments = Annotated[Environments, AfterValidator(_freeze_environments)]


class WeeklySpan(Section):
    start: WeeklyTime
    end: WeeklyTime

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise PydanticCustomError("weekly_same", "start equals end")
        return self


class FreezeWindowEntry(Section):
    """一个封版窗口：weekly（每周重复）或 start/end（一次性），二选一；时间按 timezone（缺省 TIME_ZONE）。"""

    name: Text100 = None
    environments: FreezeEnvironments
    projects: Names = []
    timezone: TimeZoneName = None
    reason: Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=500)] = None
    weekly: WeeklySpan = None
    start: LocalDateTime = None
    end: LocalDateTime = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        once = self.start is not None or self.end is not None
        if (self.weekly is None) == (not once) or (once and (self.start is None or self.end is None)):
            raise PydanticCustomError("freeze_form", "weekly or start/end")
        if once:
            tz = timespec.zone(self.timezone or settings.TIME_ZONE)
            start = timespec.aware(timespec.parse_local(self.start), tz)
            end = timespec.aware(timespec.parse_local(self.end), tz)
            if end <= start:
                raise PydanticCustomError("freeze_range", "end before start", {"start": self.start, "end": self.end})
        return self


class FreezeSection(Section):
    """X4：封版窗口与封版开始时待审批的默认处理（规则的 freeze_pending 优先）。"""

    pending: FreezePendingName = None
    windows: Annotated[dict[str, FreezeWindowEntry], BeforeValidator(strip_comments)] = {}


class AppFile(OpenSection):
    """app.json：approval 与 reminders 完全归本加载器解释（未知键报错）；其余分区可能被其他模块读取。"""

    approval: ApprovalSection = None
    reminders: Reminders = None
    telegram: TelegramSection = None
    retention: RetentionSection = None
    backup: BackupSection = None
    alerts: AlertsSection = None
    freeze: FreezeSection = None
