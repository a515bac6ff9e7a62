"""封版（X4）在审批上的样子：申请时是否封版、紧急发布要多一位管理员、拒绝的理由怎么说。

窗口本身（每周/一次性、时区、连着的窗口）在 accounts.freeze；这里只把结果快照到审批的列上，
之后的消息、API 与审计都读这些列，不再回头解析窗口。
"""

from __future__ import annotations

from datetime import datetime

from django.utils.translation import gettext as _

from accounts.freeze import FreezeHit, freeze_find
from accounts.models import FreezeWindow
from accounts.rules import ResolvedRule

from .display import format_time
from .models import Approval

FROZEN = "frozen"  # Approval.reason_code：封版期间被拒绝
FROZEN_PENDING = "frozen_pending"  # 通知种类：封版开始时被拒绝的待审批（reason_code 同样是 frozen）


def request_names(approval: Approval, rule: ResolvedRule | None) -> list[str]:
    """与封版窗口的 projects 比对的名字：规则里的项目名与别名、任务名（窗口和规则一样按名字、别名、模式匹配）。"""
    names = [approval.project, approval.job_name]
    base = rule.base if rule is not None and rule.matched else None
    if base is not None:
        names += [str(alias) for alias in base.aliases]
    return names


def freeze_for(approval: Approval, rule: ResolvedRule | None, *, at: datetime,
               windows: list[FreezeWindow] | None = None) -> FreezeHit | None:
    return freeze_find(names=request_names(approval, rule), environment=approval.environment, at=at, windows=windows)


def freeze_snapshot(approval: Approval, hit: FreezeHit) -> None:
    approval.freeze_window = hit.window
    approval.freeze_name = hit.name[:100]
    approval.freeze_ends_at = hit.ends_at


def frozen_reason(hit: FreezeHit) -> str:
    return _("封版期间不能发布：「%(window)s」至 %(ends)s 结束") % {"window": hit.name, "ends": format_time(hit.ends_at)}


def emergency_prepare(approval: Approval, hit: FreezeHit | None, *, reason: str) -> None:
    """紧急发布：记下理由；在封版中时记下突破的是哪个封版，并在规则的票数之外再要一位管理员同意。"""
    approval.emergency = True
    approval.emergency_reason = reason
    if hit is not None:
        freeze_snapshot(approval, hit)
        approval.admin_approval_required = True
        approval.required_approvals += 1
