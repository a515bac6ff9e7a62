"""发布策略的扫描（beat）：封版开始时拒绝规则要求拒绝的待审批（X4），无人决定时升级（X15）。

两者都按批在事务里锁行（SKIP LOCKED：正被人决定的行留给下一轮），拒绝走唯一的终态入口 close_rows；
升级用 escalated_at 的条件更新保证每条审批只升级一次，两个 beat 同时扫也一样。
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.freeze import FreezeHit, windows_in_force
from accounts.models import FreezePending

from . import effects
from .eligibility import Eligibility
from .escalation import escalation_due_reason, escalation_people, escalation_reason_text
from .freeze import FROZEN, FROZEN_PENDING, freeze_for, frozen_reason
from .history import event_record
from .models import Approval, Channel, EventKind, Status
from .services import close_rows, lock_rows

logger = logging.getLogger(__name__)

POLICY_BATCH = 200


@transaction.atomic
def approvals_refuse_frozen(*, now: datetime | None = None, limit: int = POLICY_BATCH) -> list[int]:
    """封版已开始：规则写了 freeze_pending=refuse 的待审批（紧急发布除外）被拒绝，像拒绝一样中止 Jenkins。"""
    now = now or timezone.now()
    candidates = Approval.objects.filter(status=Status.PENDING, freeze_pending=FreezePending.REFUSE, emergency=False,
                                         expires_at__gt=now)
    if not candidates.exists():
        return []
    windows = windows_in_force()
    if not windows:
        return []
    eligibility = Eligibility()
    # 先不加锁地找出真在封版里的（规则按项目与环境缓存）：不在任何窗口里的行不锁、也不占名额——
    # 否则前 limit 条都不在封版里时，后面的永远轮不到，每一轮还白白锁住它们、挡住正在做的决定
    hits: dict[int, FreezeHit] = {}
    for row in candidates.order_by("pk").iterator(chunk_size=500):
        hit = freeze_for(row, eligibility.rule(row.project, row.environment), at=now, windows=windows)
        if hit is not None:
            hits[row.pk] = hit
            if len(hits) >= limit:
                break
    if not hits:
        return []
    rows = list(lock_rows(Approval.objects.filter(pk__in=hits, status=Status.PENDING).order_by("pk"),
                          skip_locked=True))
    by_freeze: dict[tuple[int, datetime], tuple[FreezeHit, list[Approval]]] = {}
    for row in rows:
        hit = hits[row.pk]
        by_freeze.setdefault((hit.window.pk, hit.ends_at), (hit, []))[1].append(row)
    refused: list[int] = []
    for hit, group in by_freeze.values():
        closed = close_rows(group, status=Status.REJECTED, reason=frozen_reason(hit), reason_code=FROZEN,
                            channel=Channel.SYSTEM, kind=EventKind.FROZEN, jenkins_action=True, now=now, freeze=hit,
                            details={"window": hit.name, "ends_at": hit.ends_at.isoformat(), "pending": True})
        for pk in closed:
            effects.policy_notice(pk, FROZEN_PENDING)
        refused += closed
    if refused:
        logger.info("封版开始：拒绝了 %d 条待审批", len(refused))
    return refused


@transaction.atomic
def approvals_escalate_due(*, now: datetime | None = None, limit: int = POLICY_BATCH) -> list[int]:
    """到了升级时机（提醒 N 次仍无人决定，或距截止不到 M 分钟）的待审批：拉进升级审批人，每条只一次。"""
    now = now or timezone.now()
    due = Approval.objects.filter(status=Status.PENDING, escalated_at__isnull=True, expires_at__gt=now).filter(
        Q(escalate_at__lte=now)
        | Q(escalate_after_reminders__isnull=False, reminder_count__gte=F("escalate_after_reminders")))
    rows = list(lock_rows(due.order_by("pk")[:limit], skip_locked=True))
    if not rows:
        return []
    eligibility = Eligibility()
    escalated: list[int] = []
    for row in rows:
        reason = escalation_due_reason(row)
        people = escalation_people(row, eligibility.rule(row.project, row.environment))
        ids = [p.pk for p in people]
        if not Approval.objects.filter(pk=row.pk, escalated_at__isnull=True).update(
                escalated_at=now, escalation_reason=reason, escalated_to=ids, updated_at=now):
            continue  # pragma: no cover - 行已锁住
        row.escalated_at, row.escalation_reason, row.escalated_to = now, reason, ids
        event_record(approval=row, kind=EventKind.ESCALATED, channel=Channel.SYSTEM, details={
            "reason": reason, "text": escalation_reason_text(row), "reminders": row.reminder_count,
            "people": [p.username for p in people]})
        if not people:
            logger.warning("审批 %s 到了升级时机，但规则里的升级审批人都已停用或就是发起人", row.public_id)
        effects.approval_changed(row.pk)
        effects.policy_notice(row.pk, "escalated")
        escalated.append(row.pk)
    return escalated


def policy_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """一次发布策略扫描：先拒绝封版中的（拒绝了就不必再升级），再升级。"""
    now = now or timezone.now()
    refused = approvals_refuse_frozen(now=now)
    escalated = approvals_escalate_due(now=now)
    return {"refused": len(refused), "escalated": len(escalated)}
