"""按角色的法定票（X1）：票数够了还要每个必需角色各有一人同意；一人兼任几个角色也只算一个角色。"""

# covers X1

from __future__ import annotations

import pytest

from accounts.matching import match_slots
from accounts.models import Approver, ProjectRule, Role
from approvals.models import ApprovalEvent, EventKind, Status
from approvals.quorum import quorum_state
from approvals.services import approval_create, approval_decide

pytestmark = pytest.mark.django_db


@pytest.fixture
def tech_lead(db):
    return Role.objects.create(key="tech_lead", name="技术负责人")


@pytest.fixture
def team(people, roles, tech_lead):
    """carol 是技术负责人；frank 主角色运维负责人、兼任技术负责人。"""
    carol = Approver.objects.create(username="carol", display_name="Carol", role=tech_lead, telegram_id=1007)
    frank = Approver.objects.create(username="frank", display_name="Frank", role=roles["ops_lead"], telegram_id=1008)
    frank.extra_roles.add(tech_lead)
    return {"carol": carol, "frank": frank, **people}


@pytest.fixture
def quorum_rule(team, roles, tech_lead):
    """pay-api：两票，且技术负责人、运维负责人各要一票。"""
    rule = ProjectRule.objects.create(project="pay-api", required_approvals=2)
    rule.approvers.add(team["approver"], team["approver2"], team["carol"], team["frank"])
    rule.required_roles.add(tech_lead, roles["ops_lead"])
    return rule


def vote(approval, person, decision="approve"):
    return approval_decide(approval=approval, approver=person, decision=decision, channel="api")


def test_a_missing_role_blocks_approval_until_someone_with_it_agrees(quorum_rule, team):
    approval, _ = approval_create(job_name="pay-api", build_number=1, environment="test")
    assert approval.required_roles == ["ops_lead", "tech_lead"]
    assert quorum_state(approval).missing == ("运维负责人", "技术负责人")
    vote(approval, team["approver"])  # bob：运维负责人
    second = vote(approval, team["approver2"])  # erin：项目经理——票数够了，技术负责人还没有
    assert not second.final and second.received == 2 and second.missing == ("技术负责人",)
    approval.refresh_from_db()
    assert approval.status == Status.PENDING
    event = ApprovalEvent.objects.filter(approval=approval, kind=EventKind.VOTE).last()
    assert event.details["missing"] == ["技术负责人"]
    third = vote(approval, team["carol"])
    assert third.final and third.approval.status == Status.APPROVED and third.missing == ()


@pytest.mark.parametrize("order", [("frank", "approver"), ("approver", "frank")])
def test_a_two_role_person_fills_one_role_and_matching_does_not_depend_on_order(quorum_rule, team, order):
    approval, _ = approval_create(job_name="pay-api", build_number=2, environment="test")
    first = vote(approval, team[order[0]])
    assert not first.final and len(first.missing) == 1  # frank 一人只填一个角色
    second = vote(approval, team[order[1]])
    # frank 去填技术负责人、bob 填运维负责人：先后顺序不影响结果
    assert second.final and second.approval.status == Status.APPROVED


def test_two_role_person_alone_never_satisfies_two_roles(quorum_rule, team):
    quorum_rule.required_approvals = 1
    quorum_rule.save()
    approval, _ = approval_create(job_name="pay-api", build_number=3, environment="test")
    outcome = vote(approval, team["frank"])
    assert not outcome.final and outcome.received == 1 and len(outcome.missing) == 1


def test_rejection_still_ends_it_at_once(quorum_rule, team):
    approval, _ = approval_create(job_name="pay-api", build_number=4, environment="test")
    outcome = vote(approval, team["approver2"], "reject")
    assert outcome.final and outcome.approval.status == Status.REJECTED


def test_extra_roles_count_for_rule_approver_roles(team, tech_lead):
    rule = ProjectRule.objects.create(project="ops-tool")
    rule.approver_roles.add(tech_lead)
    approval, _ = approval_create(job_name="ops-tool", build_number=1, environment="test")
    outcome = vote(approval, team["frank"])  # 主角色不是技术负责人，兼任的是
    assert outcome.final


def test_environment_rule_inherits_required_roles_from_the_project(quorum_rule, team):
    ProjectRule.objects.create(project="pay-api", environment="production", required_approvals=3)
    approval, _ = approval_create(job_name="pay-api", build_number=5, environment="production")
    assert approval.required_approvals == 3 and approval.required_roles == ["ops_lead", "tech_lead"]


def test_matching_is_maximal():
    # a 能填 x、y，b 只能填 x：贪心地让 a 填 x 会让 y 空着
    assert match_slots(["x", "y"], {"x": {"a", "b"}, "y": {"a"}}) == {"x": "b", "y": "a"}
    assert match_slots(["x", "y"], {"x": {"a"}, "y": {"a"}}) in ({"x": "a"}, {"y": "a"})
    assert match_slots([], {}) == {}


def test_telegram_feedback_names_the_roles_still_missing(quorum_rule, team):
    """票数够了但缺角色时，点按人看到的是缺哪个角色，而不是“还需 0 票”。"""
    from telegram_bot.handlers.decisions import decide_from_telegram

    approval, _ = approval_create(job_name="pay-api", build_number=7, environment="test")

    def tap(person):
        return decide_from_telegram(user_id=person.telegram_id, username=person.telegram_username, chat_id=0,
                                    public_id=approval.public_id, decision="approve", from_button=True)

    first = tap(team["approver"])  # bob：运维负责人
    assert first.ok and "还需 1 票，且还缺角色：技术负责人" in first.text
    second = tap(team["approver2"])  # erin：项目经理
    assert second.ok and "票数已够，还缺角色：技术负责人" in second.text and "0 票" not in second.text


def test_a_delegate_with_rights_of_their_own_can_fill_the_delegators_role(team, roles, tech_lead):
    # Bob 是唯一的运维负责人，委托给自己也有权的技术负责人 Carol：两人合算一位审批人、只投一票，
    # 那一票要能填上 Bob 的角色；以前它只算 Carol 自己的角色，运维负责人在委托期间永远没人能填
    from datetime import timedelta

    from django.utils import timezone

    from accounts.delegations import delegation_grant

    gina = Approver.objects.create(username="gina", display_name="Gina", role=tech_lead, telegram_id=1009)
    rule = ProjectRule.objects.create(project="pay-api", required_approvals=2)
    rule.approvers.add(team["approver"], team["carol"], gina)
    rule.required_roles.add(tech_lead, roles["ops_lead"])
    now = timezone.now()
    delegation_grant(delegator=team["approver"], delegate=team["carol"], starts_at=now - timedelta(hours=1),
                     ends_at=now + timedelta(days=1), channel="telegram")
    approval, _ = approval_create(job_name="pay-api", build_number=7, environment="test")

    first = vote(approval, team["carol"])
    assert first.vote.on_behalf_of == team["approver"] and not first.final
    done = vote(approval, gina)
    assert done.final and done.approval.status == Status.APPROVED and done.missing == ()


def test_a_pure_delegates_own_role_does_not_count(team, roles, tech_lead):
    # 自己没有这个项目的权限、只靠委托投票的人：他自己的角色不能填名额（否则委托成了越权的后门）
    from datetime import timedelta

    from django.utils import timezone

    from accounts.delegations import delegation_grant

    outsider = Approver.objects.create(username="hank", display_name="Hank", role=tech_lead, telegram_id=1010)
    rule = ProjectRule.objects.create(project="pay-api", required_approvals=1)
    rule.approvers.add(team["approver"])
    rule.required_roles.add(tech_lead)
    now = timezone.now()
    delegation_grant(delegator=team["approver"], delegate=outsider, starts_at=now - timedelta(hours=1),
                     ends_at=now + timedelta(days=1), channel="telegram")
    approval, _ = approval_create(job_name="pay-api", build_number=8, environment="test")

    outcome = vote(approval, outsider)
    assert outcome.vote.on_behalf_of == team["approver"]
    assert not outcome.final and outcome.missing == ("技术负责人",)
