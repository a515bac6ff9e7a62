"""配置错误：把 pydantic 的错误类型翻成写明文件、键路径与问题的中文条目。

pydantic 只说“哪里、哪一类错”；怎么对人说由这里的表决定，所以换 pydantic 版本不会改掉用户看到的文字。
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from approvalbot.text import join_names

MAX_ERRORS_SHOWN = 50

Path = tuple[str | int, ...]

# 错误类型 → 消息。占位符：value（输入；范围错误里是原值，其余按 JSON 写法）、what（字段说明）、hint、
# min/max、key（字段名）与自定义错误的 ctx
MESSAGES: dict[str, Promise] = {
    "int_type": gettext_lazy("必须是整数%(what)s，实际是 %(value)s%(hint)s"),
    "greater_than_equal": gettext_lazy("不能小于 %(min)s，实际是 %(value)s"),
    "less_than_equal": gettext_lazy("不能大于 %(max)s，实际是 %(value)s"),
    "bool_type": gettext_lazy("必须是 true 或 false，实际是 %(value)s"),
    "string_type": gettext_lazy("必须是字符串，实际是 %(value)s"),
    "string_too_short": gettext_lazy("不能为空"),  # 字符串先去掉首尾空白，min_length 总是 1
    "string_too_long": gettext_lazy("太长（最多 %(max)s 个字符）"),
    "list_type": gettext_lazy("必须是字符串列表，实际是 %(value)s"),
    "dict_type": gettext_lazy("必须是 JSON 对象 {…}，实际是 %(value)s"),
    "model_type": gettext_lazy("必须是 JSON 对象 {…}，实际是 %(value)s"),
    "extra_forbidden": gettext_lazy("未知的键「%(key)s」，可用的键：%(allowed)s"),
    "missing": gettext_lazy("缺少 %(key)s"),
    # 以下是 schema.py 里自定义的错误类型
    "timeout_policy": gettext_lazy("未知的超时策略 %(value)s，只能是 reject（拒绝并终止构建）或 mark（仅标记）"),
    "backoff": gettext_lazy("必须是 1 到 10 之间的数字（每次提醒间隔乘以它），实际是 %(value)s"),
    "email": gettext_lazy("「%(email)s」不是合法的邮箱地址"),
    "telegram_username": gettext_lazy("「%(tg)s」不是合法的 Telegram 用户名（字母、数字、下划线）"),
    "zero_chat_id": gettext_lazy("不能为 0（Telegram 群 ID，群组是负数，如 -1001234567890）"),
    "project_level_only": gettext_lazy("只能写在项目一级，不能写在环境里"),
    "clock_time": gettext_lazy("「%(time)s」不是合法的时间，要写成 24 小时制的 \"HH:MM\"，如 \"03:30\""),
    # 发布策略（封版、升级）
    "freeze_pending": gettext_lazy("未知的封版待审批策略 %(value)s，只能是 wait（继续等待）或 refuse（封版开始时拒绝）"),
    "escalation_nobody": gettext_lazy("升级至少要写 approvers（人）或 roles（角色）中的一项"),
    "escalation_when": gettext_lazy("升级至少要写 after_reminders（提醒几次后）或 before_deadline_minutes（截止前几分钟）中的一项"),
    "weekly_time": gettext_lazy("「%(text)s」不是合法的每周时间，要写成“星期 时:分”，如 \"fri 18:00\" 或 \"周五 18:00\""),
    "weekly_same": gettext_lazy("每周窗口的开始与结束不能是同一时刻"),
    "freeze_datetime": gettext_lazy("「%(text)s」不是合法的时间，要写成 \"2026-12-24 18:00\"（按 timezone 的本地时间）或带时区的 ISO 8601"),
    "freeze_range": gettext_lazy("结束时间 %(end)s 必须晚于开始时间 %(start)s"),
    "freeze_form": gettext_lazy("要么写 weekly（每周重复），要么同时写 start 与 end（一次性），只能二选一"),
    "freeze_environments": gettext_lazy("至少写一个环境，如 [\"production\"]；\"*\" 表示所有环境"),
    "timezone": gettext_lazy("未知的时区「%(tz)s」，要写 IANA 时区名，如 \"Asia/Shanghai\""),
}
UNKNOWN_PROBLEM = gettext_lazy("值 %(value)s 不合法")
RANGE_TYPES = ("greater_than_equal", "less_than_equal")

# 同一类错误在个别字段上说得更具体：(字段名, 错误类型) → 消息
FIELD_MESSAGES: dict[tuple[str, str], Promise] = {
    ("role", "missing"): gettext_lazy("缺少 role（角色）"),
    ("allowed_chat_ids", "list_type"): gettext_lazy("必须是整数列表"),
}

# int_type 的 what：告诉人这个整数是什么
INT_HINTS: dict[str, Promise] = {
    "telegram_id": gettext_lazy("（Telegram 数字用户 ID，正数）"),
    "chat_id": gettext_lazy("（Telegram 群 ID，群组是负数，如 -1001234567890）"),
    "default_chat_id": gettext_lazy("（Telegram 群 ID，群组是负数，如 -1001234567890）"),
    "allowed_chat_ids": gettext_lazy("（Telegram 群 ID）"),
    "keep": gettext_lazy("（保留的备份份数）"),
    "after_minutes": gettext_lazy("（分钟数）"),
    "after_reminders": gettext_lazy("（提醒次数）"),
    "before_deadline_minutes": gettext_lazy("（分钟数）"),
}
DAYS_HINT = gettext_lazy("（天数）")


class ConfigError(Exception):
    """一份配置文件校验失败。errors 是给人看的中文条目，每条都写明文件、键路径与问题。"""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def show(value: Any) -> str:
    """错误里引用的输入：按 JSON 写法（字符串带引号、None 写成 null），过长截断。"""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def fmt_path(parts: Path) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or _("（顶层）")


def visible_fields(model: type[BaseModel]) -> list[str]:
    """文件里可以写的键：模型自己的键在前、继承来的在后；exclude=True 的字段只为给出更好的错误而声明。"""
    ordered: list[str] = []
    for klass in model.__mro__:
        if not issubclass(klass, BaseModel) or klass is BaseModel:
            continue
        parent = klass.__mro__[1]
        inherited = parent.model_fields if issubclass(parent, BaseModel) else {}
        ordered += [name for name, info in klass.model_fields.items()
                    if name not in inherited and name not in ordered and not info.exclude]
    return ordered


def unknown_key_message(key: str, model: type[BaseModel]) -> str:
    return str(MESSAGES["extra_forbidden"]) % {
        "key": key, "allowed": join_names(visible_fields(model))}


def _model_in(annotation: Any) -> Any:
    """剥掉 Annotated 与 X | None，得到真正的类型。"""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation


def _model_at(root: Any, loc: Path) -> type[BaseModel] | None:
    """沿着错误位置在 schema 里走，找到包含最后一个键的模型（用来列出可用的键）。"""
    current = _model_in(root)
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = _model_in(info.annotation)
        elif typing.get_origin(current) in (dict, list):
            current = _model_in(typing.get_args(current)[-1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_name(loc: Path) -> str:
    return next((str(part) for part in reversed(loc) if isinstance(part, str)), "")


def error_message(error: ErrorDetails, root: Any) -> tuple[Path, str]:
    """一条 pydantic 错误 → (键路径, 中文问题)。"""
    loc: Path = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = dict(error.get("ctx") or {})
    field = _field_name(loc)
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        if model is not None:
            return loc, unknown_key_message(str(loc[-1]), model)
    if kind == "missing":
        loc, value = loc[:-1], None  # “缺少某键”说在它的上一级
    what = INT_HINTS.get(field) or (DAYS_HINT if field.endswith("_days") else "")
    hint = _("（不要加引号）") if isinstance(value, str) and value.strip().lstrip("-").isdigit() else ""
    params = {
        **ctx, "value": value if kind in RANGE_TYPES else show(value), "what": what, "hint": hint, "key": field,
        "min": ctx.get("ge"), "max": ctx.get("le", ctx.get("max_length")),
    }
    template = FIELD_MESSAGES.get((field, kind)) or MESSAGES.get(kind) or UNKNOWN_PROBLEM
    return loc, str(template) % params


def _without(value: Any, loc: Path) -> Any:
    """value 去掉 loc 处的键后的副本；loc 经过列表时去掉整个列表（留着会让后面元素的下标对不上）。"""
    if not loc or not isinstance(value, dict) or loc[0] not in value:
        return value
    head, rest = loc[0], loc[1:]
    out = dict(value)
    if rest and isinstance(value[head], dict) and not isinstance(rest[0], int):
        out[head] = _without(value[head], rest)
    else:
        del out[head]
    return out


class Collector:
    """收集一份文件的全部问题，一次报完，而不是改一处报一处。"""

    def __init__(self, file_label: str) -> None:
        self.file = file_label
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: Path, message: str) -> None:
        self.errors.append(f"{self.file}: {fmt_path(path)}: {message}")

    def warn(self, path: Path, message: str) -> None:
        self.warnings.append(f"{self.file}: {fmt_path(path)}: {message}")

    def validate(self, model: type[BaseModel], value: Any, path: Path = ()) -> Any:
        """按模型校验 value，出错时记下每一条。

        有错时返回去掉出错的键之后的结果（去不掉则 None）：一个人的 telegram_id 写错，
        他仍算“定义过”，别处引用他不会再多报一串“未定义”；整份文件照样被拒绝。
        """
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            locs = []
            for error in exc.errors(include_url=False):
                loc, message = error_message(error, model)
                self.error((*path, *loc), message)
                locs.append(tuple(error["loc"]))
        salvaged = getattr(model, "shorthand", lambda v: v)(value)  # 简写先展开，才有键可去
        for loc in locs:
            salvaged = _without(salvaged, loc)
        try:
            return model.model_validate(salvaged)
        except ValidationError:
            return None

    def raise_if_errors(self) -> None:
        if self.errors:
            shown = self.errors[:MAX_ERRORS_SHOWN]
            if len(self.errors) > MAX_ERRORS_SHOWN:
                shown.append(_("……另有 %(n)s 个错误未列出") % {"n": len(self.errors) - MAX_ERRORS_SHOWN})
            raise ConfigError(shown)
