"""审批权委托（X16）：授予、撤销与“此刻有效的委托”。

委托只转交委托人自己的审批权：判断受托人能否审批时只看委托人本人的权限（不看他收到的委托），
所以委托得来的权限天然不能再转交；没有自己审批权、只有别人委托的人，授予时直接被拒绝并说明原因。
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from approvalbot.text import join_names

from .audit import policy_event_record
from .environments import normalize_environment
from .errors import PolicyError
from .models import Approver, Delegation, PolicyEventKind
from .permissions import check_bot_access, matches_any

MAX_DELEGATION_DAYS = 366


def _when(value: datetime) -> str:
    return date_format(timezone.localtime(value), "Y-m-d H:i")


def delegations_active(*, at: datetime | None = None) -> list[Delegation]:
    """此刻有效（已开始、未到期、未撤销）的全部委托。一次查询；一次决定或一次扫描只查一次。"""
    at = at or timezone.now()
    # 兼任角色也一并取回：每条委托都要按委托人的角色判断他有没有权（check_can_approve）
    return list(Delegation.objects.filter(revoked_at__isnull=True, starts_at__lte=at, ends_at__gt=at)
                .select_related("delegator__role", "delegate__role")
                .prefetch_related("delegator__extra_roles", "delegate__extra_roles").order_by("pk"))


def delegation_covers(delegation: Delegation, *, project: str, environment: str) -> bool:
    """委托限定的项目与环境是否包含这一次（空表示不限）。"""
    if delegation.projects and not matches_any(project, delegation.projects):
        return False
    if delegation.environments:
        return normalize_environment(environment) in {normalize_environment(e) for e in delegation.environments}
    return True


def _own_rights_check(delegator: Approver) -> None:
    access = check_bot_access(delegator)
    if not access:
        raise PolicyError(access.reason, code=access.code)
    role = delegator.role
    if role.is_admin or role.can_approve:
        return
    received = delegations_received(delegator)
    if received:
        names = join_names(d.delegator.label for d in received)
        raise PolicyError(_("你的审批权来自委托（%(names)s），委托得来的权限不能再转交。") % {"names": names},
                          code="redelegation")
    raise PolicyError(_("你的角色「%(role)s」没有审批权限，没有可以委托的审批权。") % {"role": role},
                      code="nothing_to_delegate")


def delegations_received(person: Approver, *, at: datetime | None = None) -> list[Delegation]:
    at = at or timezone.now()
    return list(Delegation.objects.filter(delegate=person, revoked_at__isnull=True, starts_at__lte=at, ends_at__gt=at)
                .select_related("delegator"))


def delegation_check(*, delegator: Approver | None, delegate: Approver | None, starts_at: datetime,
                     ends_at: datetime) -> None:
    """授予前的检查（后台表单先用它报错，授予时再查一次）：失败抛 PolicyError，说清原因。"""
    if delegator is None:
        raise PolicyError(_("你还不是审批系统的用户，请联系管理员把你加入 users.json 或后台。"), code="not_registered")
    if delegate is None:
        raise PolicyError(_("受托人必须是登记过的审批人。"), code="unknown_delegate")
    if delegate.pk == delegator.pk:
        raise PolicyError(_("不能把审批权委托给自己。"), code="self_delegation")
    _own_rights_check(delegator)
    access = check_bot_access(delegate)
    if not access:
        raise PolicyError(_("受托人 %(who)s 不能使用审批系统：%(reason)s") % {"who": delegate.label, "reason": access.reason},
                          code="delegate_inactive")
    now = timezone.now()
    if ends_at <= starts_at:
        raise PolicyError(_("委托的结束时间必须晚于开始时间。"), code="invalid_range")
    if ends_at <= now:
        raise PolicyError(_("委托的结束时间已经过去。"), code="invalid_range")
    if ends_at - starts_at > timedelta(days=MAX_DELEGATION_DAYS):
        raise PolicyError(_("一次委托最长 %(days)s 天。") % {"days": MAX_DELEGATION_DAYS}, code="invalid_range")


@transaction.atomic
def delegation_grant(
    *,
    delegator: Approver | None,
    delegate: Approver | None,
    starts_at: datetime,
    ends_at: datetime,
    channel: str,
    projects: Iterable[str] = (),
    environments: Iterable[str] = (),
    reason: str = "",
    actor: Approver | None = None,
) -> Delegation:
    """delegator 在 [starts_at, ends_at) 内把审批权交给 delegate。actor 缺省是委托人本人（后台代办时是管理员）。"""
    delegation_check(delegator=delegator, delegate=delegate, starts_at=starts_at, ends_at=ends_at)
    assert delegator is not None and delegate is not None
    # 锁住委托人：同一人同时发两条 /delegate 也不会各建一条重叠的委托
    Approver.objects.select_for_update().filter(pk=delegator.pk).exists()
    overlapping = Delegation.objects.filter(delegator=delegator, delegate=delegate, revoked_at__isnull=True,
                                            starts_at__lt=ends_at, ends_at__gt=starts_at).first()
    if overlapping is not None:
        raise PolicyError(_("你已把审批权委托给 %(who)s（%(start)s 至 %(end)s），请先撤销再重新委托。") % {
            "who": delegate.label, "start": _when(overlapping.starts_at), "end": _when(overlapping.ends_at)},
            code="delegation_exists")
    delegation = Delegation.objects.create(
        delegator=delegator, delegate=delegate, starts_at=starts_at, ends_at=ends_at,
        projects=list(dict.fromkeys(p.strip() for p in projects if p.strip())),
        environments=list(dict.fromkeys(normalize_environment(e) for e in environments if e.strip())),
        reason=(reason or "").strip()[:1000], created_by=actor or delegator,
    )
    policy_event_record(kind=PolicyEventKind.DELEGATION_GRANTED, channel=channel, actor=actor or delegator,
                        delegation=delegation, details={
                            "delegator": delegator.username, "delegate": delegate.username,
                            "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                            "projects": delegation.projects, "environments": delegation.environments,
                            "reason": delegation.reason})
    return delegation


def _revoke(delegation: Delegation, *, actor: Approver | None, channel: str, now: datetime) -> bool:
    changed = Delegation.objects.filter(pk=delegation.pk, revoked_at__isnull=True).update(revoked_at=now,
                                                                                         revoked_by=actor)
    if changed:
        delegation.revoked_at, delegation.revoked_by = now, actor
        policy_event_record(kind=PolicyEventKind.DELEGATION_REVOKED, channel=channel, actor=actor,
                            delegation=delegation, details={"delegator": delegation.delegator.username,
                                                            "delegate": delegation.delegate.username})
    return bool(changed)


@transaction.atomic
def delegation_revoke(*, delegator: Approver | None, delegate: Approver | None, channel: str,
                      actor: Approver | None = None) -> list[Delegation]:
    """撤销 delegator 给 delegate 的所有未到期委托（含尚未开始的）。没有可撤销的时报错。"""
    if delegator is None or delegate is None:
        raise PolicyError(_("委托人与受托人都必须是登记过的审批人。"), code="unknown_delegate")
    now = timezone.now()
    rows = list(Delegation.objects.filter(delegator=delegator, delegate=delegate, revoked_at__isnull=True,
                                          ends_at__gt=now).select_related("delegator", "delegate"))
    revoked = [d for d in rows if _revoke(d, actor=actor or delegator, channel=channel, now=now)]
    if not revoked:
        raise PolicyError(_("你没有委托给 %(who)s 的有效委托。") % {"who": delegate.label}, code="no_delegation")
    return revoked


@transaction.atomic
def delegation_revoke_one(*, delegation: Delegation, actor: Approver | None, channel: str) -> bool:
    """后台撤销某一条委托；已撤销的返回 False。"""
    return _revoke(delegation, actor=actor, channel=channel, now=timezone.now())


def delegations_for(person: Approver, *, at: datetime | None = None) -> list[Delegation]:
    """此人给出与收到的、尚未结束的委托（/delegate 不带参数时列出）。"""
    at = at or timezone.now()
    return list(Delegation.objects.filter(Q(delegator=person) | Q(delegate=person), revoked_at__isnull=True,
                                          ends_at__gt=at).select_related("delegator", "delegate")
                .order_by("starts_at", "pk"))
