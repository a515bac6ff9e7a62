"""升级（X15）在审批上的样子：创建时快照何时升级，升级时拉进哪些人，消息里怎么说原因。

扫描（policy_sweeps.approvals_escalate_due）每条审批只升级一次；被拉进来的人记在 approval.escalated_to 上，
决定时的权限检查（approvals.policy）据此让他们只对这一条审批有权。
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils.translation import gettext as _

from accounts.models import Approver
from accounts.rules import ResolvedRule

from .models import Approval
from .policy import is_requester

BY_REMINDERS = "reminders"
BY_DEADLINE = "deadline"


def escalation_snapshot(approval: Approval, rule: ResolvedRule) -> None:
    """创建时：规则有升级对象与时机，就把“提醒几次后”与“几点升级”记在审批上，扫描只看这两列。"""
    if not rule.escalates:
        return
    approval.escalate_after_reminders = rule.escalate_after_reminders
    if rule.escalate_before_minutes:
        approval.escalate_at = approval.expires_at - timedelta(minutes=rule.escalate_before_minutes)


def escalation_due_reason(approval: Approval) -> str:
    after = approval.escalate_after_reminders
    return BY_REMINDERS if after and approval.reminder_count >= after else BY_DEADLINE


def escalation_people(approval: Approval, rule: ResolvedRule) -> list[Approver]:
    """规则点名的升级审批人与升级角色的成员（主角色或兼任），启用的、不是发起人的，去重保序。"""
    people = list(rule.escalation_approvers)
    role_ids = [r.pk for r in rule.escalation_roles]
    if role_ids:
        people += list(Approver.objects.filter(is_active=True).filter(Q(role__in=role_ids)
                                                                      | Q(extra_roles__in=role_ids))
                       .select_related("role").distinct().order_by("username"))
    unique: dict[int, Approver] = {}
    for person in people:
        if person.is_active and not is_requester(approval, person):
            unique.setdefault(person.pk, person)
    return list(unique.values())


def escalation_reason_text(approval: Approval) -> str:
    """“提醒 3 次仍无人决定” / “距截止不到 10 分钟仍无人决定”。"""
    if approval.escalation_reason == BY_REMINDERS:
        return _("提醒 %(n)d 次仍无人决定") % {"n": approval.escalate_after_reminders or approval.reminder_count}
    minutes = 0
    if approval.escalate_at is not None:
        minutes = max(int((approval.expires_at - approval.escalate_at).total_seconds() // 60), 1)
    return _("距截止不到 %(m)d 分钟仍无人决定") % {"m": minutes}
