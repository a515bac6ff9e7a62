"""Jenkins 操作（继续/中止）的结果记在审批上：成功、暂时失败将重试、永久失败；以及执行它的租约。"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from approvalbot.metrics import EXTERNAL_CALL_ERRORS

from . import effects
from .history import event_record
from .models import Approval, EventKind, JenkinsActionState


def jenkins_action_lease_free(now: datetime) -> Q:
    """没人持有执行租约（或持有者的租约已过期）。认领与恢复扫描用同一个条件。"""
    return Q(jenkins_action_lease_until__isnull=True) | Q(jenkins_action_lease_until__lt=now)


def jenkins_action_claim(approval_id: int, *, seconds: float, now: datetime | None = None) -> str | None:
    """认领一次执行：只有操作还在等、且没人持有（或持有者的租约已过期：worker 死在途中）时成功，返回令牌。

    两个投递（重投、恢复扫描补发、mirror 重新投递）同时到达时只有一个执行，另一个什么也不做。
    """
    now = now or timezone.now()
    token = secrets.token_hex(16)
    free = jenkins_action_lease_free(now)
    claimed = Approval.objects.filter(Q(pk=approval_id, jenkins_action_state=JenkinsActionState.PENDING) & free).update(
        jenkins_action_lease=token, jenkins_action_lease_until=now + timedelta(seconds=seconds))
    return token if claimed else None


def jenkins_action_release(approval_id: int, token: str, *, due_at: datetime | None = None) -> None:
    """放开租约；due_at 是下一次该执行的时间（已排了重试），None 表示不用恢复扫描来补（已完成、已失败、在等 input）。"""
    Approval.objects.filter(pk=approval_id, jenkins_action_lease=token).update(
        jenkins_action_lease="", jenkins_action_lease_until=None, jenkins_action_due_at=due_at)


def approval_record_jenkins_action(
    *, approval: Approval | int, ok: bool, action: str, error: str = "", permanent: bool = False,
    details: dict[str, Any] | None = None,
) -> None:
    """记录一次 Jenkins 操作的尝试与结果（成功、暂时失败将重试、永久失败）。"""
    pk = approval.pk if isinstance(approval, Approval) else approval
    if ok:
        state = JenkinsActionState.DONE
    elif permanent:
        state = JenkinsActionState.FAILED
    else:
        state = JenkinsActionState.PENDING
    with transaction.atomic():
        Approval.objects.filter(pk=pk).update(
            jenkins_action_state=state,
            jenkins_action_attempts=F("jenkins_action_attempts") + 1,
            jenkins_action_error="" if ok else error[:2000],
            jenkins_action_at=timezone.now(),
        )
        event_record(approval=pk, kind=EventKind.JENKINS_ACTION if ok else EventKind.JENKINS_ERROR,
                     details={"action": action, "ok": ok, "error": error[:2000], "permanent": permanent,
                              **(details or {})})
        if not ok and (details or {}).get("kind") != "input_not_pending":  # 还没走到 input 不是失败
            kind = str((details or {}).get("kind") or "error")
            transaction.on_commit(lambda: EXTERNAL_CALL_ERRORS.labels(system="jenkins", kind=kind).inc())
        if state == JenkinsActionState.FAILED:
            # 消息上原本写着“构建继续/已终止”：Jenkins 操作彻底失败时要让审批人看到，好去手动处理
            effects.approval_changed(pk)

