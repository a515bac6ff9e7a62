"""把解析好的 JSON 变成可以应用的配置：先按 schema 校验形状，再做跨记录检查，问题一次报完。

users.json 的每条角色、用户、项目单独校验：一条记录写错，别的记录里的问题（比如引用了不存在的人）照样报出来。
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import checks
from .checks import Existing
from .errors import Collector, Path, unknown_key_message
from .schema import (
    DETAILED_KEYS,
    AppFile,
    OpenSection,
    ProjectEntry,
    RoleEntry,
    RuleEntry,
    UserEntry,
    UsersFile,
    strip_comments,
)
from .specs import ADMIN_ROLE_KEY, DEFAULT_RULE_PROJECT, RoleSpec, RuleSpec, UsersConfig, UserSpec


def users_validate(data: dict[str, Any], *, file_label: str = "users.json") -> tuple[UsersConfig, list[str]]:
    """校验 users.json 的内容（读数据库但不写）。失败抛 ConfigError；返回 (配置, 警告)。"""
    c = Collector(file_label)
    existing = Existing.load()
    data = strip_comments(data)
    if any(key in data for key in DETAILED_KEYS):
        top = c.validate(UsersFile, data)
        if top is None:  # 顶层连去掉出错的键都救不回来：先把结构改对
            c.raise_if_errors()
        sections, users_base = top, ("users",)
    else:
        # 简单格式 {"alice": "admin"}：顶层就是用户表（P1）
        sections, users_base = UsersFile.model_construct(users=data), ()
    roles = _roles(c, sections.roles)
    users, paths = _users(c, sections.users, users_base, roles, existing)
    rules = _projects(c, sections.projects, roles, users, existing)
    checks.aliases_check(c, rules, existing)
    if sections.default_approvers is not None:
        approvers = checks.user_refs_resolve(c, sections.default_approvers, ("default_approvers",), users, existing)
        if approvers:
            rules.append(RuleSpec(project=DEFAULT_RULE_PROJECT, is_default=True, approvers=approvers))
    checks.telegram_identity_check(c, users, paths)
    checks.admin_users_collisions_check(c, users, existing)
    checks.admin_roles_collisions_check(c, roles, existing)
    checks.admin_rules_collisions_check(c, rules, existing)
    checks.required_approvals_check(c, users, rules, existing)
    checks.required_roles_check(c, users, rules, existing)
    c.raise_if_errors()
    return UsersConfig(roles=roles, users=users, rules=rules), c.warnings


def _roles(c: Collector, records: dict[str, Any]) -> dict[str, RoleSpec]:
    roles: dict[str, RoleSpec] = {}
    for key, value in records.items():
        path = ("roles", key)
        if not checks.role_key_check(c, key, path):
            continue
        entry = c.validate(RoleEntry, value, path)
        if entry is None:
            continue
        roles[key] = RoleSpec(
            key=key, name=entry.name or key, defined=True,
            is_admin=entry.is_admin if entry.is_admin is not None else key == ADMIN_ROLE_KEY,
            can_use_bot=entry.can_use_bot if entry.can_use_bot is not None else True,
            can_approve=entry.can_approve if entry.can_approve is not None else True,
        )
    return roles


def _users(c: Collector, records: dict[str, Any], base: Path, roles: dict[str, RoleSpec],
           existing: Existing) -> tuple[dict[str, UserSpec], dict[str, Path]]:
    users: dict[str, UserSpec] = {}
    paths: dict[str, Path] = {}
    seen: set[str] = set()
    for raw_key, value in records.items():
        path = (*base, raw_key)
        username = checks.username_check(c, raw_key, path, seen)
        if username is None:
            continue
        entry = c.validate(UserEntry, value, path)
        if entry is None:
            continue
        role = checks.role_resolve(c, roles, existing, entry.role, (*path, "role"), create=True)
        if role is None:
            continue
        extra = [checks.role_resolve(c, roles, existing, r, (*path, "roles", i), create=True)
                 for i, r in enumerate(entry.roles)]
        users[username] = UserSpec(
            username=username, role=role, telegram_id=entry.telegram_id,
            telegram_username=(entry.telegram_username if entry.telegram_username is not None
                               else checks.default_telegram_username(username)),
            email=entry.email, display_name=entry.name, projects=entry.projects,
            environments=entry.environments, jenkins_user=entry.jenkins_user,
            extra_roles=[r for r in dict.fromkeys(extra) if r and r != role],
        )
        paths[username] = path
    return users, paths


def _projects(c: Collector, records: dict[str, Any], roles: dict[str, RoleSpec], users: dict[str, UserSpec],
              existing: Existing) -> list[RuleSpec]:
    rules: list[RuleSpec] = []
    seen: dict[str, str] = {}
    for raw_name, value in records.items():
        path = ("projects", raw_name)
        name = checks.project_name_check(c, raw_name, path, seen)
        if name is None:
            continue
        entry = c.validate(ProjectEntry, value, path)
        if entry is None:
            continue
        base = _rule(c, entry, RuleSpec(project=name), path, roles, users, existing)
        base.aliases = [a for a in entry.aliases if a.lower() != name.lower()]
        base.patterns = entry.patterns
        rules.append(base)
        seen_envs: dict[str, str] = {}
        for raw_env, env_entry in entry.environments.items():
            env_path = (*path, "environments", raw_env)
            env = checks.environment_name_check(c, raw_env, env_path, seen_envs)
            if env is not None:
                rules.append(_rule(c, env_entry, RuleSpec(project=name, environment=env), env_path, roles, users,
                                   existing))
    return rules


def _rule(c: Collector, entry: RuleEntry, rule: RuleSpec, path: Path, roles: dict[str, RoleSpec],
          users: dict[str, UserSpec], existing: Existing) -> RuleSpec:
    rule.approvers = checks.user_refs_resolve(c, entry.approvers, (*path, "approvers"), users, existing)
    rule.owners = checks.user_refs_resolve(c, entry.owners, (*path, "owners"), users, existing)
    refs = [checks.role_resolve(c, roles, existing, r, (*path, "approver_roles", i), create=False)
            for i, r in enumerate(entry.approver_roles)]
    rule.approver_roles = [r for r in dict.fromkeys(refs) if r]
    rule.chat_id = entry.chat_id
    rule.required_approvals = entry.required_approvals
    rule.timeout_minutes = entry.timeout_minutes
    rule.timeout_policy = entry.timeout_policy or ""
    rule.stop_build = entry.stop_build
    if entry.reminders is not None:
        rule.reminder_interval_minutes = entry.reminders.interval_minutes
        rule.reminder_backoff = entry.reminders.backoff
        rule.reminder_max_count = entry.reminders.max_count
    _policy(c, entry, rule, path, roles, users, existing)
    return rule


def _policy(c: Collector, entry: RuleEntry, rule: RuleSpec, path: Path, roles: dict[str, RoleSpec],
            users: dict[str, UserSpec], existing: Existing) -> None:
    """发布策略的键：必需角色（X1）、升级（X15）、封版开始时的待审批（X4）。"""
    refs = [checks.role_resolve(c, roles, existing, r, (*path, "required_roles", i), create=False)
            for i, r in enumerate(entry.required_roles)]
    rule.required_roles = [r for r in dict.fromkeys(refs) if r]
    rule.freeze_pending = entry.freeze_pending or ""
    escalation = entry.escalation
    if escalation is None:
        return
    where = (*path, "escalation")
    rule.escalation_approvers = checks.user_refs_resolve(c, escalation.approvers, (*where, "approvers"), users,
                                                         existing)
    refs = [checks.role_resolve(c, roles, existing, r, (*where, "roles", i), create=False)
            for i, r in enumerate(escalation.roles)]
    rule.escalation_roles = [r for r in dict.fromkeys(refs) if r]
    rule.escalate_after_reminders = escalation.after_reminders
    rule.escalate_before_minutes = escalation.before_deadline_minutes


# ---------------------------------------------------------------- app.json


def app_validate(data: dict[str, Any], *, file_label: str = "app.json") -> tuple[dict[str, Any], list[str]]:
    """校验 app.json，返回规范化后的内容（accounts.app_config 读取的形状）与警告。"""
    c = Collector(file_label)
    data = strip_comments(data)
    checks.secrets_check(c, data)
    app = c.validate(AppFile, data)
    if app is not None and app.freeze is not None:
        checks.freeze_keys_check(c, app.freeze.windows)
    c.raise_if_errors()
    _unknown_keys_warn(c, app, ())
    out: dict[str, Any] = {}
    extra = app.model_extra or {}
    for section in data:
        value = extra[section] if section in extra else getattr(app, section)
        if isinstance(value, OpenSection):
            out[section] = value.model_dump(exclude_unset=True)  # 连同不认识的键原样保存，留给其他模块
            _unknown_keys_warn(c, value, (section,))
        elif isinstance(value, BaseModel):
            out[section] = value.model_dump(exclude_none=True)
        else:
            out[section] = value  # 其他模块的分区：原样保存
    return out, c.warnings


def _unknown_keys_warn(c: Collector, model: BaseModel, path: Path) -> None:
    for key in model.model_extra or {}:
        c.warn((*path, key), unknown_key_message(key, type(model)))
