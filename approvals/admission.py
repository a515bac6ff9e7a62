"""申请时就定下来的东西（approval_create 调用）：规则的票数、期限、策略与群，以及发布策略——
封版与紧急发布（X4）、必需角色（X1）、何时升级（X15）。都快照到审批的列上：扫描与消息不必再解析规则。
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils.translation import gettext as _

from accounts.audit import policy_event_record
from accounts.freeze import FreezeHit
from accounts.models import PolicyEventKind
from accounts.rules import ResolvedRule

from .errors import InvalidRequest
from .escalation import escalation_snapshot
from .freeze import emergency_prepare, freeze_for, freeze_snapshot
from .history import event_record
from .models import Approval, EventKind
from .reminders import first_reminder_at

MAX_EMERGENCY_REASON_LENGTH = 1000


def emergency_reason_clean(*, emergency: bool, reason: str) -> str:
    """紧急发布必须写明理由（它会突破封版、进入审计）；不是紧急发布时理由不保存。"""
    reason = (reason or "").strip()[:MAX_EMERGENCY_REASON_LENGTH]
    if emergency and not reason:
        raise InvalidRequest(_("紧急发布必须写明理由（emergency_reason）。"), code="emergency_reason_required")
    return reason if emergency else ""


def approval_admit(approval: Approval, rule: ResolvedRule, *, project: str, timeout_minutes: int | None,
                   emergency: bool, emergency_reason: str, now: datetime) -> FreezeHit | None:
    """把规则与发布策略快照到尚未保存的审批上；返回此刻生效的封版（没有封版为 None）。

    封版中的普通申请由调用方记录后立即关闭（拒绝，reason_code=frozen）；紧急发布照常等待，但要多一位管理员。
    """
    # 任务名可长达 255，项目列是 200
    approval.project = (rule.project if rule.matched else project)[:200]
    approval.project_rule = rule.rule
    approval.required_approvals = max(1, rule.required_approvals)
    approval.expires_at = now + timedelta(minutes=timeout_minutes or rule.timeout_minutes)
    approval.timeout_policy = rule.timeout_policy
    approval.stop_build = rule.stop_build
    approval.reminder_policy = rule.reminder_policy()
    approval.chat_id = rule.chat_id
    approval.next_reminder_at = first_reminder_at(approval.reminder_policy, created_at=now,
                                                  expires_at=approval.expires_at)
    approval.freeze_pending = rule.freeze_pending
    hit = freeze_for(approval, rule, at=now)
    if emergency:
        emergency_prepare(approval, hit, reason=emergency_reason)
    elif hit is not None:
        freeze_snapshot(approval, hit)
    approval.required_roles = [role.key for role in rule.required_roles]
    escalation_snapshot(approval, rule)
    return hit


def emergency_record(approval: Approval, hit: FreezeHit | None, *, channel: str) -> None:
    """紧急发布是一次有审计的越权（break-glass）：审批历史与策略审计各记一条。"""
    details = {"reason": approval.emergency_reason, "window": hit.name if hit else None,
               "ends_at": hit.ends_at.isoformat() if hit else None,
               "admin_approval_required": approval.admin_approval_required}
    event_record(approval=approval, kind=EventKind.EMERGENCY, channel=channel, actor=approval.requester,
                 actor_name=approval.requested_by, details=details)
    if hit is not None:
        policy_event_record(kind=PolicyEventKind.FREEZE_OVERRIDE, channel=channel, actor=approval.requester,
                            actor_name=approval.requested_by, freeze_window=hit.window,
                            approval_public_id=approval.public_id, details=details)
