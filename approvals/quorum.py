"""法定票（X1）：同意票数够了、必需角色每个都有人，才算通过；封版期间的紧急发布另要一位管理员（X4）。

一票算给“为谁投的”那个人（代投时是委托人）；一人兼任几个角色也只填一个名额（二分图最大匹配），
所以结果与投票先后无关。自己也有权的受托人那一票，两人的角色都能填（仍只占一个名额）。
紧急发布的管理员名额例外：只有管理员本人的票能填。
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Prefetch
from django.utils.translation import gettext as _

from accounts.matching import match_slots
from accounts.models import Approver, Role
from accounts.permissions import check_can_approve, role_ids
from accounts.rules import ResolvedRule, resolve_rule

from .models import Approval, Vote

ADMIN_SLOT = "admin"


@dataclass(frozen=True)
class Quorum:
    received: int  # 同意票数
    required: int
    missing: tuple[str, ...] = ()  # 还没人填的名额（角色名；紧急发布的“管理员”）

    @property
    def complete(self) -> bool:
        return self.received >= self.required and not self.missing


def approve_votes(approval: Approval) -> list[Vote]:
    """同意票，连同计算名额要用的人与角色（一条查询加两次预取）。"""
    people = Approver.objects.select_related("role").prefetch_related("extra_roles")
    return list(Vote.objects.filter(approval=approval, decision=Vote.Decision.APPROVE)
                .prefetch_related(Prefetch("approver", queryset=people), Prefetch("on_behalf_of", queryset=people))
                .order_by("created_at", "id"))


def _principal(vote: Vote) -> Approver:
    return vote.on_behalf_of if vote.on_behalf_of_id else vote.approver


def _own_right(approval: Approval, voter: Approver, rule: ResolvedRule) -> bool:
    """代投的人自己是否也有权审批这一条：有的话，他自己的角色也能填名额（见 policy.best_hat）。"""
    return bool(check_can_approve(voter, project=approval.project, environment=approval.environment, rule=rule))


def quorum_state(approval: Approval, *, votes: Iterable[Vote] | None = None,
                 required_roles: list[Role] | None = None, rule: ResolvedRule | None = None) -> Quorum:
    """此刻的法定票状态。votes 缺省时查库（只有同意票算数）；rule 缺省时需要时再解析。"""
    if required_roles is None:
        keys = list(approval.required_roles or [])
        found = {r.key: r for r in Role.objects.filter(key__in=keys)} if keys else {}
        roles = [found[k] for k in keys if k in found]
    else:
        roles = required_roles
    if votes is None:
        votes = approve_votes(approval) if roles or approval.admin_approval_required else None
    if votes is None:
        received = Vote.objects.filter(approval=approval, decision=Vote.Decision.APPROVE).count()
        return Quorum(received, approval.required_approvals)
    approving = [v for v in votes if v.decision == Vote.Decision.APPROVE]
    slots: list[object] = [role.pk for role in roles]
    labels: dict[object, str] = {role.pk: role.name or role.key for role in roles}
    if approval.admin_approval_required:
        slots.append(ADMIN_SLOT)
        labels[ADMIN_SLOT] = _("管理员")
    holders: dict[object, set[int]] = {slot: set() for slot in slots}
    if rule is None and roles and any(v.on_behalf_of_id for v in approving):
        rule = resolve_rule(approval.project, approval.environment)  # 有代投的票才需要，一次
    for vote in approving:
        person = _principal(vote)
        held = role_ids(person)
        if vote.on_behalf_of_id and roles and _own_right(approval, vote.approver, rule):
            # 自己也有权的受托人：一票（一个名额）可以填两人任一人的角色
            held |= role_ids(vote.approver)
        for role in roles:
            if role.pk in held:
                holders[role.pk].add(person.pk)
        # 紧急发布的那一位管理员要本人投票：委托来的权限只算审批票，破例放行不能转手
        voter = vote.approver
        if ADMIN_SLOT in holders and voter.role.is_admin and voter.role.is_active:
            holders[ADMIN_SLOT].add(person.pk)
    filled = match_slots(slots, holders)
    return Quorum(len(approving), approval.required_approvals,
                  tuple(labels[slot] for slot in slots if slot not in filled))
