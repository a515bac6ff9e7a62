"""跨记录的检查：单条记录的形状由 schema.py 管，这里管记录之间、文件与数据库之间的关系。

每个检查是一个小函数：把问题记进 Collector，返回规范化后的值（有错时返回 None）。
数据库只读：后台手工建的（source=admin）记录永不被文件接管，同名时拒绝整份文件并说清楚怎么办。
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _

from approvalbot.text import join_names

from ..environments import normalize_environment
from ..matching import match_slots
from ..models import Approver, ProjectRule, Role, Source
from .errors import Collector, Path
from .schema import TELEGRAM_USERNAME_RE, USERNAME_MAX
from .specs import ADMIN_ROLE_KEY, DEFAULT_RULE_PROJECT, RoleSpec, RuleSpec, UserSpec

ROLE_KEY_RE = re.compile(r"^[\w-]{1,64}$")  # 与 Role.key（允许中文的 SlugField）一致
# 没在 roles 里定义时，这些写法都指内置管理员角色（P4）
ADMIN_ROLE_ALIASES = {"admin", "管理员"}
PROJECT_MAX = 200
ENVIRONMENT_MAX = 32
FREEZE_KEY_RE = re.compile(r"^[\w.-]{1,64}$")
SECRET_KEY_RE = re.compile(r"(token|secret|password|passwd|api_key)", re.IGNORECASE)


@dataclass
class Existing:
    """数据库现状，一次查询，后面全在内存里比对。"""

    roles: list[Role]
    approvers: list[Approver]
    rules: list[ProjectRule]
    admin_approvers: dict[str, Approver] = field(init=False)  # 小写用户名 → 启用的后台审批人

    def __post_init__(self) -> None:
        self.admin_approvers = {
            a.username.lower(): a for a in self.approvers if a.source == Source.ADMIN and a.is_active
        }

    @classmethod
    def load(cls) -> Existing:
        return cls(roles=list(Role.objects.all()), approvers=list(Approver.objects.select_related("role").prefetch_related("extra_roles")),
                   rules=list(ProjectRule.objects.all()))


def secrets_check(c: Collector, value: Any, path: Path = ()) -> None:
    """C9：密钥只来自环境变量；写进配置文件的密钥会随备份与仓库扩散。"""
    if isinstance(value, dict):
        for key, item in value.items():
            if SECRET_KEY_RE.search(key) and not key.endswith("_env") and isinstance(item, str) and item:
                c.error((*path, key), _("密钥不能写在配置文件里，请用环境变量（如 TELEGRAM_BOT_TOKEN、JENKINS_API_TOKEN）"))
            else:
                secrets_check(c, item, (*path, key))


# ---------------------------------------------------------------- 记录的键


def username_normalize(value: str) -> str:
    return value.strip().lstrip("@").lower()


def username_check(c: Collector, raw: str, path: Path, seen: set[str]) -> str | None:
    """用户表的键：去掉 @、不区分大小写；规范化后重名算重复定义。"""
    username = username_normalize(raw)
    if not username or len(username) > USERNAME_MAX or any(ch.isspace() for ch in username):
        c.error(path, _("用户名不能为空、不能含空白、最多 %(max)s 个字符") % {"max": USERNAME_MAX})
        return None
    if username in seen:
        c.error(path, _("用户「%(name)s」重复定义（用户名不区分大小写，@ 可省略）") % {"name": username})
        return None
    seen.add(username)
    return username


def role_key_check(c: Collector, key: str, path: Path) -> bool:
    if ROLE_KEY_RE.match(key):
        return True
    c.error(path, _("角色标识只能包含文字、数字、下划线或连字符（最多 64 个字符）"))
    return False


def project_name_check(c: Collector, raw: str, path: Path, seen: dict[str, str]) -> str | None:
    """项目名不区分大小写；「*」留给默认审批人。"""
    name = raw.strip()
    if not name or len(name) > PROJECT_MAX:
        c.error(path, _("项目名不能为空，最多 %(max)s 个字符") % {"max": PROJECT_MAX})
        return None
    if name == DEFAULT_RULE_PROJECT:
        c.error(path, _("「*」保留给默认审批人，请用顶层的 default_approvers"))
        return None
    if name.lower() in seen:
        c.error(path, _("项目「%(name)s」与「%(other)s」重复（项目名不区分大小写）") % {
            "name": name, "other": seen[name.lower()]})
        return None
    seen[name.lower()] = name
    return name


def environment_name_check(c: Collector, raw: str, path: Path, seen: dict[str, str]) -> str | None:
    """环境名先归一化（生产 → production）：同一个环境写两遍，哪条生效就取决于顺序了。"""
    env = normalize_environment(raw)
    if not env or len(env) > ENVIRONMENT_MAX:
        c.error(path, _("环境名不能为空，最多 32 个字符"))
        return None
    if env in seen:
        c.error(path, _("环境「%(raw)s」与「%(other)s」是同一个环境（%(env)s）") % {
            "raw": raw, "other": seen[env], "env": env})
        return None
    seen[env] = raw
    return env


# ---------------------------------------------------------------- 引用


def role_resolve(c: Collector, roles: dict[str, RoleSpec], existing: Existing, text: str, path: Path, *,
                 create: bool) -> str | None:
    """把用户或项目里写的角色（标识或名称）解析成角色标识，必要时把被引用的角色加进 roles。

    create=False 时不认识就报错（项目里的角色多半是笔误）；create=True 时成为可审批的自定义角色（P3）。
    """
    if text in roles:
        return text
    for spec in roles.values():
        if spec.defined and spec.name == text:
            return spec.key
    for role in existing.roles:
        if role.key == text or role.name == text:
            if role.source == Source.ADMIN:
                # 后台建的角色：照原样引用，应用时不修改
                spec = RoleSpec(key=role.key, name=role.name, is_admin=role.is_admin,
                                can_use_bot=role.can_use_bot, can_approve=role.can_approve)
            else:
                # 文件里曾定义、现在只被引用的角色：回到“可审批的自定义角色”（P3）；保留名称，按名称引用才稳定
                spec = RoleSpec(key=role.key, name=role.name, is_admin=role.key == ADMIN_ROLE_KEY)
            roles.setdefault(role.key, spec)
            return role.key
    if text.lower() in ADMIN_ROLE_ALIASES:
        roles[ADMIN_ROLE_KEY] = RoleSpec(key=ADMIN_ROLE_KEY, name=_("管理员"), is_admin=True)
        return ADMIN_ROLE_KEY
    if not create:
        c.error(path, _("未知角色「%(role)s」：既没有在 roles 中定义，也没有用户使用它") % {"role": text})
        return None
    if not ROLE_KEY_RE.match(text):
        c.error(path, _("角色名「%(role)s」不合法：只能包含文字、数字、下划线或连字符，不能有空格") % {"role": text})
        return None
    roles[text] = RoleSpec(key=text, name=text)
    return text


def user_refs_resolve(c: Collector, names: list[str], path: Path, users: dict[str, UserSpec],
                      existing: Existing) -> list[str]:
    """审批人/负责人引用：必须是文件里的用户或后台建的启用审批人。返回认得的（规范化、去重）。"""
    found: list[str] = []
    for index, name in enumerate(names):
        username = username_normalize(name)
        if username in users or username in existing.admin_approvers:
            found.append(username)
        else:
            c.error((*path, index), _("用户「%(name)s」未在 users 中定义（也不是后台创建的审批人）") % {"name": username})
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------- 文件内的重复


def telegram_identity_check(c: Collector, users: dict[str, UserSpec], paths: dict[str, Path]) -> None:
    """同一个 Telegram 身份只能属于一个人；认不出来的人提醒一下（能加载，但机器人找不到他）。"""
    by_id: dict[int, str] = {}
    by_name: dict[str, str] = {}
    for username, user in users.items():
        path = paths[username]
        if user.telegram_id is not None:
            other = by_id.setdefault(user.telegram_id, username)
            if other != username:
                c.error((*path, "telegram_id"), _("telegram_id %(id)s 已被用户「%(other)s」使用") % {
                    "id": user.telegram_id, "other": other})
        if user.telegram_username:
            other = by_name.setdefault(user.telegram_username, username)
            if other != username:
                c.error(path, _("Telegram 用户名 @%(tg)s 已被用户「%(other)s」使用") % {
                    "tg": user.telegram_username, "other": other})
        elif user.telegram_id is None:
            c.warn(path, _("既没有 telegram_id，用户名也不是合法的 Telegram 用户名，此人无法在 Telegram 中被识别"))


def default_telegram_username(username: str) -> str:
    """没写 telegram_username 时，用户表的键就是 Telegram 用户名（如果它合法）。"""
    return username if TELEGRAM_USERNAME_RE.match(username) else ""


def aliases_check(c: Collector, rules: list[RuleSpec], existing: Existing) -> None:
    """别名必须唯一：与别的项目名或别的项目的别名相同，匹配结果就取决于顺序了（P7）。"""
    bases = [r for r in rules if not r.environment and not r.is_default]
    names = {r.project.lower(): r.project for r in bases}  # 小写名 → 所属项目
    admin_rules = [r for r in existing.rules if r.source == Source.ADMIN and r.is_active and not r.environment]
    for rule in admin_rules:
        if not rule.is_default:
            names.setdefault(rule.project.lower(), rule.project)
            for alias in rule.aliases:
                names.setdefault(str(alias).lower(), rule.project)
    admin_aliases = {str(alias).lower(): r.project for r in admin_rules for alias in r.aliases}
    owners: dict[str, str] = {}
    for rule in bases:
        other = admin_aliases.get(rule.project.lower())
        if other is not None and other.lower() != rule.project.lower():
            c.error(("projects", rule.project), _("项目名「%(name)s」已是后台项目「%(other)s」的别名") % {
                "name": rule.project, "other": other})
        for index, alias in enumerate(rule.aliases):
            path = ("projects", rule.project, "aliases", index)
            key = alias.lower()
            if key in names and names[key].lower() != rule.project.lower():
                c.error(path, _("别名「%(alias)s」与项目「%(other)s」的名称或别名相同") % {
                    "alias": alias, "other": names[key]})
            elif key in owners:
                c.error(path, _("别名「%(alias)s」已被项目「%(other)s」使用") % {"alias": alias, "other": owners[key]})
            else:
                owners[key] = rule.project


# ---------------------------------------------------------------- 与后台记录冲突


def admin_users_collisions_check(c: Collector, users: dict[str, UserSpec], existing: Existing) -> None:
    """文件用户与后台审批人同名、同 Telegram id 或同 Telegram 用户名。"""
    admin = Source.ADMIN
    by_name = {a.username.lower(): a for a in existing.approvers}
    by_tg = {a.telegram_id: a for a in existing.approvers if a.telegram_id is not None}
    by_tg_name = {a.telegram_username: a for a in existing.approvers if a.telegram_username and a.source == admin}
    for username, user in users.items():
        same = by_name.get(username)
        if same is not None and same.source == admin:
            c.error(("users", username), _(
                "审批人「%(name)s」已在管理后台创建，配置文件不能接管它；请在后台删除该审批人，或从文件中去掉此用户"
            ) % {"name": username})
        namesake = by_tg_name.get(user.telegram_username) if user.telegram_username else None
        if namesake is not None and namesake.username.lower() != username:
            # 首次联系时按用户名绑定：两条记录同一个 Telegram 用户名，就不知道该绑给谁
            c.error(("users", username), _("Telegram 用户名 @%(tg)s 已属于后台创建的审批人「%(other)s」") % {
                "tg": user.telegram_username, "other": namesake.username})
        holder = by_tg.get(user.telegram_id) if user.telegram_id is not None else None
        if holder is not None and holder.username.lower() != username and holder.source == admin:
            c.error(("users", username, "telegram_id"), _("telegram_id %(id)s 已属于后台创建的审批人「%(other)s」") % {
                "id": user.telegram_id, "other": holder.username})


def admin_roles_collisions_check(c: Collector, roles: dict[str, RoleSpec], existing: Existing) -> None:
    """文件在 roles 里定义了后台建的角色（只引用可以，修改不行）。"""
    admin_keys = {r.key for r in existing.roles if r.source == Source.ADMIN}
    for key, role in roles.items():
        if role.defined and key in admin_keys:
            c.error(("roles", key), _(
                "角色「%(key)s」已在管理后台创建，配置文件不能修改它；请改用别的标识，或去掉 roles 里的定义直接引用它"
            ) % {"key": key})


def admin_rules_collisions_check(c: Collector, rules: list[RuleSpec], existing: Existing) -> None:
    """文件规则与后台规则是同一个项目与环境，或文件要设默认审批人而后台已有默认规则。"""
    admin_rules = [r for r in existing.rules if r.source == Source.ADMIN]
    by_key = {(r.project.lower(), r.environment): r for r in admin_rules}
    admin_default = next((r for r in admin_rules if r.is_default and r.is_active), None)
    for rule in rules:
        path = ("default_approvers",) if rule.is_default else ("projects", rule.project)
        same = by_key.get((rule.project.lower(), rule.environment))
        if same is not None:
            c.error(path, _(
                "项目规则「%(rule)s」已在管理后台创建，配置文件不能接管它；请在后台删除该规则，或从文件中去掉它"
            ) % {"rule": same})
        if rule.is_default and admin_default is not None and admin_default.project != DEFAULT_RULE_PROJECT:
            c.error(path, _("管理后台已有默认规则「%(rule)s」，配置文件不能再设默认审批人") % {"rule": admin_default})


def _role_members(users: dict[str, UserSpec], existing: Existing) -> dict[str, set[str]]:
    """角色 → 担任它的人（主角色与兼任角色；文件里的人与后台建的启用审批人）。"""
    members: dict[str, set[str]] = {}
    for user in users.values():
        for role in (user.role, *user.extra_roles):
            members.setdefault(role, set()).add(user.username)
    for username, approver in existing.admin_approvers.items():
        members.setdefault(approver.role.key, set()).add(username)
        for role in approver.extra_roles.all():
            members.setdefault(role.key, set()).add(username)
    return members


def _approver_pools(users: dict[str, UserSpec], rules: list[RuleSpec],
                    existing: Existing) -> tuple[Callable[[RuleSpec], set[str]], dict[str, set[str]]]:
    """(rule → 能审批它的人, 角色 → 担任它的人)。能审批的人：规则自己点名的，否则项目基础规则的，
    否则默认审批人（与 resolve_rule 的层次一致）。"""
    members = _role_members(users, existing)
    default = next((r for r in rules if r.is_default), None)
    bases = {r.project: r for r in rules if not r.environment and not r.is_default}

    def named(rule: RuleSpec | None) -> set[str] | None:
        if rule is None or not (rule.approvers or rule.approver_roles):
            return None
        people = set(rule.approvers)
        for role in rule.approver_roles:
            people |= members.get(role, set())
        return people

    def pool(rule: RuleSpec) -> set[str]:
        base = bases.get(rule.project) if rule.environment else None
        for layer in (rule, base, default):
            people = named(layer)
            if people is not None:
                return people
        return set()

    return pool, members


def required_approvals_check(c: Collector, users: dict[str, UserSpec], rules: list[RuleSpec],
                             existing: Existing) -> None:
    """所需票数不能超过可用审批人数，否则审批永远通不过，只能等超时。"""
    pool, _members = _approver_pools(users, rules, existing)
    for rule in rules:
        if rule.required_approvals is None:
            continue
        people = pool(rule)
        if rule.required_approvals > max(len(people), 1):
            path: Path = ("projects", rule.project)
            if rule.environment:
                path = (*path, "environments", rule.environment)
            c.error((*path, "required_approvals"), _(
                "需要 %(n)s 票同意，但只有 %(m)s 位可用审批人（%(names)s），审批永远无法通过") % {
                "n": rule.required_approvals, "m": len(people), "names": join_names(sorted(people)) or "-"})


def required_roles_check(c: Collector, users: dict[str, UserSpec], rules: list[RuleSpec], existing: Existing) -> None:
    """X1：要求的每个角色都得由可审批的人里不同的人担任，否则审批永远无法通过。"""
    pool, members = _approver_pools(users, rules, existing)
    for rule in rules:
        if not rule.required_roles:
            continue
        people = pool(rule)
        # 没有点名任何审批人时只有管理员能批，无从预知是谁：只要求有人担任这个角色
        holders = {role: members.get(role, set()) & people if people else members.get(role, set())
                   for role in rule.required_roles}
        filled = match_slots(rule.required_roles, holders)
        path: Path = ("default_approvers",) if rule.is_default else ("projects", rule.project)
        if rule.environment:
            path = (*path, "environments", rule.environment)
        for index, role in enumerate(rule.required_roles):
            if role in filled:
                continue
            if not holders[role]:
                message = _("要求角色「%(role)s」的一票，但可审批的人（%(names)s）里没有人担任这个角色，审批永远无法通过") % {
                    "role": role, "names": join_names(sorted(people)) or "-"}
            else:
                message = _("角色「%(role)s」只能由已占用其他必需角色的人担任（一人只算一个角色），审批永远无法通过") % {
                    "role": role}
            c.error((*path, "required_roles", index), message)


def freeze_keys_check(c: Collector, windows: dict[str, Any]) -> None:
    """封版窗口的键是它在库里的标识（加载器按它同步），要短而稳定。"""
    for key in windows:
        if not FREEZE_KEY_RE.match(key):
            c.error(("freeze", "windows", key), _("窗口标识只能包含字母、数字、下划线、点或连字符（最多 64 个字符）"))
