"""谁此刻可以对一条审批投票（selectors read）：/pending 的待办、提醒点名谁、超时通知里谁没投票，都问这里。

规则每个（项目, 环境）只解析一次，按角色授权的审批人每组角色只查一次：一次扫描几百条审批也只有常数次查询。
"""

from __future__ import annotations

from django.db.models import Prefetch, Q, prefetch_related_objects
from django.utils import timezone

from accounts.delegations import delegations_active
from accounts.models import Approver, Delegation
from accounts.rules import ResolvedRule, active_rules, resolve_rule

from .models import Approval, Status, Vote
from .policy import already_voted_message, decision_right, earlier_vote, escalated_ids, usable_delegations


class Eligibility:
    """一次请求或一次任务内的缓存：规则、角色成员、管理员。对象用完即弃（规则可能随配置变化）。"""

    def __init__(self) -> None:
        self._rules = active_rules()
        self._resolved: dict[tuple[str, str], ResolvedRule] = {}
        self._by_roles: dict[tuple[int, ...], list[Approver]] = {}
        self._admins: list[Approver] | None = None
        self._delegations: list[Delegation] | None = None

    @property
    def delegations(self) -> list[Delegation]:
        """此刻有效的委托（X16），第一次用到时查一次。"""
        if self._delegations is None:
            self._delegations = delegations_active()
        return self._delegations

    def rule(self, project: str, environment: str) -> ResolvedRule:
        key = (project, environment)
        if key not in self._resolved:
            self._resolved[key] = resolve_rule(project, environment, rules=self._rules)
        return self._resolved[key]

    def may_vote(self, approval: Approval, approver: Approver, *, voted: set[int] | None = None) -> bool:
        """此人此刻能否投这一票：有权（自己的、升级得来的或受托的，见 approvals.policy）、不是发起人（X2）、
        自己与合算一人的委托方都还没投过。voted 是已投票的审批人 id（省掉一次遍历）。"""
        if voted is not None and approver.pk in voted:
            return False
        return not self.why_not(approval, approver)

    def why_not(self, approval: Approval, approver: Approver) -> str:
        """此人此刻不能投这一票的原因（与服务层拒绝时说的同一句）；能投时为空串。不看审批是否还在等。"""
        rule = self.rule(approval.project, approval.environment)
        right = decision_right(approval, approver, rule=rule, delegations=self.delegations)
        if not right:
            return right.reason
        earlier = earlier_vote(approval, approver, votes=approval.votes.all(), rule=rule,
                               delegations=self.delegations)
        return already_voted_message(approval, approver, earlier) if earlier is not None else ""

    def candidates(self, approval: Approval) -> list[Approver]:
        """规则点名的审批人与角色成员；规则没配审批人时只有管理员能批（P4），就是管理员。"""
        rule = self.rule(approval.project, approval.environment)
        people = list(rule.approvers)
        if rule.approver_roles:
            key = tuple(sorted(r.pk for r in rule.approver_roles))
            if key not in self._by_roles:
                self._by_roles[key] = list(
                    Approver.objects.filter(is_active=True).filter(Q(role__in=key) | Q(extra_roles__in=key))
                    .select_related("role").prefetch_related("extra_roles").distinct().order_by("username")
                )
            people += self._by_roles[key]
        if not people:
            if self._admins is None:
                self._admins = list(
                    Approver.objects.filter(is_active=True, role__is_admin=True, role__is_active=True)
                    .select_related("role").order_by("username")
                )
            people = self._admins
        return people + self._pulled_in(approval, people, rule)

    def _pulled_in(self, approval: Approval, people: list[Approver], rule: ResolvedRule) -> list[Approver]:
        """升级拉进来的人，与候选人的受托人：他们也会被提醒、也能在 /pending 里看到这一条。"""
        extra: list[Approver] = []
        pulled = escalated_ids(approval)
        if pulled:
            extra += list(Approver.objects.filter(pk__in=pulled, is_active=True).select_related("role")
                          .prefetch_related("extra_roles").order_by("username"))
        ids = {p.pk for p in people}
        mine = [d for d in self.delegations if d.delegator_id in ids]
        extra += [d.delegate for d in usable_delegations(approval, rule=rule, delegations=mine)]
        return extra

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
        .prefetch_related(Prefetch("votes", queryset=Vote.objects.only("approval_id", "approver_id", "on_behalf_of_id")))
        .order_by("expires_at", "id")[:limit]
    )
    prefetch_related_objects([approver], "extra_roles")
    eligibility = Eligibility()
    return [a for a in candidates if eligibility.may_vote(a, approver)]
