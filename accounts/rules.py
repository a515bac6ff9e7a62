"""项目规则解析：把 Jenkins 的任务名映射到项目规则（P5–P8）。

匹配顺序：项目名精确匹配 > 别名 > 通配模式（越长越具体越优先）> 默认规则。
任务名带文件夹（folder/shop-backend）时，也用最后一段去匹配。
环境专属行覆盖基础行的非空字段。
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Prefetch

from .models import Approver, FreezePending, ProjectRule, Role, TimeoutPolicy


@dataclass
class ResolvedRule:
    """合并后的有效规则。matched=False 表示走的是默认规则/全局默认。"""

    project: str
    environment: str
    matched: bool
    base: ProjectRule | None = None
    override: ProjectRule | None = None
    approvers: list[Approver] = field(default_factory=list)
    approver_roles: list[Role] = field(default_factory=list)
    owners: list[Approver] = field(default_factory=list)
    chat_id: int | None = None
    required_approvals: int = 1
    timeout_minutes: int = 60
    timeout_policy: str = TimeoutPolicy.REJECT
    stop_build: bool = False
    reminder_interval_minutes: int = 5
    reminder_backoff: float = 1.5
    reminder_max_count: int = 6
    approvers_from_project: bool = False  # False：审批人来自默认规则
    required_roles: list[Role] = field(default_factory=list)  # X1：每个角色各要一票
    escalation_approvers: list[Approver] = field(default_factory=list)  # X15
    escalation_roles: list[Role] = field(default_factory=list)
    escalate_after_reminders: int | None = None
    escalate_before_minutes: int | None = None
    freeze_pending: str = FreezePending.WAIT  # X4：封版开始时待审批的怎么办

    @property
    def rule(self) -> ProjectRule | None:
        """审批记录关联的规则行：优先环境专属行。"""
        return self.override or self.base

    @property
    def restricts_approvers(self) -> bool:
        return bool(self.approvers or self.approver_roles)

    @property
    def escalates(self) -> bool:
        """有升级对象，也有升级时机。"""
        return bool((self.escalation_approvers or self.escalation_roles)
                    and (self.escalate_after_reminders or self.escalate_before_minutes))

    def reminder_policy(self) -> dict:
        return {
            "interval_minutes": self.reminder_interval_minutes,
            "backoff": self.reminder_backoff,
            "max_count": self.reminder_max_count,
        }


def _candidates(name: str) -> list[str]:
    name = name.strip().strip("/")
    names = [name.lower()]
    if "/" in name:
        names.append(name.rsplit("/", 1)[1].lower())
    return names


def match_project(name: str, rules: list[ProjectRule]) -> ProjectRule | None:
    """在基础规则（environment 为空）中找项目；没有返回 None。"""
    candidates = _candidates(name)
    base_rules = [r for r in rules if not r.environment and not r.is_default]
    for rule in base_rules:
        if rule.project.lower() in candidates:
            return rule
    for rule in base_rules:
        if any(alias.lower() in candidates for alias in rule.aliases):
            return rule
    best: tuple[int, ProjectRule] | None = None
    for rule in base_rules:
        for pattern in rule.patterns:
            if any(fnmatch.fnmatchcase(c, pattern.lower()) for c in candidates):
                if best is None or len(pattern) > best[0]:
                    best = (len(pattern), rule)
    return best[1] if best else None


def active_rules() -> list[ProjectRule]:
    """启用的规则连同解析要用的关联一次取全（Eligibility 等批量调用方也经这里），免得逐行查库；
    审批人连同主角色一起取回，不为角色另查一次：决定的路径上每条查询都算数。"""
    people = Approver.objects.select_related("role")
    return list(ProjectRule.objects.filter(is_active=True).prefetch_related(
        Prefetch("approvers", queryset=people), "approvers__extra_roles", "approver_roles", "owners",
        "required_roles", Prefetch("escalation_approvers", queryset=people), "escalation_roles"))


def resolve_rule(project: str, environment: str, *, rules: list[ProjectRule] | None = None) -> ResolvedRule:
    """按项目名（或任务名）和归一化环境解析出有效规则。"""
    from .app_config import app_defaults

    rules = active_rules() if rules is None else rules
    base = match_project(project, rules)
    default = next((r for r in rules if r.is_default and not r.environment), None)

    def env_row(row: ProjectRule | None) -> ProjectRule | None:
        if row is None or not environment:
            return None
        return next((r for r in rules if r.project == row.project and r.environment == environment), None)

    override = env_row(base)
    # 层层覆盖：默认规则 → 默认规则的环境行 → 项目规则 → 项目的环境行
    layers = [default, env_row(default), base, override]
    matched = base is not None
    defaults = app_defaults()
    resolved = ResolvedRule(
        project=base.project if base is not None else project,
        environment=environment,
        matched=matched,
        base=base or default,
        override=override if base is not None else env_row(default),
        timeout_minutes=defaults["timeout_minutes"],
        timeout_policy=defaults["timeout_policy"],
        stop_build=defaults["stop_build"],
        reminder_interval_minutes=defaults["reminder_interval_minutes"],
        reminder_backoff=defaults["reminder_backoff"],
        reminder_max_count=defaults["reminder_max_count"],
        chat_id=defaults["chat_id"],
        freeze_pending=defaults["freeze_pending"],
    )
    for layer in layers:
        if layer is None:
            continue
        approvers = [a for a in layer.approvers.all() if a.is_active]
        roles = [r for r in layer.approver_roles.all() if r.is_active]
        if approvers or roles:
            # 后一层指定了审批人就整体替换（不是合并）：生产可以比测试更严格；都没指定时用默认审批人（P8）
            resolved.approvers, resolved.approver_roles = approvers, roles
            resolved.approvers_from_project = layer in (base, override)
        owners = [a for a in layer.owners.all() if a.is_active]
        if owners:
            resolved.owners = owners
        for attr in (
            "chat_id",
            "required_approvals",
            "timeout_minutes",
            "reminder_interval_minutes",
            "reminder_backoff",
            "reminder_max_count",
            "stop_build",
        ):
            value = getattr(layer, attr)
            if value is not None:
                setattr(resolved, attr, value)
        if layer.timeout_policy:
            resolved.timeout_policy = layer.timeout_policy
        _apply_policy_layer(resolved, layer)
    if resolved.chat_id is None:
        resolved.chat_id = settings.TELEGRAM_DEFAULT_CHAT_ID
    return resolved


def _apply_policy_layer(resolved: ResolvedRule, layer: ProjectRule) -> None:
    """发布策略的字段同样层层覆盖：必需角色、升级对象各自整体替换，时机与封版策略按非空字段覆盖。"""
    roles = [r for r in layer.required_roles.all() if r.is_active]
    if roles:
        resolved.required_roles = roles
    people = [a for a in layer.escalation_approvers.all() if a.is_active]
    escalation_roles = [r for r in layer.escalation_roles.all() if r.is_active]
    if people or escalation_roles:
        resolved.escalation_approvers, resolved.escalation_roles = people, escalation_roles
    for attr in ("escalate_after_reminders", "escalate_before_minutes"):
        value = getattr(layer, attr)
        if value is not None:
            setattr(resolved, attr, value)
    if layer.freeze_pending:
        resolved.freeze_pending = layer.freeze_pending
