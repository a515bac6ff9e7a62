"""审批的生命周期（services write）：创建、投票与决定、补充理由、取消、镜像 Jenkins 的决定、记录 Jenkins 操作。

终态只有一个入口：close_many（一行或多行的条件更新）。决定、取消、镜像、取代、超时扫描都经过它，
只有真正改到行的调用者写历史、投递副作用——双击、两个审批人同时点、决定与超时扫描赛跑，都只落一个结果。
Telegram 与 Jenkins 的副作用一律在事务提交后按任务名投递（approvals.effects）；本模块在导入时
不依赖 jenkins_bridge 与 telegram_bot。
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.audit import policy_event_record
from accounts.delegations import delegations_active
from accounts.environments import normalize_environment
from accounts.freeze import FreezeHit
from accounts.models import MAX_TIMEOUT_MINUTES, Approver, PolicyEventKind, TimeoutPolicy
from accounts.rules import resolve_rule
from accounts.selectors import approver_for_requester
from approvalbot.metrics import DECISION_LATENCY, DECISIONS

from . import effects
from .admission import approval_admit, emergency_reason_clean, emergency_record
from .display import voter_label
from .errors import AlreadyVoted, InvalidRequest, PermissionDenied, SelfApprovalDenied, already_decided_error
from .freeze import FROZEN, frozen_reason
from .history import event_record
from .models import (
    Approval,
    ApprovalEvent,
    Channel,
    EventKind,
    JenkinsActionState,
    ResumeMode,
    Status,
    Vote,
    generate_public_id,
)
from .policy import already_voted_message, best_hat, decision_right, earlier_vote
from .quorum import quorum_state

logger = logging.getLogger(__name__)

MAX_REASON_LENGTH = 1000
# 一次构建在审批处最多等 MAX_TIMEOUT_MINUTES；同一个构建键隔了更久再出现，只能是任务被重建后构建号复用
BUILD_KEY_REUSE_AFTER = timedelta(minutes=MAX_TIMEOUT_MINUTES) + timedelta(days=1)


@dataclass(frozen=True)
class DecisionOutcome:
    """approval_decide 的结果：final=True 表示这一票让审批进入终态。"""

    approval: Approval
    vote: Vote
    final: bool
    received: int  # 此刻的同意票数（含这一票）
    missing: tuple[str, ...] = ()  # 还缺的必需角色（X1；紧急发布的“管理员”）


# ---------------------------------------------------------------- 历史与查找


def jenkins_server_model() -> Any:
    """审批所属 Jenkins 的模型类，从外键取得：领域层不在导入时依赖 jenkins_bridge。"""
    return Approval._meta.get_field("jenkins_server").related_model


def build_key_reused(first_seen: datetime) -> bool:
    """同一个（Jenkins、任务、构建号）上次出现已超过 BUILD_KEY_REUSE_AFTER：视为另一次构建。"""
    return first_seen < timezone.now() - BUILD_KEY_REUSE_AFTER


# ---------------------------------------------------------------- 终态：唯一的入口


def lock_rows(queryset: QuerySet, *, skip_locked: bool = False) -> QuerySet:
    """锁住查询到的行。skip_locked：正被别人锁着的行（如正在被决定）直接跳过，留给下一轮扫描。"""
    if skip_locked and connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True)
    return queryset.select_for_update()


def close_many(ids: Iterable[int], *, skip_locked: bool = False, **options: Any) -> list[int]:
    """把仍为 pending 的这些审批改到终态，返回真正改到的 id。调用方须在事务内。

    先锁行（超时扫描 skip_locked：正被人决定的行跳过），再带 status=pending 条件更新：赛跑的另一方
    已改过的行不会被改第二次，也不会多一条历史。选项见 close_rows。
    """
    pending = Approval.objects.filter(pk__in=list(ids), status=Status.PENDING).order_by("pk")
    return close_rows(_lock_for_close(pending, skip_locked=skip_locked), **options)


def _lock_for_close(queryset: QuerySet[Approval], *, skip_locked: bool) -> list[Approval]:
    """锁住要关闭的行（调用方已按 status=pending 筛过），只取写历史要用的几列。"""
    return list(lock_rows(queryset.only("pk", "public_id", "created_at", "expires_at", "timeout_policy"),
                          skip_locked=skip_locked))


def close_rows(
    rows: list[Approval],
    *,
    status: str,
    reason: str,
    channel: str,
    kind: str,
    jenkins_action: bool,
    actor: Approver | None = None,
    actor_name: str = "",
    superseded_by: Approval | None = None,
    details: Callable[[Approval], dict[str, Any]] | dict[str, Any] | None = None,
    now: datetime | None = None,
    instance: Approval | None = None,
    reason_code: str = "",
    decided_by_name: str | None = None,
    freeze: FreezeHit | None = None,
) -> list[int]:
    """终态的唯一写入处：rows 是本事务已锁住的待审批。只对它们写历史（details 可按行计算）、提交后投递副作用。

    instance：只关一行时传入它的对象，改到了就把新值写回（调用方不必再查一次库）。
    reason_code：机器可读的原因（frozen）；decided_by_name：决定人的显示名（代投时“B（代 A）”）；
    freeze：封版开始时被拒绝的待审批，记下是哪个封版。
    """
    if not rows:
        return []
    now = now or timezone.now()
    fields: dict[str, Any] = {
        "status": status,
        "decided_at": now,
        "decided_by": actor,
        "decided_by_name": (decided_by_name if decided_by_name is not None
                            else actor.label if actor else actor_name)[:150],
        "decision_channel": channel,
        "reason": reason[:MAX_REASON_LENGTH],
        "next_reminder_at": None,
        "jenkins_action_state": JenkinsActionState.PENDING if jenkins_action else JenkinsActionState.NONE,
        "jenkins_action_due_at": now if jenkins_action else None,
        "updated_at": now,
        "reason_code": reason_code,
    }
    if superseded_by is not None:
        fields["superseded_by"] = superseded_by
    if freeze is not None:
        fields.update(freeze_window=freeze.window, freeze_name=freeze.name[:100], freeze_ends_at=freeze.ends_at)
    changed = Approval.objects.filter(pk__in=[r.pk for r in rows], status=Status.PENDING).update(**fields)
    if changed != len(rows):  # pragma: no cover - 行已锁住，不会发生；发生了说明锁没起作用，宁可整体回滚
        raise RuntimeError(f"close_rows: locked {len(rows)} rows but changed {changed}")
    ApprovalEvent.objects.bulk_create([
        ApprovalEvent(approval_id=row.pk, kind=kind, channel=channel, actor=actor,
                      actor_name=fields["decided_by_name"],
                      details={"reason": reason, **(details(row) if callable(details) else (details or {}))})
        for row in rows
    ])
    closed = [row.pk for row in rows]
    if instance is not None and instance.pk in closed:
        for name, value in fields.items():
            setattr(instance, name, value)
    effects.approvals_closed(closed, jenkins_action=jenkins_action, timed_out=status == Status.TIMEOUT)
    waited = [(now - row.created_at).total_seconds() for row in rows] if status in DECIDED else []
    transaction.on_commit(lambda: _count_decisions(status, channel, len(closed), waited))
    return closed


DECIDED = (Status.APPROVED, Status.REJECTED)


def _count_decisions(status: str, channel: str, count: int, waited: list[float]) -> None:
    DECISIONS.labels(status=status, channel=channel or Channel.SYSTEM).inc(count)
    for seconds in waited:
        DECISION_LATENCY.observe(seconds)


def _close(approval: Approval, **options: Any) -> bool:
    """close_many 的一行版本：改到了就把新值写回这个实例。"""
    return bool(close_many([approval.pk], instance=approval, **options))


def expire_rows(queryset: QuerySet[Approval], *, now: datetime, skip_locked: bool, limit: int | None = None) -> list[int]:
    """把查询到的、已过截止时间的待审批置为 timeout（按各行快照的策略：reject 像拒绝一样中止 Jenkins，mark 只标记）。

    超时扫描与“决定时发现已过期”共用这一处；锁行一次，每种策略一条 UPDATE。
    """
    due = queryset.filter(status=Status.PENDING, expires_at__lte=now).order_by("expires_at", "pk")
    rows = _lock_for_close(due[:limit] if limit else due, skip_locked=skip_locked)
    expired: list[int] = []
    for reject in (True, False):
        group = [row for row in rows if (row.timeout_policy == TimeoutPolicy.REJECT) is reject]
        expired += close_rows(
            group, status=Status.TIMEOUT, reason=_("超过截止时间无人审批"), channel=Channel.SYSTEM,
            kind=EventKind.TIMEOUT, jenkins_action=reject, now=now,
            details=lambda row: {"policy": row.timeout_policy, "expires_at": row.expires_at.isoformat()},
        )
    return expired


def _lock(approval: Approval | int) -> Approval:
    # 不 select_related：MariaDB 上 FOR UPDATE 会连带锁住关联的 Jenkins 行，与创建审批的加锁顺序相反而死锁
    pk = approval.pk if isinstance(approval, Approval) else approval
    return Approval.objects.select_for_update().get(pk=pk)


# ---------------------------------------------------------------- 创建


@dataclass(frozen=True)
class BuildKey:
    jenkins_server: Any
    job_name: str
    build_number: int
    input_id: str

    def lookup(self) -> dict[str, Any]:
        return {"jenkins_server": self.jenkins_server, "job_name": self.job_name,
                "build_number": self.build_number, "input_id": self.input_id}


def approval_create(
    *,
    job_name: str,
    build_number: int,
    environment: str,
    jenkins_server: Any = None,
    project: str = "",
    input_id: str = "",
    build_url: str = "",
    callback_url: str = "",
    version: str = "",
    description: str = "",
    operation: str = "",
    requested_by: str = "",
    timeout_minutes: int | None = None,
    channel: str = Channel.API,
    emergency: bool = False,
    emergency_reason: str = "",
) -> tuple[Approval, bool]:
    """创建审批；同一 (Jenkins, 任务, 构建号, 阶段) 重复调用返回已有的那条（幂等）。返回 (approval, created)。

    同一台 Jenkins 的创建在它那一行上排队：并发的相同请求只建一条，同任务同环境只留最新构建待审批（X17）。
    封版期间（X4）的申请照样记录，随即拒绝（reason_code=frozen）；紧急发布（emergency，须写理由）照常等待，
    但在规则的票数之外还要一位管理员同意。
    """
    key = _build_key(jenkins_server=jenkins_server, job_name=job_name, build_number=build_number, input_id=input_id)
    reason = emergency_reason_clean(emergency=emergency, reason=emergency_reason)
    if timeout_minutes is not None and not (1 <= timeout_minutes <= MAX_TIMEOUT_MINUTES):
        raise InvalidRequest(
            _("timeout_minutes 必须在 1 到 %(max)s 之间。") % {"max": MAX_TIMEOUT_MINUTES}, code="invalid_timeout"
        )
    with transaction.atomic():
        _queue_behind_other_creates(key.jenkins_server)
        existing = Approval.objects.filter(**key.lookup()).order_by("-generation").first()
        if existing and not build_key_reused(existing.created_at):
            return existing, False
        if existing and existing.status == Status.PENDING:
            # 任务被重建、构建号重来：这是另一次构建，决不能沿用旧的“已同意”
            approval_cancel(approval=existing, reason=_("同一构建号被新的构建重新使用"), channel=Channel.SYSTEM)
        env = normalize_environment(environment)
        rule = resolve_rule(project or job_name, env)
        approval = Approval(
            **key.lookup(), generation=existing.generation + 1 if existing else 0, build_url=build_url,
            callback_url=callback_url, resume_mode=_resume_mode(input_id=key.input_id, callback_url=callback_url),
            environment=env[:32], environment_raw=(environment or "")[:64], version=version,
            description=description, operation=operation, requested_by=requested_by,
            requester=approver_for_requester(requested_by),
        )
        hit = approval_admit(approval, rule, project=project or job_name, timeout_minutes=timeout_minutes,
                             emergency=emergency, emergency_reason=reason, now=timezone.now())
        _save_with_public_id(approval)
        event_record(
            approval=approval, kind=EventKind.CREATED, channel=channel, actor_name=requested_by,
            details={"resume_mode": approval.resume_mode, "rule": str(rule.rule) if rule.rule else None,
                     "matched": rule.matched, "expires_at": approval.expires_at.isoformat()},
        )
        if hit is not None and not emergency:
            _close(approval, status=Status.REJECTED, reason=frozen_reason(hit), reason_code=FROZEN,
                   channel=Channel.SYSTEM, kind=EventKind.FROZEN, jenkins_action=True,
                   details={"window": hit.name, "windows": list(hit.names), "ends_at": hit.ends_at.isoformat()})
            effects.policy_notice(approval.pk, FROZEN)
        elif emergency:
            emergency_record(approval, hit, channel=channel)
        if approval.status == Status.PENDING and not _superseded_at_birth(approval):
            _supersede_older(approval)
            effects.approval_created(approval.pk)
    return approval, True


def _build_key(*, jenkins_server: Any, job_name: str, build_number: int | None, input_id: str) -> BuildKey:
    job_name = (job_name or "").strip()
    if not job_name:
        raise InvalidRequest(_("缺少项目/任务名。"), code="missing_project")
    if build_number is None or build_number < 0:
        raise InvalidRequest(_("构建号必须是非负整数。"), code="invalid_build_number")
    server = jenkins_server or jenkins_server_model().objects.default()
    return BuildKey(server, job_name, build_number, (input_id or "").strip())


def _queue_behind_other_creates(server: Any) -> None:
    """锁住这台 Jenkins 的行：同一台的创建一个接一个，幂等检查与“取代旧构建”才看得到彼此。

    否则 MariaDB 上并发的相同请求会在唯一索引上死锁，并发的新旧构建会各自只取代自己看到的那些。
    创建一次只要几毫秒，排队的代价可以忽略。
    """
    list(type(server).objects.select_for_update().filter(pk=server.pk).values_list("pk", flat=True))


def _resume_mode(*, input_id: str, callback_url: str) -> str:
    if input_id:
        return ResumeMode.INPUT
    if callback_url:
        return ResumeMode.WEBHOOK
    return ResumeMode.POLL


def _save_with_public_id(approval: Approval) -> None:
    for _attempt in range(5):
        approval.public_id = generate_public_id()
        try:
            with transaction.atomic():
                approval.save()
            return
        except IntegrityError:
            approval.pk = None  # 公开编号碰撞（极少见），换一个再试；构建键的重复已在排队后排除
    raise RuntimeError("could not allocate a unique public id")  # pragma: no cover - 40 bit 随机数连撞 5 次


def _same_job_pending(approval: Approval) -> QuerySet[Approval]:
    return Approval.objects.filter(jenkins_server_id=approval.jenkins_server_id, job_name=approval.job_name,
                                   environment=approval.environment, status=Status.PENDING).exclude(pk=approval.pk)


def _superseded_at_birth(approval: Approval) -> bool:
    """更新的构建已经在等审批（请求到得晚的旧构建）：这一条生来就被它取代，不再通知审批人。"""
    newer = _same_job_pending(approval).filter(build_number__gt=approval.build_number).order_by("-build_number").first()
    if newer is None:
        return False
    reason = _("被更新的构建 #%(build)s 取代（审批 %(id)s）") % {"build": newer.build_number, "id": newer.public_id}
    _close(approval, status=Status.CANCELLED, reason=reason, channel=Channel.SYSTEM, kind=EventKind.SUPERSEDED,
           jenkins_action=True, superseded_by=newer)
    return True


def _supersede_older(approval: Approval) -> None:
    older = list(_same_job_pending(approval).filter(build_number__lt=approval.build_number).values_list("pk", flat=True))
    if not older:
        return
    reason = _("被更新的构建 #%(build)s 取代（审批 %(id)s）") % {"build": approval.build_number, "id": approval.public_id}
    closed = close_many(older, status=Status.CANCELLED, reason=reason, channel=Channel.SYSTEM,
                        kind=EventKind.SUPERSEDED, jenkins_action=True, superseded_by=approval)
    if closed:
        logger.info("审批 %s 取代了 %d 条更早构建的待审批", approval.public_id, len(closed))


# ---------------------------------------------------------------- 决定


def approval_decide(
    *,
    approval: Approval | int,
    approver: Approver | None,
    decision: str,
    reason: str = "",
    channel: str,
) -> DecisionOutcome:
    """记录一票。权限在此刻检查（P9，含升级 X15 与委托 X16）；发起人不能审批自己的构建（X2）；
    同意票达到所需票数、且必需角色都有人（X1）即通过，第一张拒绝票即拒绝。

    失败抛 ApprovalError 的子类（带中文原因）；被拒绝的尝试也记入历史。
    """
    if decision not in Vote.Decision.values:
        raise InvalidRequest(_("未知的决定：%(d)s") % {"d": decision}, code="invalid_decision")
    reason = (reason or "").strip()[:MAX_REASON_LENGTH]
    pk = approval.pk if isinstance(approval, Approval) else approval
    try:
        with transaction.atomic():
            outcome = _decide_locked(pk=pk, approver=approver, decision=decision, reason=reason, channel=channel)
    except (PermissionDenied, AlreadyVoted) as exc:
        # 拒绝的尝试也是审计的一部分；事务已回滚，单独写一条
        event_record(approval=pk, kind=EventKind.DENIED, channel=channel, actor=approver,
                     details={"code": exc.code, "reason": exc.message, "decision": decision})
        raise
    if outcome is None:
        # 截止时间已过而扫描还没跑到：本次调用已把它置为超时（已提交），再告诉操作者
        raise already_decided_error(Approval.objects.get(pk=pk))
    return outcome


def _decide_locked(*, pk: int, approver: Approver | None, decision: str, reason: str,
                   channel: str) -> DecisionOutcome | None:
    locked = _lock(pk)
    now = timezone.now()
    if locked.status == Status.PENDING and locked.expires_at <= now:
        expire_rows(Approval.objects.filter(pk=locked.pk), now=now, skip_locked=False)
        return None
    if locked.status != Status.PENDING:
        raise already_decided_error(locked)
    rule = resolve_rule(locked.project, locked.environment)
    delegations = delegations_active(at=now)
    right = decision_right(locked, approver, rule=rule, delegations=delegations)
    if not right:
        raise (SelfApprovalDenied if right.self_approval else PermissionDenied)(right.reason, code=right.code)
    assert approver is not None
    if decision == Vote.Decision.APPROVE:
        right = best_hat(locked, approver, right, rule=rule, delegations=delegations)
    earlier = earlier_vote(locked, approver, votes=locked.votes.select_related("approver"), rule=rule,
                           delegations=delegations)
    if earlier is not None:
        raise AlreadyVoted(already_voted_message(locked, approver, earlier))
    try:
        with transaction.atomic():
            vote = Vote.objects.create(approval=locked, approver=approver, decision=decision, reason=reason,
                                       channel=channel, on_behalf_of=right.on_behalf_of, delegation=right.delegation)
    except IntegrityError:
        # 一人一票由唯一约束保证（合算一人的委托双方已在上面按行锁检查过）
        raise AlreadyVoted(_("你已经对审批 %(id)s 投过票了。") % {"id": locked.public_id}) from None
    quorum = quorum_state(locked, rule=rule)
    received, label = quorum.received, voter_label(vote)
    details = {"votes": received, "required": locked.required_approvals, "missing": list(quorum.missing)}
    if right.delegation is not None:
        details["on_behalf_of"] = right.on_behalf_of.username
        policy_event_record(kind=PolicyEventKind.DELEGATION_USED, channel=channel, actor=approver,
                            delegation=right.delegation, approval_public_id=locked.public_id,
                            details={"decision": decision, "delegator": right.on_behalf_of.username})
    if right.via == "escalation":
        details["via"] = "escalation"
    if decision == Vote.Decision.REJECT or quorum.complete:
        approved = decision == Vote.Decision.APPROVE
        _close(locked, status=Status.APPROVED if approved else Status.REJECTED, reason=reason, actor=approver,
               decided_by_name=label, channel=channel, kind=EventKind.APPROVED if approved else EventKind.REJECTED,
               jenkins_action=True, details=details, now=now)
        return DecisionOutcome(locked, vote, final=True, received=received, missing=quorum.missing)
    event_record(approval=locked, kind=EventKind.VOTE, channel=channel, actor=approver, actor_name=label,
                 details={"decision": decision, "reason": reason, **details})
    effects.approval_changed(locked.pk)
    return DecisionOutcome(locked, vote, final=False, received=received, missing=quorum.missing)


@transaction.atomic
def approval_reason_add(*, approval: Approval | int, approver: Approver, reason: str, channel: str) -> bool:
    """X3：按钮“一点即拒绝”之后补充拒绝理由。只有拒绝者本人、且还没有理由时可以补一次。

    状态不变（终态不变），只补 reason；记一条 reason_added 事件并刷新消息。返回是否写入。
    """
    reason = (reason or "").strip()[:MAX_REASON_LENGTH]
    if not reason:
        return False
    locked = _lock(approval)
    if locked.status != Status.REJECTED or locked.decided_by_id != approver.pk or locked.reason:
        return False
    Approval.objects.filter(pk=locked.pk, reason="").update(reason=reason, updated_at=timezone.now())
    Vote.objects.filter(approval=locked, approver=approver, decision=Vote.Decision.REJECT, reason="").update(
        reason=reason
    )
    event_record(approval=locked, kind=EventKind.REASON_ADDED, channel=channel, actor=approver,
                 details={"decision": Vote.Decision.REJECT, "reason": reason})
    effects.approval_changed(locked.pk)
    return True


@transaction.atomic
def approval_cancel(
    *, approval: Approval | int, reason: str, channel: str = Channel.SYSTEM, actor: Approver | None = None,
    jenkins_action: bool = False,
) -> bool:
    """取消（构建已结束、在 Jenkins 里被删除等）。已是终态则返回 False，不报错。"""
    pk = approval.pk if isinstance(approval, Approval) else approval
    return bool(close_many([pk], status=Status.CANCELLED, reason=reason, actor=actor, channel=channel,
                           kind=EventKind.CANCELLED, jenkins_action=jenkins_action))


@transaction.atomic
def approval_mirror_decision(*, approval: Approval | int, approved: bool, decided_by: str, reason: str = "") -> bool:
    """X12：在 Jenkins 自己的界面里被批准/中止的 input，镜像为本服务的决定（不再回写 Jenkins）。"""
    pk = approval.pk if isinstance(approval, Approval) else approval
    return bool(close_many(
        [pk], status=Status.APPROVED if approved else Status.REJECTED, reason=reason or _("在 Jenkins 中处理"),
        actor=approver_for_requester(decided_by), actor_name=decided_by, channel=Channel.JENKINS,
        kind=EventKind.APPROVED if approved else EventKind.REJECTED, jenkins_action=False,
        details={"jenkins_user": decided_by},
    ))
