"""权限规则 P3–P11 与 X2：每条规则一个会失败的测试。"""

from __future__ import annotations

import pytest

from accounts.environments import normalize_environment
from accounts.models import Approver, ProjectRule, Role
from accounts.permissions import check_bot_access, check_can_approve
from accounts.rules import resolve_rule
from approvals.errors import PermissionDenied, SelfApprovalDenied
from approvals.models import ApprovalEvent, EventKind, Status
from approvals.services import approval_decide

pytestmark = pytest.mark.django_db


def test_p4_admin_role_may_approve_any_project_and_environment(people):
    result = check_can_approve(people["admin"], project="unknown-project", environment="production")
    assert result.allowed


def test_p5_project_approver_allowed_outsider_denied_with_names(shop_rule, people):
    assert check_can_approve(people["approver"], project="shop-backend", environment="test")
    denied = check_can_approve(people["outsider"], project="shop-backend", environment="test")
    assert not denied.allowed
    assert denied.code == "not_project_approver"
    # P11：拒绝时说清楚谁可以审批
    assert "shop-backend" in denied.reason and "Bob" in denied.reason


def test_p6_production_rule_is_stricter_than_test(shop_rule, people):
    test_rule = resolve_rule("shop-backend", "test")
    prod_rule = resolve_rule("shop-backend", "production")
    assert test_rule.required_approvals == 1 and prod_rule.required_approvals == 2
    assert prod_rule.timeout_minutes == 30
    assert {a.username for a in prod_rule.approvers} == {"bob", "erin"}
    # erin 只能批生产，不能批测试
    assert check_can_approve(people["approver2"], project="shop-backend", environment="production")
    assert not check_can_approve(people["approver2"], project="shop-backend", environment="test")


def test_p6_approver_limited_to_environments(shop_rule, people):
    bob = people["approver"]
    bob.environments = ["测试"]
    bob.save()
    denied = check_can_approve(bob, project="shop-backend", environment="production")
    assert denied.code == "environment_not_allowed" and "production" in denied.reason
    assert check_can_approve(bob, project="shop-backend", environment="test")


@pytest.mark.parametrize("name", ["shop-backend", "SHOP-BACKEND", "shop", "商城后端", "folder/shop-api", "team/shop-backend"])
def test_p7_project_matched_by_name_alias_and_pattern(shop_rule, name):
    rule = resolve_rule(name, "test")
    assert rule.matched and rule.project == "shop-backend"


def test_p7_most_specific_pattern_wins(shop_rule):
    other = ProjectRule.objects.create(project="shop-special", patterns=["folder/shop-special-*"])
    assert resolve_rule("folder/shop-special-api", "test").base == other
    assert resolve_rule("folder/shop-api", "test").base == shop_rule


def test_p8_default_approvers_apply_when_no_rule_matches(people, shop_rule):
    default = ProjectRule.objects.create(project="*", is_default=True)
    default.approvers.add(people["approver2"])
    rule = resolve_rule("billing", "test")
    assert not rule.matched
    assert check_can_approve(people["approver2"], project="billing", environment="test")
    denied = check_can_approve(people["approver"], project="billing", environment="test")
    assert denied.code == "not_default_approver" and "Erin" in denied.reason


def test_p8_without_default_only_admins(people):
    denied = check_can_approve(people["approver"], project="billing", environment="test")
    assert denied.code == "no_approvers_configured"
    assert check_can_approve(people["admin"], project="billing", environment="test")


def test_p3_custom_role_listed_on_rule_may_approve(people, shop_rule):
    tech_lead = Role.objects.create(key="技术负责人", name="技术负责人")
    carol = Approver.objects.create(username="carol", role=tech_lead, telegram_id=1003)
    shop_rule.approver_roles.add(tech_lead)
    # 基础规则同时列了人和角色：角色成员也可以
    assert check_can_approve(carol, project="shop-backend", environment="test")


def test_p10_role_without_approve_right(people, shop_rule):
    dave = people["requester"]
    result = check_can_approve(dave, project="shop-backend", environment="test")
    assert result.code == "role_cannot_approve" and "开发" in result.reason
    # 仍然可以使用机器人（查询状态等）
    assert check_bot_access(dave)


def test_p10_project_scope_on_approver(people, shop_rule):
    bob = people["approver"]
    bob.projects = ["billing-*"]
    bob.save()
    result = check_can_approve(bob, project="shop-backend", environment="test")
    assert result.code == "project_not_allowed" and "billing-*" in result.reason


def test_p10_unknown_and_inactive_users_refused(people):
    assert check_bot_access(None).code == "not_registered"
    bob = people["approver"]
    bob.is_active = False
    bob.save()
    assert check_bot_access(bob).code == "inactive"


def test_p10_inactive_role_refused(people):
    role = people["approver"].role
    role.is_active = False
    role.save()
    assert check_bot_access(people["approver"]).code == "role_inactive"


def test_p9_permission_is_checked_at_decision_time(shop_rule, people, make_approval):
    approval = make_approval()
    # 审批创建之后才撤销 bob 的权限：决定时必须按当前规则检查
    shop_rule.approvers.remove(people["approver"])
    shop_rule.approvers.add(people["approver2"])
    with pytest.raises(PermissionDenied) as exc:
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    assert exc.value.code == "not_project_approver"
    approval.refresh_from_db()
    assert approval.status == Status.PENDING
    assert not approval.votes.exists()
    denied = ApprovalEvent.objects.get(approval=approval, kind=EventKind.DENIED)
    assert denied.actor == people["approver"] and denied.details["code"] == "not_project_approver"


def test_x2_requester_cannot_approve_own_build_even_as_admin(people, shop_rule, make_approval):
    approval = make_approval(requested_by="alice")
    assert approval.requester == people["admin"]
    with pytest.raises(SelfApprovalDenied) as exc:
        approval_decide(approval=approval, approver=people["admin"], decision="approve", channel="telegram")
    assert "发起人" in exc.value.message
    approval.refresh_from_db()
    assert approval.status == Status.PENDING


def test_x2_requester_recognised_by_jenkins_user_email_and_username(people, shop_rule, make_approval):
    bob = people["approver"]
    bob.jenkins_user = "bob.j"
    bob.email = "bob@example.com"
    bob.save()
    for who in ("bob.j", "BOB@example.com", "bob", "@bob"):
        approval = make_approval(requested_by=who)
        with pytest.raises(SelfApprovalDenied):
            approval_decide(approval=approval, approver=bob, decision="approve", channel="api")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("生产", "production"), ("PROD", "production"), ("prd", "production"), ("production", "production"),
     ("预发", "staging"), ("uat", "staging"), ("测试", "test"), ("QA", "test"), ("dev", "development"),
     ("perf-lab", "perf-lab"), ("", "")],
)
def test_environment_names_are_normalised(raw, expected):
    assert normalize_environment(raw) == expected
