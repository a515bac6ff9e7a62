"""谁此刻有权决定这一条审批（P9、X2、X15、X16）：自己的权限、被升级拉进来、或受人委托。

决定时（services.approval_decide，在审批的行锁里）与“谁能投票”的查询（eligibility）都问这里，规则只有一份：
- 自己有权限（accounts.permissions.check_can_approve）；
- 升级时被点名的人（approval.escalated_to）只对这一条审批有权；
- 受托人在委托有效、范围包含这次发布、委托人自己有权时可以代委托人投票；只看委托人自己的权限，
  所以委托得来的权不能再转交；
- 发起人永远不能审批自己的构建：受托人与委托人谁是发起人都不行；
- 委托人与受托人合算一位审批人：其中一人投过票，另一人再投得到“已投过票”。
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.utils.translation import gettext as _

from accounts.delegations import delegation_covers
from accounts.models import Approver, Delegation
from accounts.permissions import check_bot_access, check_can_approve
from accounts.rules import ResolvedRule

from .models import Approval, Vote


@dataclass(frozen=True)
class Right:
    """decision_right 的结果；delegation 不为空表示这一票是代委托人投的。"""

    allowed: bool
    code: str = "ok"
    reason: str = ""
    self_approval: bool = False
    via: str = "own"  # own | escalation | delegation
    delegation: Delegation | None = None

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def on_behalf_of(self) -> Approver | None:
        return self.delegation.delegator if self.delegation is not None else None


def is_requester(approval: Approval, approver: Approver) -> bool:
    """此人是否这次构建的发起人（X2：发起人不能审批自己的构建）。"""
    if approval.requester_id is not None:
        return approval.requester_id == approver.pk
    raw = (approval.requested_by or "").strip().lower().lstrip("@")
    if not raw:
        return False
    names = {approver.username.lower(), approver.jenkins_user.lower(), approver.email.lower(),
             approver.telegram_username.lower()}
    return raw in names - {""}


def _self_approval() -> Right:
    return Right(False, "self_approval", _("你是这次构建的发起人，不能审批自己的发布。"), self_approval=True)


def escalated_ids(approval: Approval) -> set[int]:
    """被升级拉进来的人（id 记在审批的列上，不必查库）。"""
    if approval.escalated_at is None:
        return set()
    return {int(pk) for pk in approval.escalated_to or []}


def usable_delegations(approval: Approval, *, rule: ResolvedRule | None,
                       delegations: Iterable[Delegation]) -> list[Delegation]:
    """这一条审批上用得着的委托：范围包含它，且委托人本人此刻有权审批它（只看本人的权限，不看他收到的委托）。"""
    return [d for d in delegations
            if delegation_covers(d, project=approval.project, environment=approval.environment)
            and check_can_approve(d.delegator, project=approval.project, environment=approval.environment, rule=rule)]


def _delegations_to(approval: Approval, approver: Approver, *, rule: ResolvedRule | None,
                    delegations: Iterable[Delegation]) -> list[Delegation]:
    """委托给此人、在这条审批上用得着的委托。"""
    return usable_delegations(approval, rule=rule, delegations=[d for d in delegations if d.delegate_id == approver.pk])


def decision_right(approval: Approval, approver: Approver | None, *, delegations: Iterable[Delegation],
                   rule: ResolvedRule | None = None) -> Right:
    """此人此刻能否决定这一条审批，以什么身份；不能时说清原因（P11）。delegations 是此刻有效的委托。"""
    own = check_can_approve(approver, project=approval.project, environment=approval.environment, rule=rule)
    if own:
        assert approver is not None
        return _self_approval() if is_requester(approval, approver) else Right(True)
    denied = Right(False, own.code, own.reason)
    if approver is None or not check_bot_access(approver):
        return denied
    if approver.pk in escalated_ids(approval):
        return _self_approval() if is_requester(approval, approver) else Right(True, via="escalation")
    for delegation in _delegations_to(approval, approver, rule=rule, delegations=delegations):
        if is_requester(approval, approver):
            return _self_approval()
        if is_requester(approval, delegation.delegator):
            denied = Right(False, "self_approval", _(
                "委托人 %(who)s 是这次构建的发起人：委托不能用来审批他自己的发布。") % {
                "who": delegation.delegator.label}, self_approval=True)
            continue
        return Right(True, via="delegation", delegation=delegation)
    return denied


def linked_people(approval: Approval, approver: Approver, *, rule: ResolvedRule | None,
                  delegations: Iterable[Delegation]) -> set[int]:
    """与此人合算一位审批人的人：在这条审批上用得着的委托的另一方。"""
    involved = [d for d in delegations if approver.pk in (d.delegator_id, d.delegate_id)]
    linked: set[int] = set()
    for delegation in usable_delegations(approval, rule=rule, delegations=involved):
        linked.add(delegation.delegator_id if delegation.delegate_id == approver.pk else delegation.delegate_id)
    return linked


def earlier_vote(approval: Approval, approver: Approver, *, votes: Iterable[Vote], rule: ResolvedRule | None,
                 delegations: Iterable[Delegation]) -> Vote | None:
    """此人（或与他合算一人的委托人/受托人）已经投过的那一票。"""
    delegations = list(delegations)
    people = {approver.pk} | linked_people(approval, approver, rule=rule, delegations=delegations)
    return next((v for v in votes if v.approver_id in people or v.on_behalf_of_id in people), None)


def already_voted_message(approval: Approval, approver: Approver, vote: Vote) -> str:
    if vote.approver_id == approver.pk:
        return _("你已经对审批 %(id)s 投过票了。") % {"id": approval.public_id}
    return _("%(who)s 已对审批 %(id)s 投过票：委托期间委托人与受托人算作一位审批人。") % {
        "who": vote.approver.label, "id": approval.public_id}



def best_hat(approval: Approval, approver: Approver, right: Right, *, rule: ResolvedRule | None,
             delegations: Iterable[Delegation]) -> Right:
    """自己有权、又受人委托的人投同意票：委托期间两人合算一位审批人、只投一票，这一票记成“代委托人”，
    法定票计算时它能填两人任一人的必需角色（quorum_state 见 own_right）。否则只有委托人担任的角色，
    在委托期间永远没人能填。只在有必需角色（或紧急发布的管理员名额）时才需要。"""
    if right.via != "own" or not (approval.required_roles or approval.admin_approval_required):
        return right
    options = [d for d in _delegations_to(approval, approver, rule=rule, delegations=delegations)
               if not is_requester(approval, d.delegator)]
    return Right(True, via="own", delegation=options[0]) if options else right
