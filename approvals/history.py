"""审批历史（ApprovalEvent，只追加）的唯一写入口。services 与各个策略模块都经过它。"""

from __future__ import annotations

from typing import Any

from accounts.models import Approver

from .models import Approval, ApprovalEvent, Channel


def event_record(
    *,
    approval: Approval | int,
    kind: str,
    channel: str = Channel.SYSTEM,
    actor: Approver | None = None,
    actor_name: str = "",
    details: dict[str, Any] | None = None,
) -> ApprovalEvent:
    """追加一条审批历史：审批本身发生了什么（不记投递的来龙去脉，那在发件箱里）。"""
    return ApprovalEvent.objects.create(
        approval_id=approval.pk if isinstance(approval, Approval) else approval,
        kind=kind,
        channel=channel,
        actor=actor,
        actor_name=actor_name or (actor.label if actor else ""),
        details=details or {},
    )
