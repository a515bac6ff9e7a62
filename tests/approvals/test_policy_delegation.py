"""审批权委托（X16）：有效期内受托人可以代委托人审批，显示为“B（代 A）”；到期、撤销、超出范围即失效；
不能用来审批自己的构建；委托得来的权不能再转交；委托双方合算一位审批人。"""

# covers X16

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from accounts.delegations import delegation_grant, delegation_revoke
from accounts.errors import PolicyError
from accounts.models import Approver, Delegation, PolicyEvent, PolicyEventKind
from approvals.eligibility import approvals_pending_for_approver
from approvals.errors import AlreadyVoted, PermissionDenied, SelfApprovalDenied
from approvals.models import ApprovalEvent, EventKind, Status, Vote
from approvals.services import approval_create, approval_decide

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 20, 2, 0, tzinfo=UTC)


def grant(people, delegator="approver", delegate="outsider", *, days=10, start=T0 - timedelta(hours=1), **kwargs):
    return delegation_grant(delegator=people[delegator], delegate=people[delegate], starts_at=start,
                            ends_at=start + timedelta(days=days), channel="telegram", **kwargs)


def vote(approval, person, decision="approve"):
    return approval_decide(approval=approval, approver=person, decision=decision, channel="telegram")


def test_active_delegation_lets_the_delegate_decide_and_shows_on_whose_behalf(shop_rule, people):
    with time_machine.travel(T0, tick=False):
        delegation = grant(people)
        approval, _ = approval_create(job_name="shop-backend", build_number=1, environment="test",
                                      requested_by="dave")
        assert approval in approvals_pending_for_approver(people["outsider"])
        outcome = vote(approval, people["outsider"])
    assert outcome.final and outcome.approval.status == Status.APPROVED
    assert outcome.approval.decided_by_name == "Mallory（代 Bob）"
    vote_row = Vote.objects.get(approval=approval)
    assert vote_row.approver == people["outsider"] and vote_row.on_behalf_of == people["approver"]
    assert vote_row.delegation == delegation
    event = ApprovalEvent.objects.get(approval=approval, kind=EventKind.APPROVED)
    assert event.details["on_behalf_of"] == "bob" and event.actor_name == "Mallory（代 Bob）"
    kinds = list(PolicyEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == [PolicyEventKind.DELEGATION_GRANTED, PolicyEventKind.DELEGATION_USED]
    used = PolicyEvent.objects.get(kind=PolicyEventKind.DELEGATION_USED)
    assert used.approval_public_id == approval.public_id and used.delegation == delegation


@pytest.mark.parametrize("when", ["before", "after"])
def test_delegation_outside_its_time_range_gives_no_right(shop_rule, people, when):
    with time_machine.travel(T0, tick=False):
        grant(people, start=T0 + timedelta(days=1), days=2)
    moment = T0 + timedelta(hours=2) if when == "before" else T0 + timedelta(days=3, minutes=1)
    with time_machine.travel(moment, tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=2, environment="test")
        with pytest.raises(PermissionDenied) as caught:
            vote(approval, people["outsider"])
        assert approval not in approvals_pending_for_approver(people["outsider"])
    assert caught.value.code == "not_project_approver"  # 说的是他自己为什么不能批
    assert not Vote.objects.filter(approval=approval).exists()


def test_revoked_delegation_gives_no_right_and_is_audited(shop_rule, people):
    with time_machine.travel(T0, tick=False):
        grant(people)
        revoked = delegation_revoke(delegator=people["approver"], delegate=people["outsider"], channel="telegram")
        assert len(revoked) == 1 and revoked[0].revoked_at == T0
        approval, _ = approval_create(job_name="shop-backend", build_number=3, environment="test")
        with pytest.raises(PermissionDenied):
            vote(approval, people["outsider"])
        with pytest.raises(PolicyError) as caught:
            delegation_revoke(delegator=people["approver"], delegate=people["outsider"], channel="telegram")
    assert caught.value.code == "no_delegation"
    assert PolicyEvent.objects.filter(kind=PolicyEventKind.DELEGATION_REVOKED).count() == 1


@pytest.mark.parametrize(("scope", "allowed"), [
    ({"projects": ["shop-*"]}, True),
    ({"projects": ["pay-*"]}, False),
    ({"environments": ["测试"]}, True),
    ({"environments": ["production"]}, False),
])
def test_delegation_limited_to_projects_or_environments(shop_rule, people, scope, allowed):
    with time_machine.travel(T0, tick=False):
        grant(people, **scope)
        approval, _ = approval_create(job_name="shop-backend", build_number=4, environment="test")
        if allowed:
            assert vote(approval, people["outsider"]).final
        else:
            with pytest.raises(PermissionDenied):
                vote(approval, people["outsider"])


def test_delegation_never_lets_anyone_approve_their_own_build(shop_rule, people):
    with time_machine.travel(T0, tick=False):
        grant(people)
        by_delegate, _ = approval_create(job_name="shop-backend", build_number=5, environment="test",
                                         requested_by="mallory")
        with pytest.raises(SelfApprovalDenied):
            vote(by_delegate, people["outsider"])
        by_delegator, _ = approval_create(job_name="shop-backend", build_number=6, environment="test",
                                          requested_by="bob")
        with pytest.raises(SelfApprovalDenied) as caught:
            vote(by_delegator, people["outsider"])
    assert "委托人 Bob 是这次构建的发起人" in caught.value.message
    assert not Vote.objects.exists()
    assert ApprovalEvent.objects.filter(kind=EventKind.DENIED).count() == 2


def test_rights_received_by_delegation_cannot_be_passed_on(shop_rule, people, roles):
    carol = Approver.objects.create(username="carol", display_name="Carol", role=roles["pm"], telegram_id=1009)
    people = {**people, "carol": carol}
    with time_machine.travel(T0, tick=False):
        grant(people)  # bob → mallory
        # mallory 有自己的（项目经理）审批权，能委托的也只是她自己的：carol 得不到 bob 的权
        grant(people, "outsider", "carol")
        approval, _ = approval_create(job_name="shop-backend", build_number=7, environment="test")
        with pytest.raises(PermissionDenied):
            vote(approval, carol)
        # 自己没有审批权、只有别人委托的人，授予时就被拒绝
        grant(people, "approver", "requester")  # bob → dave（开发，不能审批）
        with pytest.raises(PolicyError) as caught:
            grant(people, "requester", "carol")
    assert caught.value.code == "redelegation" and "Bob" in caught.value.message
    assert not Delegation.objects.filter(delegator=people["requester"]).exists()


def test_delegator_and_delegate_are_one_voter(shop_rule, people):
    with time_machine.travel(T0, tick=False):
        grant(people)
        first, _ = approval_create(job_name="shop-backend", build_number=8, environment="production")
        vote(first, people["outsider"])  # mallory 代 bob
        with pytest.raises(AlreadyVoted) as caught:
            vote(first, people["approver"])
        assert "委托期间委托人与受托人算作一位审批人" in caught.value.message
        done = vote(first, people["approver2"])
        assert done.final and done.received == 2
        second, _ = approval_create(job_name="shop-backend", build_number=9, environment="production")
        vote(second, people["approver"])  # bob 自己先投
        with pytest.raises(AlreadyVoted):
            vote(second, people["outsider"])
    assert Vote.objects.filter(approval=second).count() == 1


def test_grant_validation_is_precise_and_writes_nothing(shop_rule, people):
    with time_machine.travel(T0, tick=False):
        cases = [
            ({"delegate": "approver"}, "self_delegation"),
            ({"days": 400}, "invalid_range"),
            ({"start": T0 - timedelta(days=5), "days": 1}, "invalid_range"),
        ]
        for overrides, code in cases:
            delegate = overrides.pop("delegate", "outsider")
            with pytest.raises(PolicyError) as caught:
                grant(people, "approver", delegate, **overrides)
            assert caught.value.code == code
        grant(people)
        with pytest.raises(PolicyError) as caught:
            grant(people, start=T0 + timedelta(days=2))
        assert caught.value.code == "delegation_exists"
    assert Delegation.objects.count() == 1
    assert PolicyEvent.objects.count() == 1


def test_delegate_is_reminded_like_the_delegator(shop_rule, people):
    from approvals.eligibility import Eligibility

    with time_machine.travel(T0, tick=False):
        grant(people)
        approval, _ = approval_create(job_name="shop-backend", build_number=10, environment="test")
        waiting = Eligibility().waiting(approval)
    assert {p.username for p in waiting} == {"bob", "mallory"}
    with time_machine.travel(T0 + timedelta(days=11), tick=False):  # 委托已到期：不再点名受托人
        assert {p.username for p in Eligibility().waiting(approval)} == {"bob"}
