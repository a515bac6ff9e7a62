"""权限检查（P9–P11）：每次决定都在那一刻重新检查，拒绝时说清楚原因。

返回 PermissionResult 而不是抛异常，调用方（服务层）决定怎样记录与回应。
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from django.utils.translation import gettext as _

from approvalbot.text import join_names

from .environments import normalize_environment
from .models import Approver
from .rules import ResolvedRule, resolve_rule


@dataclass(frozen=True)
class PermissionResult:
    allowed: bool
    code: str = "ok"
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = PermissionResult(True)


def _deny(code: str, reason: str) -> PermissionResult:
    return PermissionResult(False, code, reason)


def check_bot_access(approver: Approver | None) -> PermissionResult:
    """P10 第一维：能否使用机器人。"""
    if approver is None:
        return _deny("not_registered", _("你还不是审批系统的用户，请联系管理员把你加入 users.json 或后台。"))
    if not approver.is_active:
        return _deny("inactive", _("你的审批账号已停用。"))
    role = approver.role
    if not role.is_active:
        return _deny("role_inactive", _("你的角色「%(role)s」已停用。") % {"role": role})
    if not (role.can_use_bot or role.is_admin):
        return _deny("no_bot_access", _("你的角色「%(role)s」不能使用机器人。") % {"role": role})
    return ALLOWED


def matches_any(project: str, patterns: list[str]) -> bool:
    """项目名（带文件夹时也用最后一段）是否匹配其中一个名字或通配模式，不分大小写。"""
    names = {project.lower(), project.rsplit("/", 1)[-1].lower()}
    return any(fnmatch.fnmatchcase(n, str(p).lower()) for p in patterns for n in names)


def role_ids(approver: Approver) -> set[int]:
    """此人担任的全部启用角色：主角色加兼任角色（extra_roles 预取过就不再查库）。"""
    ids = {approver.role_id}
    ids.update(r.pk for r in approver.extra_roles.all() if r.is_active)
    return ids


def check_can_approve(
    approver: Approver | None,
    *,
    project: str,
    environment: str,
    rule: ResolvedRule | None = None,
) -> PermissionResult:
    """P10 后两维：能否审批，以及能否审批这个项目/环境。管理员角色拥有全部权限（P4）。"""
    access = check_bot_access(approver)
    if not access:
        return access
    assert approver is not None
    role = approver.role
    if role.is_admin:
        return ALLOWED
    if not role.can_approve:
        return _deny("role_cannot_approve", _("你的角色「%(role)s」没有审批权限。") % {"role": role})
    environment = normalize_environment(environment)
    if approver.projects and not matches_any(project, approver.projects):
        return _deny(
            "project_not_allowed",
            _("你的审批范围（%(scope)s）不包含项目「%(project)s」。")
            % {"scope": join_names(approver.projects), "project": project},
        )
    if approver.environments and environment not in {normalize_environment(e) for e in approver.environments}:
        return _deny(
            "environment_not_allowed",
            _("你只能审批这些环境：%(envs)s；本次是「%(env)s」。")
            % {"envs": join_names(approver.environments), "env": environment},
        )
    rule = rule or resolve_rule(project, environment)
    if rule.restricts_approvers:
        if any(a.pk == approver.pk for a in rule.approvers):
            return ALLOWED
        if rule.approver_roles and role_ids(approver) & {r.pk for r in rule.approver_roles}:
            return ALLOWED
        names = [a.label for a in rule.approvers] + [_("角色「%(role)s」") % {"role": r} for r in rule.approver_roles]
        if rule.matched and rule.approvers_from_project:
            return _deny(
                "not_project_approver",
                _("项目「%(project)s」的「%(env)s」环境只允许以下人员审批：%(names)s。")
                % {"project": rule.project, "env": environment or "-", "names": join_names(names)},
            )
        return _deny(
            "not_default_approver",
            _("项目「%(project)s」没有专门的审批规则，只有默认审批人可以审批：%(names)s。")
            % {"project": project, "names": join_names(names)},
        )
    return _deny(
        "no_approvers_configured",
        _("项目「%(project)s」没有配置审批人，也没有默认审批人，只有管理员可以审批。") % {"project": project},
    )
