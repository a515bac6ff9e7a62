"""config/users.json 与 config/app.json 的加载器（C1–C11，P1–P4）。

流程：读文件 → 解析 JSON → 校验（含与数据库中后台记录的冲突检查）→ 一个事务内应用 → 备份文件。
任何一处校验失败，整份文件被拒绝，数据库保持上一个好配置（C8），错误记在 ConfigState 上。
文件来的记录标记 source=file；从文件里删掉的只停用不删除；后台手工建的（source=admin）永不被改动，
文件与之同名时直接拒绝，而不是悄悄接管。
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from .environments import normalize_environment
from .models import Approver, ConfigState, ProjectRule, Role, Source, TimeoutPolicy

logger = logging.getLogger(__name__)

USERS = "users"
APP = "app"
CONFIG_NAMES = (USERS, APP)

DEFAULT_RULE_PROJECT = "*"
ADMIN_ROLE_KEY = "admin"
# 没在 roles 里定义时，这些写法都指内置管理员角色（P4）
ADMIN_ROLE_ALIASES = {"admin", "管理员"}
BACKUPS_KEPT = 20
MAX_TIMEOUT_MINUTES = 7 * 24 * 60
MAX_TELEGRAM_ID = 2**53  # Telegram 用户 id 最多 52 位
MAX_ERRORS_SHOWN = 50

ROLE_KEY_RE = re.compile(r"^[\w-]{1,64}$")  # 与 Role.key（允许中文的 SlugField）一致
TELEGRAM_USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{3,32}$")
USERNAME_MAX = 150
PROJECT_MAX = 200

USER_FIELDS = (
    "role", "telegram_id", "telegram_username", "email", "name", "projects", "environments", "jenkins_user",
)
ROLE_FIELDS = ("name", "is_admin", "can_use_bot", "can_approve")
RULE_FIELDS = (
    "approvers", "approver_roles", "owners", "chat_id", "required_approvals", "timeout_minutes",
    "timeout_policy", "stop_build", "reminders",
)
PROJECT_FIELDS = ("aliases", "patterns", "environments", *RULE_FIELDS)
REMINDER_FIELDS = ("interval_minutes", "backoff", "max_count")
DETAILED_KEYS = ("roles", "users", "projects", "default_approvers")

# app.json：approval 与 reminders 完全归本加载器解释，未知键按笔误报错；
# 其余分区（telegram、retention……）可能被其他模块读取，未知键只给警告并原样保存。
APP_STRICT_SECTIONS = ("approval", "reminders")
SECRET_KEY_RE = re.compile(r"(token|secret|password|passwd|api_key)", re.IGNORECASE)


# ---------------------------------------------------------------- 错误与结果


class ConfigError(Exception):
    """一份配置文件校验失败。errors 是给人看的中文条目，每条都写明文件、键路径与问题。"""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class LoadResult:
    """一次加载/校验的结果，供命令输出、周期任务日志与通知使用。"""

    name: str
    path: str
    status: str  # missing | unchanged | checked | applied | refused
    checksum: str = ""
    changed: bool = False  # 内容与上一次成功加载的不同
    applying: bool = True  # False 即 --check：只校验
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "refused"

    def describe(self) -> str:
        """一行中文摘要，用于日志与 Telegram 通知。"""
        if self.status == "missing":
            return _("%(file)s 不存在，跳过（保持当前配置）。") % {"file": self.path}
        if self.status == "unchanged":
            return _("%(file)s 未变化。") % {"file": self.path}
        if self.status == "checked":
            return _("%(file)s 校验通过。") % {"file": self.path}
        if self.status == "refused" and not self.applying:
            return _("%(file)s 校验失败：\n%(errors)s") % {"file": self.path, "errors": "\n".join(self.errors)}
        if self.status == "refused":
            return _("%(file)s 校验失败，已拒绝，继续使用上一次的好配置：\n%(errors)s") % {
                "file": self.path, "errors": "\n".join(self.errors)
            }
        parts = [f"{_label(k)} {v}" for k, v in self.summary.items() if v]
        return _("%(file)s 已加载（%(parts)s）。") % {
            "file": self.path, "parts": pgettext("list separator", "，").join(parts) or _("无变化")
        }


def _label(key: str) -> str:
    labels = {
        "roles_created": _("新建角色"), "roles_updated": _("更新角色"), "roles_deactivated": _("停用角色"),
        "users_created": _("新建审批人"), "users_updated": _("更新审批人"), "users_deactivated": _("停用审批人"),
        "rules_created": _("新建规则"), "rules_updated": _("更新规则"), "rules_deactivated": _("停用规则"),
        "keys": _("配置项"),
    }
    return labels.get(key, key)


def _fmt_path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or _("（顶层）")


class _Collector:
    """收集一份文件的全部问题，一次报完，而不是改一处报一处。"""

    def __init__(self, file_label: str) -> None:
        self.file = file_label
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: tuple[str | int, ...], message: str) -> None:
        self.errors.append(f"{self.file}: {_fmt_path(path)}: {message}")

    def warn(self, path: tuple[str | int, ...], message: str) -> None:
        self.warnings.append(f"{self.file}: {_fmt_path(path)}: {message}")

    def raise_if_errors(self) -> None:
        if self.errors:
            shown = self.errors[:MAX_ERRORS_SHOWN]
            if len(self.errors) > MAX_ERRORS_SHOWN:
                shown.append(_("……另有 %(n)s 个错误未列出") % {"n": len(self.errors) - MAX_ERRORS_SHOWN})
            raise ConfigError(shown)

    # -- 类型检查小工具：返回 None 表示有错（已记录）

    def int_value(self, value: Any, path: tuple, *, minimum: int | None = None, maximum: int | None = None,
                  what: str = "") -> int | None:
        # bool 是 int 的子类，true 不能当 1 用
        if isinstance(value, bool) or not isinstance(value, int):
            hint = _("（不要加引号）") if isinstance(value, str) and value.strip().lstrip("-").isdigit() else ""
            self.error(path, _("必须是整数%(what)s，实际是 %(value)s%(hint)s") % {
                "what": what, "value": _show(value), "hint": hint})
            return None
        if minimum is not None and value < minimum:
            self.error(path, _("不能小于 %(min)s，实际是 %(value)s") % {"min": minimum, "value": value})
            return None
        if maximum is not None and value > maximum:
            self.error(path, _("不能大于 %(max)s，实际是 %(value)s") % {"max": maximum, "value": value})
            return None
        return value

    def bool_value(self, value: Any, path: tuple) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, _("必须是 true 或 false，实际是 %(value)s") % {"value": _show(value)})
            return None
        return value

    def str_value(self, value: Any, path: tuple, *, max_length: int = 200, allow_empty: bool = False) -> str | None:
        if not isinstance(value, str):
            self.error(path, _("必须是字符串，实际是 %(value)s") % {"value": _show(value)})
            return None
        value = value.strip()
        if not value and not allow_empty:
            self.error(path, _("不能为空"))
            return None
        if len(value) > max_length:
            self.error(path, _("太长（最多 %(max)s 个字符）") % {"max": max_length})
            return None
        return value

    def str_list(self, value: Any, path: tuple, *, max_length: int = 200) -> list[str] | None:
        if isinstance(value, str):
            # 只写一个时常被写成字符串；宽容接受
            value = [value]
        if not isinstance(value, list):
            self.error(path, _("必须是字符串列表，实际是 %(value)s") % {"value": _show(value)})
            return None
        items: list[str] = []
        for index, item in enumerate(value):
            text = self.str_value(item, (*path, index), max_length=max_length)
            if text is not None and text not in items:
                items.append(text)
        return items

    def mapping(self, value: Any, path: tuple) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, _("必须是 JSON 对象 {…}，实际是 %(value)s") % {"value": _show(value)})
            return None
        return {k: v for k, v in value.items() if not k.startswith("_")}  # "_comment" 之类是注释

    def unknown_keys(self, value: dict[str, Any], allowed: tuple[str, ...], path: tuple, *, strict: bool = True) -> None:
        for key in value:
            if key not in allowed:
                message = _("未知的键「%(key)s」，可用的键：%(allowed)s") % {
                    "key": key, "allowed": pgettext("list separator", "、").join(allowed)}
                (self.error if strict else self.warn)((*path, key), message)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- 读取文件


def config_path(name: str) -> Path:
    return Path(settings.USERS_CONFIG_FILE if name == USERS else settings.APP_CONFIG_FILE)


def _file_label(path: Path) -> str:
    """错误里显示的文件名：项目内的文件用相对路径，更短也不泄露部署目录。"""
    try:
        return str(path.resolve().relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(path)


def parse_json(raw: bytes, file_label: str) -> Any:
    """解析 JSON；语法错误给出行号与列号，重复的键也算错误（json 默认会悄悄取后一个）。"""
    try:
        text = raw.decode("utf-8-sig")  # 容忍 Windows 记事本加的 BOM
    except UnicodeDecodeError as exc:
        raise ConfigError([_("%(file)s: 不是 UTF-8 编码（第 %(pos)s 字节附近）") % {
            "file": file_label, "pos": exc.start}]) from None
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as exc:
        raise ConfigError([_("%(file)s: 第 %(line)s 行第 %(col)s 列：JSON 格式错误（%(msg)s）") % {
            "file": file_label, "line": exc.lineno, "col": exc.colno, "msg": exc.msg}]) from None
    if duplicates:
        raise ConfigError([_("%(file)s: 重复的键「%(key)s」（后一个会覆盖前一个，请删掉其中一个）") % {
            "file": file_label, "key": key} for key in dict.fromkeys(duplicates)])
    if not isinstance(data, dict):
        raise ConfigError([_("%(file)s: 顶层必须是 JSON 对象 {…}") % {"file": file_label}])
    return data


def file_permission_warnings(path: Path) -> list[str]:
    """C10：谁能改 users.json 谁就能给自己审批权限；所有人可写时必须提醒。"""
    try:
        mode = path.stat().st_mode
    except OSError:
        return []
    if mode & stat.S_IWOTH:
        return [_("%(file)s: 所有用户都可写（权限 %(mode)s），任何本机用户都能修改审批权限；请执行 chmod 640 %(file)s") % {
            "file": _file_label(path), "mode": oct(stat.S_IMODE(mode))}]
    return []


# ---------------------------------------------------------------- users.json：校验


@dataclass
class RoleSpec:
    key: str
    name: str
    is_admin: bool = False
    can_use_bot: bool = True
    can_approve: bool = True
    defined: bool = False  # 在 roles 里显式定义（否则是用户引用时自动建的自定义角色）


@dataclass
class UserSpec:
    username: str
    role: str
    telegram_id: int | None = None
    telegram_username: str = ""
    email: str = ""
    display_name: str = ""
    projects: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    jenkins_user: str = ""


@dataclass
class RuleSpec:
    project: str
    environment: str = ""
    is_default: bool = False
    aliases: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    approvers: list[str] = field(default_factory=list)
    approver_roles: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    chat_id: int | None = None
    required_approvals: int | None = None
    timeout_minutes: int | None = None
    timeout_policy: str = ""
    stop_build: bool | None = None
    reminder_interval_minutes: int | None = None
    reminder_backoff: float | None = None
    reminder_max_count: int | None = None


@dataclass
class UsersConfig:
    roles: dict[str, RoleSpec]
    users: dict[str, UserSpec]
    rules: list[RuleSpec]


def _norm_username(value: str) -> str:
    return value.strip().lstrip("@").lower()


class _UsersValidator:
    """把 users.json 变成 UsersConfig；同时对照数据库里后台建的记录（只读）。"""

    def __init__(self, data: dict[str, Any], file_label: str) -> None:
        self.data = data
        self.c = _Collector(file_label)
        self.roles: dict[str, RoleSpec] = {}
        self.users: dict[str, UserSpec] = {}
        self.rules: list[RuleSpec] = []
        # 数据库现状（一次查询，后面全用内存）
        self.db_roles = list(Role.objects.all())
        self.db_approvers = list(Approver.objects.select_related("role"))
        self.db_rules = list(ProjectRule.objects.all())
        self.admin_approvers = {
            a.username.lower(): a for a in self.db_approvers if a.source == Source.ADMIN and a.is_active
        }

    def validate(self) -> UsersConfig:
        data = {k: v for k, v in self.data.items() if not k.startswith("_")}
        detailed = any(key in data for key in DETAILED_KEYS)
        if detailed:
            self.c.unknown_keys(data, DETAILED_KEYS, ())
            roles = self.c.mapping(data.get("roles", {}), ("roles",))
            users = self.c.mapping(data.get("users", {}), ("users",))
            projects = self.c.mapping(data.get("projects", {}), ("projects",))
            users_path: tuple = ("users",)
        else:
            # 简单格式 {"alice": "admin"}：顶层就是用户表（P1）
            roles, users, projects, users_path = {}, data, {}, ()
        self._roles(roles or {})
        self._users(users or {}, users_path)
        self._projects(projects or {})
        if detailed and "default_approvers" in data:
            self._default(data["default_approvers"])
        self._check_admin_collisions()
        self._check_required_approvals()
        self.c.raise_if_errors()
        return UsersConfig(roles=self.roles, users=self.users, rules=self.rules)

    # -- 角色

    def _roles(self, roles: dict[str, Any]) -> None:
        for key, value in roles.items():
            path = ("roles", key)
            if not ROLE_KEY_RE.match(key):
                self.c.error(path, _("角色标识只能包含文字、数字、下划线或连字符（最多 64 个字符）"))
                continue
            if isinstance(value, str):
                value = {"name": value}  # {"ops_lead": "运维负责人"} 的简写
            spec = self.c.mapping(value, path)
            if spec is None:
                continue
            self.c.unknown_keys(spec, ROLE_FIELDS, path)
            role = RoleSpec(key=key, name=key, defined=True, is_admin=key == ADMIN_ROLE_KEY)
            if "name" in spec:
                role.name = self.c.str_value(spec["name"], (*path, "name"), max_length=100) or key
            for attr in ("is_admin", "can_use_bot", "can_approve"):
                if attr in spec:
                    flag = self.c.bool_value(spec[attr], (*path, attr))
                    if flag is not None:
                        setattr(role, attr, flag)
            self.roles[key] = role

    def _role_ref(self, value: Any, path: tuple, *, create: bool) -> str | None:
        """把用户或项目里写的角色解析成角色标识。create=False 时不认识就报错（项目里的角色多半是笔误）。"""
        text = self.c.str_value(value, path, max_length=64)
        if text is None:
            return None
        if text in self.roles:
            return text
        for spec in self.roles.values():
            if spec.defined and spec.name == text:
                return spec.key
        for role in self.db_roles:
            if role.key == text or role.name == text:
                if role.source == Source.ADMIN:
                    # 后台建的角色：照原样引用，应用时不修改
                    spec = RoleSpec(key=role.key, name=role.name, is_admin=role.is_admin,
                                    can_use_bot=role.can_use_bot, can_approve=role.can_approve)
                else:
                    # 文件里曾定义、现在只被引用的角色：回到“可审批的自定义角色”（P3）；保留名称，按名称引用才稳定
                    spec = RoleSpec(key=role.key, name=role.name, is_admin=role.key == ADMIN_ROLE_KEY)
                self.roles.setdefault(role.key, spec)
                return role.key
        if text.lower() in ADMIN_ROLE_ALIASES:
            self.roles[ADMIN_ROLE_KEY] = RoleSpec(key=ADMIN_ROLE_KEY, name=_("管理员"), is_admin=True)
            return ADMIN_ROLE_KEY
        if not create:
            self.c.error(path, _("未知角色「%(role)s」：既没有在 roles 中定义，也没有用户使用它") % {"role": text})
            return None
        if not ROLE_KEY_RE.match(text):
            self.c.error(path, _("角色名「%(role)s」不合法：只能包含文字、数字、下划线或连字符，不能有空格") % {"role": text})
            return None
        # 未定义的角色名成为可审批的自定义角色（P3）
        self.roles[text] = RoleSpec(key=text, name=text)
        return text

    # -- 用户

    def _users(self, users: dict[str, Any], base: tuple) -> None:
        telegram_ids: dict[int, str] = {}
        telegram_names: dict[str, str] = {}
        for raw_key, value in users.items():
            path = (*base, raw_key)
            username = _norm_username(raw_key)
            if not username or len(username) > USERNAME_MAX or any(ch.isspace() for ch in username):
                self.c.error(path, _("用户名不能为空、不能含空白、最多 %(max)s 个字符") % {"max": USERNAME_MAX})
                continue
            if username in self.users:
                self.c.error(path, _("用户「%(name)s」重复定义（用户名不区分大小写，@ 可省略）") % {"name": username})
                continue
            if isinstance(value, str):
                value = {"role": value}
            spec_data = self.c.mapping(value, path)
            if spec_data is None:
                continue
            self.c.unknown_keys(spec_data, USER_FIELDS, path)
            if "role" not in spec_data:
                self.c.error(path, _("缺少 role（角色）"))
                continue
            role = self._role_ref(spec_data["role"], (*path, "role"), create=True)
            if role is None:
                continue
            user = UserSpec(username=username, role=role)
            self._user_fields(user, spec_data, path)
            if user.telegram_id is not None:
                other = telegram_ids.setdefault(user.telegram_id, username)
                if other != username:
                    self.c.error((*path, "telegram_id"), _("telegram_id %(id)s 已被用户「%(other)s」使用") % {
                        "id": user.telegram_id, "other": other})
            if user.telegram_username:
                other = telegram_names.setdefault(user.telegram_username, username)
                if other != username:
                    self.c.error(path, _("Telegram 用户名 @%(tg)s 已被用户「%(other)s」使用") % {
                        "tg": user.telegram_username, "other": other})
            elif user.telegram_id is None:
                self.c.warn(path, _("既没有 telegram_id，用户名也不是合法的 Telegram 用户名，此人无法在 Telegram 中被识别"))
            self.users[username] = user

    def _user_fields(self, user: UserSpec, spec: dict[str, Any], path: tuple) -> None:
        c = self.c
        if "telegram_id" in spec and spec["telegram_id"] is not None:
            user.telegram_id = c.int_value(spec["telegram_id"], (*path, "telegram_id"), minimum=1,
                                           maximum=MAX_TELEGRAM_ID, what=_("（Telegram 数字用户 ID，正数）"))
        if "telegram_username" in spec:
            tg = c.str_value(spec["telegram_username"], (*path, "telegram_username"), max_length=64)
            if tg is not None:
                tg = tg.lstrip("@")
                if TELEGRAM_USERNAME_RE.match(tg):
                    user.telegram_username = tg.lower()
                else:
                    c.error((*path, "telegram_username"), _("「%(tg)s」不是合法的 Telegram 用户名（字母、数字、下划线）") % {
                        "tg": tg})
        elif TELEGRAM_USERNAME_RE.match(user.username):
            # 没写 telegram_username 时，用户表的键就是 Telegram 用户名（DESIGN）
            user.telegram_username = user.username
        if "email" in spec:
            email = c.str_value(spec["email"], (*path, "email"), max_length=254)
            if email is not None:
                try:
                    validate_email(email)
                    user.email = email
                except ValidationError:
                    c.error((*path, "email"), _("「%(email)s」不是合法的邮箱地址") % {"email": email})
        if "name" in spec:
            user.display_name = c.str_value(spec["name"], (*path, "name"), max_length=150) or ""
        if "jenkins_user" in spec:
            user.jenkins_user = c.str_value(spec["jenkins_user"], (*path, "jenkins_user"), max_length=150) or ""
        if "projects" in spec:
            user.projects = c.str_list(spec["projects"], (*path, "projects")) or []
        if "environments" in spec:
            envs = c.str_list(spec["environments"], (*path, "environments"), max_length=32) or []
            user.environments = list(dict.fromkeys(normalize_environment(e) for e in envs))

    def _user_ref(self, value: Any, path: tuple) -> str | None:
        text = self.c.str_value(value, path, max_length=USERNAME_MAX)
        if text is None:
            return None
        username = _norm_username(text)
        if username in self.users or username in self.admin_approvers:
            return username
        self.c.error(path, _("用户「%(name)s」未在 users 中定义（也不是后台创建的审批人）") % {"name": username})
        return None

    # -- 项目

    def _projects(self, projects: dict[str, Any]) -> None:
        seen: dict[str, str] = {}
        for raw_name, value in projects.items():
            path = ("projects", raw_name)
            name = raw_name.strip()
            if not name or len(name) > PROJECT_MAX:
                self.c.error(path, _("项目名不能为空，最多 %(max)s 个字符") % {"max": PROJECT_MAX})
                continue
            if name == DEFAULT_RULE_PROJECT:
                self.c.error(path, _("「*」保留给默认审批人，请用顶层的 default_approvers"))
                continue
            if name.lower() in seen:
                self.c.error(path, _("项目「%(name)s」与「%(other)s」重复（项目名不区分大小写）") % {
                    "name": name, "other": seen[name.lower()]})
                continue
            seen[name.lower()] = name
            if isinstance(value, list):
                value = {"approvers": value}  # {"shop": ["bob"]} 的简写
            spec = self.c.mapping(value, path)
            if spec is None:
                continue
            self.c.unknown_keys(spec, PROJECT_FIELDS, path)
            base = RuleSpec(project=name)
            base.aliases = [a for a in self.c.str_list(spec.get("aliases", []), (*path, "aliases")) or []
                            if a.lower() != name.lower()]
            base.patterns = self.c.str_list(spec.get("patterns", []), (*path, "patterns")) or []
            self._rule_fields(base, spec, path)
            self.rules.append(base)
            envs = self.c.mapping(spec.get("environments", {}), (*path, "environments")) or {}
            seen_envs: dict[str, str] = {}
            for raw_env, env_value in envs.items():
                env_path = (*path, "environments", raw_env)
                env = normalize_environment(raw_env)
                if not env or len(env) > 32:
                    self.c.error(env_path, _("环境名不能为空，最多 32 个字符"))
                    continue
                if env in seen_envs:
                    self.c.error(env_path, _("环境「%(raw)s」与「%(other)s」是同一个环境（%(env)s）") % {
                        "raw": raw_env, "other": seen_envs[env], "env": env})
                    continue
                seen_envs[env] = raw_env
                env_spec = self.c.mapping(env_value, env_path)
                if env_spec is None:
                    continue
                for key in ("aliases", "patterns", "environments"):
                    if key in env_spec:
                        self.c.error((*env_path, key), _("只能写在项目一级，不能写在环境里"))
                self.c.unknown_keys({k: v for k, v in env_spec.items() if k not in PROJECT_FIELDS}, RULE_FIELDS,
                                    env_path)
                override = RuleSpec(project=name, environment=env)
                self._rule_fields(override, env_spec, env_path)
                self.rules.append(override)
        self._check_aliases()

    def _rule_fields(self, rule: RuleSpec, spec: dict[str, Any], path: tuple) -> None:
        c = self.c
        for key in ("approvers", "owners"):
            names = c.str_list(spec.get(key, []), (*path, key), max_length=USERNAME_MAX) or []
            refs = [self._user_ref(n, (*path, key, i)) for i, n in enumerate(names)]
            setattr(rule, key, [r for r in dict.fromkeys(refs) if r])
        roles = c.str_list(spec.get("approver_roles", []), (*path, "approver_roles"), max_length=64) or []
        refs = [self._role_ref(r, (*path, "approver_roles", i), create=False) for i, r in enumerate(roles)]
        rule.approver_roles = [r for r in dict.fromkeys(refs) if r]
        if spec.get("chat_id") is not None:
            chat_id = c.int_value(spec["chat_id"], (*path, "chat_id"),
                                  what=_("（Telegram 群 ID，群组是负数，如 -1001234567890）"))
            if chat_id == 0:
                c.error((*path, "chat_id"), _("不能为 0（Telegram 群 ID，群组是负数，如 -1001234567890）"))
            elif chat_id is not None:
                rule.chat_id = chat_id
        if spec.get("required_approvals") is not None:
            rule.required_approvals = c.int_value(spec["required_approvals"], (*path, "required_approvals"),
                                                  minimum=1, maximum=50)
        if spec.get("timeout_minutes") is not None:
            rule.timeout_minutes = c.int_value(spec["timeout_minutes"], (*path, "timeout_minutes"), minimum=1,
                                               maximum=MAX_TIMEOUT_MINUTES)
        if spec.get("timeout_policy") is not None:
            policy = spec["timeout_policy"]
            if policy in TimeoutPolicy.values:
                rule.timeout_policy = policy
            else:
                c.error((*path, "timeout_policy"), _("未知的超时策略 %(value)s，只能是 reject（拒绝并终止构建）或 mark（仅标记）") % {
                    "value": _show(policy)})
        if spec.get("stop_build") is not None:
            rule.stop_build = c.bool_value(spec["stop_build"], (*path, "stop_build"))
        if spec.get("reminders") is not None:
            reminders = _reminders(c, spec["reminders"], (*path, "reminders"), strict=True)
            rule.reminder_interval_minutes = reminders.get("interval_minutes")
            rule.reminder_backoff = reminders.get("backoff")
            rule.reminder_max_count = reminders.get("max_count")

    def _default(self, value: Any) -> None:
        path = ("default_approvers",)
        names = self.c.str_list(value, path, max_length=USERNAME_MAX)
        if names is None:
            return
        refs = [self._user_ref(n, (*path, i)) for i, n in enumerate(names)]
        approvers = [r for r in dict.fromkeys(refs) if r]
        if approvers:
            self.rules.append(RuleSpec(project=DEFAULT_RULE_PROJECT, is_default=True, approvers=approvers))

    # -- 跨项/跨库检查

    def _check_aliases(self) -> None:
        """别名必须唯一：与别的项目名或别的项目的别名相同，匹配结果就取决于顺序了（P7）。"""
        names: dict[str, str] = {}  # 小写名 → 所属项目
        for rule in self.rules:
            if not rule.environment:
                names[rule.project.lower()] = rule.project
        for rule in self.db_rules:
            if rule.source == Source.ADMIN and rule.is_active and not rule.environment and not rule.is_default:
                names.setdefault(rule.project.lower(), rule.project)
                for alias in rule.aliases:
                    names.setdefault(str(alias).lower(), rule.project)
        admin_aliases = {
            str(alias).lower(): r.project for r in self.db_rules
            if r.source == Source.ADMIN and r.is_active and not r.environment for alias in r.aliases
        }
        owners: dict[str, str] = {}
        for rule in self.rules:
            if rule.environment or rule.is_default:
                continue
            other = admin_aliases.get(rule.project.lower())
            if other is not None and other.lower() != rule.project.lower():
                self.c.error(("projects", rule.project), _("项目名「%(name)s」已是后台项目「%(other)s」的别名") % {
                    "name": rule.project, "other": other})
            for index, alias in enumerate(rule.aliases):
                path = ("projects", rule.project, "aliases", index)
                key = alias.lower()
                if key in names and names[key].lower() != rule.project.lower():
                    self.c.error(path, _("别名「%(alias)s」与项目「%(other)s」的名称或别名相同") % {
                        "alias": alias, "other": names[key]})
                elif key in owners:
                    self.c.error(path, _("别名「%(alias)s」已被项目「%(other)s」使用") % {
                        "alias": alias, "other": owners[key]})
                else:
                    owners[key] = rule.project

    def _check_admin_collisions(self) -> None:
        """后台手工建的记录永不被文件接管（同名时拒绝整份文件，并说清楚怎么办）。"""
        admin = Source.ADMIN
        by_name = {a.username.lower(): a for a in self.db_approvers}
        by_tg = {a.telegram_id: a for a in self.db_approvers if a.telegram_id is not None}
        by_tg_name = {a.telegram_username: a for a in self.db_approvers if a.telegram_username and a.source == admin}
        for username, user in self.users.items():
            existing = by_name.get(username)
            if existing is not None and existing.source == admin:
                self.c.error(("users", username), _(
                    "审批人「%(name)s」已在管理后台创建，配置文件不能接管它；请在后台删除该审批人，或从文件中去掉此用户"
                ) % {"name": username})
            namesake = by_tg_name.get(user.telegram_username) if user.telegram_username else None
            if namesake is not None and namesake.username.lower() != username:
                # 首次联系时按用户名绑定：两条记录同一个 Telegram 用户名，就不知道该绑给谁
                self.c.error(("users", username), _(
                    "Telegram 用户名 @%(tg)s 已属于后台创建的审批人「%(other)s」") % {
                    "tg": user.telegram_username, "other": namesake.username})
            holder = by_tg.get(user.telegram_id) if user.telegram_id is not None else None
            if holder is not None and holder.username.lower() != username and holder.source == admin:
                self.c.error(("users", username, "telegram_id"), _(
                    "telegram_id %(id)s 已属于后台创建的审批人「%(other)s」") % {
                    "id": user.telegram_id, "other": holder.username})
        db_roles = {r.key: r for r in self.db_roles}
        for key, role in self.roles.items():
            existing = db_roles.get(key)
            if role.defined and existing is not None and existing.source == admin:
                self.c.error(("roles", key), _(
                    "角色「%(key)s」已在管理后台创建，配置文件不能修改它；请改用别的标识，或去掉 roles 里的定义直接引用它"
                ) % {"key": key})
        db_rules = {(r.project.lower(), r.environment): r for r in self.db_rules}
        for rule in self.rules:
            existing = db_rules.get((rule.project.lower(), rule.environment))
            if existing is not None and existing.source == admin:
                path = ("default_approvers",) if rule.is_default else ("projects", rule.project)
                self.c.error(path, _(
                    "项目规则「%(rule)s」已在管理后台创建，配置文件不能接管它；请在后台删除该规则，或从文件中去掉它"
                ) % {"rule": existing})
            if rule.is_default:
                other = next((r for r in self.db_rules if r.is_default and r.source == admin and r.is_active), None)
                if other is not None and other.project != DEFAULT_RULE_PROJECT:
                    self.c.error(("default_approvers",), _(
                        "管理后台已有默认规则「%(rule)s」，配置文件不能再设默认审批人") % {"rule": other})

    def _check_required_approvals(self) -> None:
        """所需票数不能超过可用审批人数，否则审批永远通不过，只能等超时。"""
        role_members: dict[str, set[str]] = {}
        for user in self.users.values():
            role_members.setdefault(user.role, set()).add(user.username)
        for username, approver in self.admin_approvers.items():
            role_members.setdefault(approver.role.key, set()).add(username)

        def pool(rule: RuleSpec | None) -> set[str] | None:
            if rule is None or not (rule.approvers or rule.approver_roles):
                return None
            people = set(rule.approvers)
            for role in rule.approver_roles:
                people |= role_members.get(role, set())
            return people

        default = next((r for r in self.rules if r.is_default), None)
        bases = {r.project: r for r in self.rules if not r.environment and not r.is_default}
        for rule in self.rules:
            if rule.required_approvals is None:
                continue
            base = bases.get(rule.project) if rule.environment else None
            people = pool(rule)
            if people is None:
                people = pool(base)
            if people is None:
                people = pool(default) or set()
            if rule.required_approvals > max(len(people), 1):
                path = ("projects", rule.project)
                if rule.environment:
                    path = (*path, "environments", rule.environment)
                self.c.error((*path, "required_approvals"), _(
                    "需要 %(n)s 票同意，但只有 %(m)s 位可用审批人（%(names)s），审批永远无法通过") % {
                    "n": rule.required_approvals, "m": len(people), "names": "、".join(sorted(people)) or "-"})


def _reminders(c: _Collector, value: Any, path: tuple, *, strict: bool) -> dict[str, Any]:
    spec = c.mapping(value, path)
    if spec is None:
        return {}
    c.unknown_keys(spec, REMINDER_FIELDS, path, strict=strict)
    out: dict[str, Any] = {}
    if spec.get("interval_minutes") is not None:
        out["interval_minutes"] = c.int_value(spec["interval_minutes"], (*path, "interval_minutes"), minimum=1,
                                              maximum=24 * 60)
    if spec.get("backoff") is not None:
        backoff = spec["backoff"]
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not 1 <= backoff <= 10:
            c.error((*path, "backoff"), _("必须是 1 到 10 之间的数字（每次提醒间隔乘以它），实际是 %(value)s") % {
                "value": _show(backoff)})
        else:
            out["backoff"] = float(backoff)
    if spec.get("max_count") is not None:
        out["max_count"] = c.int_value(spec["max_count"], (*path, "max_count"), minimum=0, maximum=100)
    return {k: v for k, v in out.items() if v is not None}


def users_validate(data: dict[str, Any], *, file_label: str = "users.json") -> tuple[UsersConfig, list[str]]:
    """校验 users.json 的内容（读数据库但不写）。失败抛 ConfigError；返回 (配置, 警告)。"""
    validator = _UsersValidator(data, file_label)
    config = validator.validate()
    return config, validator.c.warnings


# ---------------------------------------------------------------- users.json：应用


def users_apply(config: UsersConfig) -> dict[str, int]:
    """把已校验的配置写进数据库。调用方负责事务；只动 source=file 的记录。"""
    summary = dict.fromkeys(
        ("roles_created", "roles_updated", "roles_deactivated", "users_created", "users_updated",
         "users_deactivated", "rules_created", "rules_updated", "rules_deactivated"), 0)
    roles = _apply_roles(config, summary)
    approvers = _apply_approvers(config, roles, summary)
    _apply_rules(config, roles, approvers, summary)
    # 角色最后停用：仍有启用的审批人（包括后台建的）在用的文件角色不停用
    in_use = set(Approver.objects.filter(is_active=True).values_list("role_id", flat=True))
    for role in Role.objects.filter(source=Source.FILE, is_active=True).exclude(key__in=list(config.roles)):
        if role.pk not in in_use:
            role.is_active = False
            role.save(update_fields=["is_active"])
            summary["roles_deactivated"] += 1
    return summary


def _save_changes(obj: Any, values: dict[str, Any]) -> bool:
    changed = [k for k, v in values.items() if getattr(obj, k) != v]
    for key in changed:
        setattr(obj, key, values[key])
    if changed:
        obj.save()
    return bool(changed)


def _apply_roles(config: UsersConfig, summary: dict[str, int]) -> dict[str, Role]:
    existing = {r.key: r for r in Role.objects.all()}
    result: dict[str, Role] = {}
    for key, spec in config.roles.items():
        role = existing.get(key)
        values = {"name": spec.name, "is_admin": spec.is_admin, "can_use_bot": spec.can_use_bot,
                  "can_approve": spec.can_approve, "is_active": True}
        if role is None:
            role = Role.objects.create(key=key, source=Source.FILE, **values)
            summary["roles_created"] += 1
        elif role.source == Source.FILE:
            if _save_changes(role, values):
                summary["roles_updated"] += 1
        # 后台建的角色只被引用，不被修改
        result[key] = role
    return result


def _apply_approvers(config: UsersConfig, roles: dict[str, Role], summary: dict[str, int]) -> dict[str, Approver]:
    existing = {a.username.lower(): a for a in Approver.objects.all()}
    # telegram_id 唯一：先把要被别的文件用户占用的 id 从原持有者（文件记录）上摘下来，避免唯一约束冲突
    wanted_ids = {u.telegram_id: name for name, u in config.users.items() if u.telegram_id is not None}
    released: set[int] = set()
    for holder in Approver.objects.filter(telegram_id__in=list(wanted_ids), source=Source.FILE):
        if holder.username.lower() != wanted_ids[holder.telegram_id]:
            holder.telegram_id = None
            holder.save(update_fields=["telegram_id"])
            released.add(holder.pk)
    result: dict[str, Approver] = {}
    for username, spec in config.users.items():
        values: dict[str, Any] = {
            "role": roles[spec.role], "display_name": spec.display_name, "telegram_username": spec.telegram_username,
            "email": spec.email, "jenkins_user": spec.jenkins_user, "projects": spec.projects,
            "environments": spec.environments, "is_active": True,
        }
        # 运行时按用户名绑定的 telegram_id 要保留：文件没写 id 时不动它
        if spec.telegram_id is not None:
            values["telegram_id"] = spec.telegram_id
        approver = existing.get(username)
        if approver is None:
            approver = Approver.objects.create(username=username, source=Source.FILE, **values)
            summary["users_created"] += 1
        else:
            if approver.pk in released:
                approver.refresh_from_db(fields=["telegram_id"])  # 内存里的旧 id 不能再写回去
            if _save_changes(approver, values):
                summary["users_updated"] += 1
        result[username] = approver
    for approver in Approver.objects.filter(source=Source.FILE, is_active=True):
        if approver.username.lower() not in config.users:
            approver.is_active = False
            approver.save(update_fields=["is_active", "updated_at"])
            summary["users_deactivated"] += 1
    return result


def _apply_rules(config: UsersConfig, roles: dict[str, Role], approvers: dict[str, Approver],
                 summary: dict[str, int]) -> None:
    existing = {(r.project.lower(), r.environment): r for r in ProjectRule.objects.all()}
    admin_people = {a.username.lower(): a for a in Approver.objects.filter(source=Source.ADMIN)}

    def person(name: str) -> Approver:
        return approvers.get(name) or admin_people[name]

    kept: set[int] = set()
    for spec in config.rules:
        values: dict[str, Any] = {
            "project": spec.project, "environment": spec.environment, "is_default": spec.is_default,
            "aliases": spec.aliases, "patterns": spec.patterns, "chat_id": spec.chat_id,
            "required_approvals": spec.required_approvals, "timeout_minutes": spec.timeout_minutes,
            "timeout_policy": spec.timeout_policy, "stop_build": spec.stop_build,
            "reminder_interval_minutes": spec.reminder_interval_minutes, "reminder_backoff": spec.reminder_backoff,
            "reminder_max_count": spec.reminder_max_count, "is_active": True,
        }
        rule = existing.get((spec.project.lower(), spec.environment))
        created = rule is None
        if rule is None:
            rule = ProjectRule.objects.create(source=Source.FILE, **values)
            summary["rules_created"] += 1
            changed = False
        else:
            changed = _save_changes(rule, values)
        m2m = {
            "approvers": {person(n).pk for n in spec.approvers},
            "owners": {person(n).pk for n in spec.owners},
            "approver_roles": {roles[k].pk for k in spec.approver_roles},
        }
        for attr, wanted in m2m.items():
            manager = getattr(rule, attr)
            if set(manager.values_list("pk", flat=True)) != wanted:
                manager.set(wanted)
                changed = True
        if changed and not created:
            summary["rules_updated"] += 1
        kept.add(rule.pk)
    for rule in ProjectRule.objects.filter(source=Source.FILE, is_active=True).exclude(pk__in=kept):
        rule.is_active = False
        rule.save(update_fields=["is_active", "updated_at"])
        summary["rules_deactivated"] += 1


# ---------------------------------------------------------------- app.json


def app_validate(data: dict[str, Any], *, file_label: str = "app.json") -> tuple[dict[str, Any], list[str]]:
    """校验 app.json，返回规范化后的内容（accounts.app_config 读取的形状）与警告。"""
    c = _Collector(file_label)
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    _reject_secrets(c, data, ())
    out: dict[str, Any] = {}
    known = ("approval", "reminders", "telegram", "retention")
    c.unknown_keys(data, known, (), strict=False)
    for section, value in data.items():
        if section not in known:
            out[section] = value  # 其他模块的配置：原样保存
    if "approval" in data:
        spec = c.mapping(data["approval"], ("approval",)) or {}
        c.unknown_keys(spec, ("timeout_minutes", "timeout_policy", "stop_build"), ("approval",))
        approval: dict[str, Any] = {}
        if spec.get("timeout_minutes") is not None:
            approval["timeout_minutes"] = c.int_value(spec["timeout_minutes"], ("approval", "timeout_minutes"),
                                                      minimum=1, maximum=MAX_TIMEOUT_MINUTES)
        if spec.get("timeout_policy") is not None:
            if spec["timeout_policy"] in TimeoutPolicy.values:
                approval["timeout_policy"] = spec["timeout_policy"]
            else:
                c.error(("approval", "timeout_policy"), _(
                    "未知的超时策略 %(value)s，只能是 reject（拒绝并终止构建）或 mark（仅标记）") % {
                    "value": _show(spec["timeout_policy"])})
        if spec.get("stop_build") is not None:
            approval["stop_build"] = c.bool_value(spec["stop_build"], ("approval", "stop_build"))
        out["approval"] = {k: v for k, v in approval.items() if v is not None}
    if "reminders" in data:
        out["reminders"] = _reminders(c, data["reminders"], ("reminders",), strict=True)
    if "telegram" in data:
        spec = c.mapping(data["telegram"], ("telegram",)) or {}
        telegram = dict(spec)
        c.unknown_keys(spec, ("default_chat_id", "allowed_chat_ids"), ("telegram",), strict=False)
        if spec.get("default_chat_id") is not None:
            chat = c.int_value(spec["default_chat_id"], ("telegram", "default_chat_id"),
                               what=_("（Telegram 群 ID，群组是负数，如 -1001234567890）"))
            if chat == 0:
                c.error(("telegram", "default_chat_id"), _("不能为 0"))
            telegram["default_chat_id"] = chat
        if spec.get("allowed_chat_ids") is not None:
            ids = spec["allowed_chat_ids"]
            if not isinstance(ids, list):
                c.error(("telegram", "allowed_chat_ids"), _("必须是整数列表"))
            else:
                for index, item in enumerate(ids):
                    c.int_value(item, ("telegram", "allowed_chat_ids", index), what=_("（Telegram 群 ID）"))
        out["telegram"] = telegram
    if "retention" in data:
        spec = c.mapping(data["retention"], ("retention",)) or {}
        c.unknown_keys(spec, ("approvals_days", "events_days", "build_logs_days", "build_results_days"),
                       ("retention",), strict=False)
        for key, value in spec.items():
            if key.endswith("_days"):
                # 0 = 永久保留（显式关闭这一类的清理）；缺省键用默认天数，见 app_config.retention_days
                c.int_value(value, ("retention", key), minimum=0, maximum=36500, what=_("（天数）"))
        out["retention"] = dict(spec)
    c.raise_if_errors()
    return out, c.warnings


def _reject_secrets(c: _Collector, value: Any, path: tuple) -> None:
    """C9：密钥只来自环境变量；写进 app.json 的密钥会随备份与仓库扩散。"""
    if isinstance(value, dict):
        for key, item in value.items():
            if SECRET_KEY_RE.search(key) and not key.endswith("_env") and isinstance(item, str) and item:
                c.error((*path, key), _("密钥不能写在配置文件里，请用环境变量（如 TELEGRAM_BOT_TOKEN、JENKINS_API_TOKEN）"))
            else:
                _reject_secrets(c, item, (*path, key))


# ---------------------------------------------------------------- 加载、备份、入口

# 进程内记住“已拒绝过的内容”：坏文件没改之前，周期任务不必每 30 秒重复报同一个错
_refused_checksums: dict[str, str] = {}


def _validate(name: str, data: dict[str, Any], label: str) -> tuple[Any, list[str]]:
    return users_validate(data, file_label=label) if name == USERS else app_validate(data, file_label=label)


def config_load(name: str, *, apply: bool = True, force: bool = True) -> LoadResult:
    """校验并（apply=True 时）应用一份配置文件。

    force=False 用于周期任务：内容与上次成功加载的相同就什么都不做（C5/C6）。
    apply=False 即 --check：只校验，数据库一行不写。
    """
    path = config_path(name)
    label = _file_label(path)
    result = LoadResult(name=name, path=label, status="missing", applying=apply)
    if not path.is_file():
        return result
    raw = path.read_bytes()
    result.checksum = hashlib.sha256(raw).hexdigest()
    result.warnings.extend(file_permission_warnings(path))
    previous = ConfigState.objects.filter(name=name).values_list("checksum", flat=True).first() or ""
    result.changed = result.checksum != previous
    if not force and (not result.changed or _refused_checksums.get(name) == result.checksum):
        result.status = "unchanged"
        if apply and not result.changed:
            # 坏文件被改回了上一个好配置：错误已不存在
            ConfigState.objects.filter(name=name).exclude(last_error="").update(last_error="", last_error_at=None)
        return result
    try:
        data = parse_json(raw, label)
        if not apply:
            _config, warnings = _validate(name, data, label)
            result.warnings.extend(warnings)
            result.status = "checked"
            return result
        with transaction.atomic():
            state, _created = ConfigState.objects.select_for_update().get_or_create(name=name)
            config, warnings = _validate(name, data, label)
            if name == USERS:
                result.summary = users_apply(config)
                stored = {k: v for k, v in data.items() if not k.startswith("_")}
            else:
                stored = config
                result.summary = {"keys": sum(len(v) if isinstance(v, dict) else 1 for v in config.values())}
            state.path = str(path)
            state.data = stored
            state.checksum = result.checksum
            state.loaded_at = timezone.now()
            state.last_error = ""
            state.last_error_at = None
            state.save()
        result.warnings.extend(warnings)
    except ConfigError as exc:
        result.status = "refused"
        result.errors = exc.errors
        if apply:
            _record_error(name, path, exc.errors)
            _refused_checksums[name] = result.checksum
        return result
    result.status = "applied"
    _refused_checksums.pop(name, None)
    if result.changed:
        _backup(name, raw, result.checksum)
    return result


def _record_error(name: str, path: Path, errors: list[str]) -> None:
    """坏文件只记错误，不碰 data/checksum：上一个好配置继续生效（C8）。"""
    with transaction.atomic():
        state, _created = ConfigState.objects.select_for_update().get_or_create(name=name)
        state.path = str(path)
        state.last_error = "\n".join(errors)
        state.last_error_at = timezone.now()
        state.save(update_fields=["path", "last_error", "last_error_at"])


def backup_dir() -> Path:
    return Path(getattr(settings, "CONFIG_BACKUP_DIR", Path(settings.VAR_DIR) / "config-backups"))


def _backup(name: str, raw: bytes, checksum: str) -> None:
    """C11：每份成功应用的新内容存一份带时间戳的副本，只留最近 20 份。备份失败不影响已生效的配置。"""
    folder = backup_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"{name}-{stamp}-{checksum[:8]}.json"
        target.write_bytes(raw)
        target.chmod(0o600)  # 里面有 Telegram id 与邮箱
        for old in sorted(folder.glob(f"{name}-*.json"))[:-BACKUPS_KEPT]:
            old.unlink(missing_ok=True)
    except OSError:
        logger.exception("配置备份失败：%s -> %s", name, folder)


def config_reload(*, apply: bool = True, force: bool = True) -> list[LoadResult]:
    """依次处理 users.json 与 app.json；两份互不影响（一份坏了另一份照常加载）。"""
    return [config_load(name, apply=apply, force=force) for name in CONFIG_NAMES]


def result_as_dict(result: LoadResult) -> dict[str, Any]:
    return asdict(result)
