"""Jenkins 操作（继续/中止）的结果记在审批上：成功、暂时失败将重试、永久失败。"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from approvalbot.metrics import EXTERNAL_CALL_ERRORS

from . import effects
from .models import Approval, EventKind, JenkinsActionState
from .services import event_record


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

