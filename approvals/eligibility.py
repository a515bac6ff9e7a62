"""谁此刻可以对一条审批投票（selectors read）：/pending 的待办、提醒点名谁、超时通知里谁没投票，都问这里。

规则每个（项目, 环境）只解析一次，按角色授权的审批人每组角色只查一次：一次扫描几百条审批也只有常数次查询。
"""

from __future__ import annotations

from django.db.models import Prefetch
from django.utils import timezone

from accounts.models import Approver, ProjectRule
from accounts.permissions import check_can_approve
from accounts.rules import ResolvedRule, resolve_rule

from .models import Approval, Status, Vote
from .services import is_requester


class Eligibility:
    """一次请求或一次任务内的缓存：规则、角色成员、管理员。对象用完即弃（规则可能随配置变化）。"""

    def __init__(self) -> None:
        self._rules = list(
            ProjectRule.objects.filter(is_active=True).prefetch_related("approvers__role", "approver_roles", "owners")
        )
        self._resolved: dict[tuple[str, str], ResolvedRule] = {}
        self._by_roles: dict[tuple[int, ...], list[Approver]] = {}
        self._admins: list[Approver] | None = None

    def rule(self, project: str, environment: str) -> ResolvedRule:
        key = (project, environment)
        if key not in self._resolved:
            self._resolved[key] = resolve_rule(project, environment, rules=self._rules)
        return self._resolved[key]

    def may_vote(self, approval: Approval, approver: Approver, *, voted: set[int] | None = None) -> bool:
        """此人此刻能否投这一票：有权限（P9）、不是发起人（X2）、还没投过。voted 是已投票的审批人 id。"""
        if voted is None:
            voted = {v.approver_id for v in approval.votes.all()}
        if approver.pk in voted or is_requester(approval, approver):
            return False
        rule = self.rule(approval.project, approval.environment)
        return bool(check_can_approve(approver, project=approval.project, environment=approval.environment,
                                      rule=rule))

    def candidates(self, approval: Approval) -> list[Approver]:
        """规则点名的审批人与角色成员；规则没配审批人时只有管理员能批（P4），就是管理员。"""
        rule = self.rule(approval.project, approval.environment)
        people = list(rule.approvers)
        if rule.approver_roles:
            key = tuple(sorted(r.pk for r in rule.approver_roles))
            if key not in self._by_roles:
                self._by_roles[key] = list(
                    Approver.objects.filter(is_active=True, role__in=key).select_related("role").order_by("username")
                )
            people += self._by_roles[key]
        if not people:
            if self._admins is None:
                self._admins = list(
                    Approver.objects.filter(is_active=True, role__is_admin=True, role__is_active=True)
                    .select_related("role").order_by("username")
                )
            people = self._admins
        return people

    def waiting(self, approval: Approval) -> list[Approver]:
        """此刻有权投票、还没投票、又不是发起人的审批人（提醒点名的对象，R5）。"""
        voted = {v.approver_id for v in approval.votes.all()}
        seen: set[int] = set()
        result = []
        for person in self.candidates(approval):
            if person.pk not in seen and self.may_vote(approval, person, voted=voted):
                seen.add(person.pk)
                result.append(person)
        return result

    def owners(self, project: str, environment: str) -> list[Approver]:
        return list(self.rule(project, environment).owners)


def approvals_pending_for_approver(approver: Approver, *, limit: int = 500) -> list[Approval]:
    """此人此刻可以投票的待审批（/pending）：最早截止的在前。"""
    candidates = (
        Approval.objects.filter(status=Status.PENDING, expires_at__gt=timezone.now())
        .exclude(votes__approver=approver)
        .select_related("requester")
        .prefetch_related(Prefetch("votes", queryset=Vote.objects.only("approval_id", "approver_id")))
        .order_by("expires_at", "id")[:limit]
    )
    eligibility = Eligibility()
    return [a for a in candidates if eligibility.may_vote(a, approver)]
