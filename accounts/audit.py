"""发布策略的审计（PolicyEvent，只追加）：封版的开始与结束、紧急发布、委托的授予、使用与撤销。"""

from __future__ import annotations

from typing import Any

from .models import Approver, Delegation, FreezeWindow, PolicyEvent


def policy_event_record(
    *,
    kind: str,
    channel: str,
    actor: Approver | None = None,
    actor_name: str = "",
    freeze_window: FreezeWindow | None = None,
    delegation: Delegation | None = None,
    approval_public_id: str = "",
    details: dict[str, Any] | None = None,
) -> PolicyEvent:
    """追加一条策略审计。调用方在自己的事务里调用：操作回滚，审计也回滚。"""
    return PolicyEvent.objects.create(
        kind=kind, channel=channel, actor=actor, actor_name=(actor_name or (actor.label if actor else ""))[:150],
        freeze_window=freeze_window, delegation=delegation, approval_public_id=approval_public_id,
        details=details or {},
    )
