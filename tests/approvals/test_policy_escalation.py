"""升级（X15）：提醒 N 次仍无人决定、或距截止不到 M 分钟时，把升级审批人拉进来——每条审批只一次；
被拉进来的人此后能决定这一条（只有这一条），之前不能。"""

# covers X15

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from accounts.models import Approver
from approvals.eligibility import approvals_pending_for_approver
from approvals.errors import PermissionDenied, SelfApprovalDenied
from approvals.models import Approval, ApprovalEvent, EventKind, Status
from approvals.policy_sweeps import approvals_escalate_due
from approvals.services import approval_create, approval_decide
from approvals.sweeps import approvals_claim_due_reminders

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.fixture
def escalating_rule(shop_rule, people):
    """测试环境：提醒 2 次仍无人决定，就拉 mallory（项目经理，平时不在规则里）进来。"""
    shop_rule.escalation_approvers.add(people["outsider"])
    shop_rule.escalate_after_reminders = 2
    shop_rule.save()
    return shop_rule


def remind(approval: Approval) -> None:
    """让下一次提醒到期并被认领（与提醒扫描同一个函数）。"""
    approval.refresh_from_db()
    approvals_claim_due_reminders(now=approval.next_reminder_at)


def test_pulled_in_once_after_n_reminders_and_can_then_decide(escalating_rule, people):
    with time_machine.travel(T0, tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=1, environment="test")
    assert approval.escalate_after_reminders == 2 and approval.escalate_at is None
    remind(approval)
    with time_machine.travel(T0 + timedelta(minutes=6), tick=False):
        assert approvals_escalate_due() == []  # 才提醒一次
        with pytest.raises(PermissionDenied) as caught:  # 之前不能决定
            approval_decide(approval=approval, approver=people["outsider"], decision="approve", channel="telegram")
        assert caught.value.code == "not_project_approver"
        assert approval not in approvals_pending_for_approver(people["outsider"])
    remind(approval)
    with time_machine.travel(T0 + timedelta(minutes=13), tick=False):
        assert approvals_escalate_due() == [approval.pk]
        assert approvals_escalate_due() == []  # 只升级一次
        approval.refresh_from_db()
        assert approval.escalated_to == [people["outsider"].pk] and approval.escalation_reason == "reminders"
        assert approval in approvals_pending_for_approver(people["outsider"])
        outcome = approval_decide(approval=approval, approver=people["outsider"], decision="approve",
                                  channel="telegram")
    assert outcome.final and outcome.approval.status == Status.APPROVED
    [event] = ApprovalEvent.objects.filter(approval=approval, kind=EventKind.ESCALATED)
    assert event.details["reason"] == "reminders" and event.details["people"] == ["mallory"]
    assert event.details["text"] == "提醒 2 次仍无人决定"
    assert ApprovalEvent.objects.get(approval=approval, kind=EventKind.APPROVED).details["via"] == "escalation"


def test_pulled_in_minutes_before_the_deadline_by_role(shop_rule, people, roles):
    prod = shop_rule.__class__.objects.get(project="shop-backend", environment="production")
    prod.escalation_roles.add(roles["admin"], roles["developer"])
    prod.escalate_before_minutes = 10
    prod.save()
    with time_machine.travel(T0, tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=2, environment="production",
                                      requested_by="dave")
    assert approval.escalate_at == T0 + timedelta(minutes=20)  # 截止 30 分钟，前 10 分钟
    with time_machine.travel(T0 + timedelta(minutes=19), tick=False):
        assert approvals_escalate_due() == []
    with time_machine.travel(T0 + timedelta(minutes=20), tick=False):
        assert approvals_escalate_due() == [approval.pk]
    approval.refresh_from_db()
    # 角色成员都拉进来，只是发起人 dave（开发）不算
    assert approval.escalated_to == [people["admin"].pk] and approval.escalation_reason == "deadline"
    event = ApprovalEvent.objects.get(approval=approval, kind=EventKind.ESCALATED)
    assert event.details["text"] == "距截止不到 10 分钟仍无人决定"


def test_the_right_is_for_that_approval_only_and_never_for_own_builds(escalating_rule, people):
    with time_machine.travel(T0, tick=False):
        mine, _ = approval_create(job_name="shop-backend", build_number=3, environment="test",
                                  requested_by="mallory")
        other, _ = approval_create(job_name="folder/shop-api", build_number=4, environment="test")
    Approval.objects.filter(pk__in=[mine.pk, other.pk]).update(reminder_count=2)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        assert approvals_escalate_due() == sorted([mine.pk, other.pk])
        mine.refresh_from_db()
        assert mine.escalated_to == []  # 发起人不会被拉进来审批自己的构建
        Approval.objects.filter(pk=mine.pk).update(escalated_to=[people["outsider"].pk])
        with pytest.raises(SelfApprovalDenied):
            approval_decide(approval=mine, approver=people["outsider"], decision="approve", channel="telegram")
        third, _ = approval_create(job_name="folder/shop-web", build_number=5, environment="test")
        with pytest.raises(PermissionDenied):
            approval_decide(approval=third, approver=people["outsider"], decision="approve", channel="telegram")
        assert approval_decide(approval=other, approver=people["outsider"], decision="reject",
                               channel="telegram").final


def test_no_escalation_without_a_rule_and_inactive_people_are_skipped(shop_rule, people, roles):
    with time_machine.travel(T0, tick=False):
        plain, _ = approval_create(job_name="shop-backend", build_number=6, environment="test")
    Approval.objects.filter(pk=plain.pk).update(reminder_count=5)
    assert approvals_escalate_due(now=T0 + timedelta(minutes=1)) == []
    gone = Approver.objects.create(username="gone", role=roles["ops_lead"], is_active=False)
    shop_rule.escalation_approvers.add(gone)
    shop_rule.escalate_after_reminders = 1
    shop_rule.save()
    with time_machine.travel(T0, tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=7, environment="test")
    Approval.objects.filter(pk=approval.pk).update(reminder_count=1)
    # 规则里唯一的升级审批人已停用：规则解析时就没有升级对象，不会拉空
    assert approval.escalate_after_reminders is None
    assert approvals_escalate_due(now=T0 + timedelta(minutes=1)) == []
