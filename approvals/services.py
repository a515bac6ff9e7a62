"""审批的一切状态变化都经过这里（services write）。

并发约定：先 select_for_update 锁住审批行，再用 filter(status=pending).update(...) 的条件更新改状态，
并断言恰好改了一行——双击、两个审批人同时点、决定与超时扫描赛跑，都只会有一个结果落库。
Telegram 与 Jenkins 的副作用一律在事务提交后投递（approvals.effects）。
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Length
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from accounts.app_config import retention_days
from accounts.environments import normalize_environment
from accounts.models import Approver
from accounts.permissions import check_can_approve
from accounts.rules import resolve_rule
from jenkins_bridge.models import ENV_SERVER_NAME, ENV_SERVER_TOKEN_VARIABLE, JenkinsServer

from . import effects
from .errors import AlreadyDecided, AlreadyVoted, ApprovalNotFound, InvalidRequest, PermissionDenied, SelfApprovalDenied
from .models import (
    TERMINAL_STATUSES,
    Approval,
    ApprovalEvent,
    BuildLog,
    BuildResult,
    Channel,
    EventKind,
    JenkinsActionState,
    ResumeMode,
    Status,
    Vote,
    generate_public_id,
    normalize_public_id,
)
from .reminders import first_reminder_at

logger = logging.getLogger(__name__)

MAX_TIMEOUT_MINUTES = 7 * 24 * 60
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class DecisionOutcome:
    """approval_decide 的结果：final=True 表示这一票让审批进入终态。"""

    approval: Approval
    vote: Vote
    final: bool


# ---------------------------------------------------------------- 小工具


def event_record(
    *,
    approval: Approval,
    kind: str,
    channel: str = Channel.SYSTEM,
    actor: Approver | None = None,
    actor_name: str = "",
    details: dict[str, Any] | None = None,
) -> ApprovalEvent:
    """追加一条审批历史。所有模块（含 Telegram、Jenkins 任务）都用它写历史。"""
    return ApprovalEvent.objects.create(
        approval=approval,
        kind=kind,
        channel=channel,
        actor=actor,
        actor_name=actor_name or (actor.label if actor else ""),
        details=details or {},
    )


def format_time(value: datetime) -> str:
    return date_format(timezone.localtime(value), "Y-m-d H:i:s")


def already_decided_message(approval: Approval) -> str:
    """“已由 X 于 T 审批”——给第二个、迟到的决定者的回答。"""
    when = format_time(approval.decided_at) if approval.decided_at else "-"
    if approval.status == Status.TIMEOUT:
        return _("审批 %(id)s 已于 %(time)s 超时，不能再操作。") % {"id": approval.public_id, "time": when}
    if approval.status == Status.CANCELLED:
        return _("审批 %(id)s 已于 %(time)s 取消（%(reason)s），不能再操作。") % {
            "id": approval.public_id,
            "time": when,
            "reason": approval.reason or _("构建已结束"),
        }
    return _("审批 %(id)s 已由 %(who)s 于 %(time)s %(status)s。") % {
        "id": approval.public_id,
        "who": approval.decided_by_name or _("系统"),
        "time": when,
        "status": approval.get_status_display(),
    }


def already_decided_error(approval: Approval) -> AlreadyDecided:
    """第二个、迟到的决定得到的 409：消息与 details 都说清谁、何时、什么结果。"""
    return AlreadyDecided(
        already_decided_message(approval),
        details={"status": approval.status, "decided_by": approval.decided_by_name,
                 "decided_at": approval.decided_at.isoformat() if approval.decided_at else None},
    )


def approval_get(public_id: str) -> Approval:
    """按对外编号取审批；编号人手输入，大小写与 I/O 混淆都容忍。"""
    normalized = normalize_public_id(public_id or "")
    if not normalized or len(normalized) > 16 or not normalized.isascii() or not normalized.isalnum():
        raise ApprovalNotFound(_("审批编号「%(id)s」格式不正确。") % {"id": (public_id or "")[:32]}, code="invalid_id")
    try:
        return Approval.objects.select_related("jenkins_server", "decided_by").get(public_id=normalized)
    except Approval.DoesNotExist:
        raise ApprovalNotFound(_("找不到审批「%(id)s」。") % {"id": normalized}) from None


def jenkins_server_default() -> JenkinsServer:
    """默认 Jenkins：后台标记的默认服务器，否则是由环境变量定义、名为 default 的那台。

    环境变量定义的那台读出时以当前 JENKINS_URL/JENKINS_USER 为准（JenkinsServer.from_db），
    先于 JENKINS_URL 配好就被调用过、或运维后来改了地址，都不会用到第一次抄下的旧值。
    """
    from django.conf import settings

    server = JenkinsServer.objects.filter(is_default=True, is_active=True).first()
    if server is None:
        server, _created = JenkinsServer.objects.get_or_create(
            name=ENV_SERVER_NAME,
            defaults={"url": settings.JENKINS_URL, "username": settings.JENKINS_USER,
                      "api_token_env": ENV_SERVER_TOKEN_VARIABLE, "is_default": True},
        )
    return server


# 一次构建在审批处等待最多 MAX_TIMEOUT_MINUTES（7 天）；同一个构建键隔了更久再出现，只能是任务被重建后构建号复用
BUILD_KEY_REUSE_AFTER = timedelta(minutes=MAX_TIMEOUT_MINUTES) + timedelta(days=1)


def build_key_reused(first_seen: datetime) -> bool:
    """同一个（Jenkins、任务、构建号）上次出现已超过 BUILD_KEY_REUSE_AFTER：视为另一次构建。"""
    return first_seen < timezone.now() - BUILD_KEY_REUSE_AFTER


def approver_for_requester(requested_by: str) -> Approver | None:
    """按 Jenkins 用户 id / 用户名 / 邮箱认出发起人（用于防止自审 X2）。"""
    value = (requested_by or "").strip()
    if not value:
        return None
    lowered = value.lower().lstrip("@")
    for lookup in ({"jenkins_user__iexact": value}, {"username__iexact": lowered}, {"email__iexact": value},
                   {"telegram_username": lowered}):
        found = Approver.objects.filter(**lookup).first()
        if found:
            return found
    return None


def _is_requester(approval: Approval, approver: Approver) -> bool:
    if approval.requester_id is not None:
        return approval.requester_id == approver.pk
    raw = (approval.requested_by or "").strip().lower().lstrip("@")
    if not raw:
        return False
    names = {approver.username.lower(), approver.jenkins_user.lower(), approver.email.lower(),
             approver.telegram_username.lower()}
    return raw in names - {""}


# ---------------------------------------------------------------- 创建


@transaction.atomic
def approval_create(
    *,
    job_name: str,
    build_number: int,
    environment: str,
    jenkins_server: JenkinsServer | None = None,
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
) -> tuple[Approval, bool]:
    """创建审批；同一 (Jenkins, 任务, 构建号, 阶段) 重复调用返回已有的那条（幂等）。

    返回 (approval, created)。同任务同环境更早构建的待审批被取代为 cancelled（X17）。
    """
    jenkins_server = jenkins_server or jenkins_server_default()
    job_name = job_name.strip()
    if not job_name:
        raise InvalidRequest(_("缺少项目/任务名。"), code="missing_project")
    if build_number is None or build_number < 0:
        raise InvalidRequest(_("构建号必须是非负整数。"), code="invalid_build_number")
    input_id = (input_id or "").strip()
    key = {"jenkins_server": jenkins_server, "job_name": job_name, "build_number": build_number,
           "input_id": input_id}
    existing = Approval.objects.filter(**key).order_by("-generation").first()
    if existing and not build_key_reused(existing.created_at):
        return existing, False
    # 没有，或者同一个键的上一条早已过期：任务被重建、构建号重来，这是另一次构建，决不能沿用旧的“已同意”
    lookup = {**key, "generation": existing.generation + 1 if existing else 0}
    if existing and existing.status == Status.PENDING:
        approval_cancel(approval=existing, reason=_("同一构建号被新的构建重新使用"), channel=Channel.SYSTEM)

    env = normalize_environment(environment)
    rule = resolve_rule(project or job_name, env)
    if timeout_minutes is not None and not (1 <= timeout_minutes <= MAX_TIMEOUT_MINUTES):
        raise InvalidRequest(
            _("timeout_minutes 必须在 1 到 %(max)s 之间。") % {"max": MAX_TIMEOUT_MINUTES}, code="invalid_timeout"
        )
    minutes = timeout_minutes or rule.timeout_minutes
    now = timezone.now()
    expires_at = now + timedelta(minutes=minutes)
    if input_id:
        mode = ResumeMode.INPUT
    elif callback_url:
        mode = ResumeMode.WEBHOOK
    else:
        mode = ResumeMode.POLL
    approval = Approval(
        **lookup,
        build_url=build_url,
        callback_url=callback_url,
        resume_mode=mode,
        # 任务名可长达 255，项目列是 200；环境列 32（未知环境保留原值，可能较长）
        project=(rule.project if rule.matched else (project or job_name))[:200],
        project_rule=rule.rule,
        environment=env[:32],
        environment_raw=(environment or "")[:64],
        version=version,
        description=description,
        operation=operation,
        requested_by=requested_by,
        requester=approver_for_requester(requested_by),
        required_approvals=max(1, rule.required_approvals),
        expires_at=expires_at,
        timeout_policy=rule.timeout_policy,
        stop_build=rule.stop_build,
        reminder_policy=rule.reminder_policy(),
        chat_id=rule.chat_id,
    )
    approval.next_reminder_at = first_reminder_at(approval.reminder_policy, created_at=now, expires_at=expires_at)
    for _attempt in range(5):
        approval.public_id = generate_public_id()
        try:
            with transaction.atomic():
                approval.save()
            break
        except IntegrityError:
            # 并发的同一构建请求抢先建好了：幂等返回那一条
            existing = Approval.objects.filter(**lookup).first()
            if existing:
                return existing, False
            approval.pk = None  # 公开编号碰撞（极少见），换一个再试
    else:  # pragma: no cover - 40 bit 随机数连续碰撞 5 次几乎不可能
        raise RuntimeError("could not allocate a unique public id")

    event_record(
        approval=approval,
        kind=EventKind.CREATED,
        channel=channel,
        actor_name=requested_by,
        details={"resume_mode": mode, "rule": str(rule.rule) if rule.rule else None, "matched": rule.matched,
                 "expires_at": expires_at.isoformat()},
    )
    _supersede_older(approval)
    effects.approval_created(approval.pk)
    return approval, True


def _supersede_older(approval: Approval) -> None:
    older = list(
        Approval.objects.select_for_update()
        .filter(
            jenkins_server=approval.jenkins_server,
            job_name=approval.job_name,
            environment=approval.environment,
            status=Status.PENDING,
            build_number__lt=approval.build_number,
        )
        .order_by("pk")
    )
    for old in older:
        reason = _("被更新的构建 #%(build)s 取代（审批 %(id)s）") % {
            "build": approval.build_number,
            "id": approval.public_id,
        }
        if _close(old, status=Status.CANCELLED, reason=reason, actor=None, channel=Channel.SYSTEM,
                  kind=EventKind.SUPERSEDED, jenkins_action=True, superseded_by=approval):
            logger.info("审批 %s 被 %s 取代", old.public_id, approval.public_id)


# ---------------------------------------------------------------- 终态转换（唯一出口）


def _close(
    approval: Approval,
    *,
    status: str,
    reason: str,
    actor: Approver | None,
    channel: str,
    kind: str,
    jenkins_action: bool,
    superseded_by: Approval | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """条件更新到终态；只有真正改到一行的调用者写事件、投递副作用。调用方须在事务内。"""
    now = timezone.now()
    fields = {
        "status": status,
        "decided_at": now,
        "decided_by": actor,
        "decided_by_name": actor.label if actor else "",
        "decision_channel": channel,
        "reason": reason[:MAX_REASON_LENGTH],
        "next_reminder_at": None,
        "jenkins_action_state": JenkinsActionState.PENDING if jenkins_action else JenkinsActionState.NONE,
        "updated_at": now,
    }
    if superseded_by is not None:
        fields["superseded_by"] = superseded_by
    changed = Approval.objects.filter(pk=approval.pk, status=Status.PENDING).update(**fields)
    if changed != 1:
        return False
    for key, value in fields.items():
        setattr(approval, key, value)
    event_record(
        approval=approval,
        kind=kind,
        channel=channel,
        actor=actor,
        details={"reason": reason, **(details or {})},
    )
    effects.approval_closed(approval.pk, jenkins_action=jenkins_action)
    return True


def _lock(approval: Approval | int) -> Approval:
    pk = approval.pk if isinstance(approval, Approval) else approval
    return Approval.objects.select_for_update().select_related("jenkins_server").get(pk=pk)


# ---------------------------------------------------------------- 决定


def approval_decide(
    *,
    approval: Approval | int,
    approver: Approver | None,
    decision: str,
    reason: str = "",
    channel: str,
) -> DecisionOutcome:
    """记录一票。权限在此刻检查（P9）；发起人不能审批自己的构建（X2）；
    同意票达到所需票数即通过，第一张拒绝票即拒绝。

    失败抛 ApprovalError 的子类（带中文原因）；被拒绝的尝试也记入历史。
    """
    if decision not in Vote.Decision.values:
        raise InvalidRequest(_("未知的决定：%(d)s") % {"d": decision}, code="invalid_decision")
    reason = (reason or "").strip()[:MAX_REASON_LENGTH]
    try:
        with transaction.atomic():
            outcome = _decide_locked(approval=approval, approver=approver, decision=decision, reason=reason,
                                     channel=channel)
    except (PermissionDenied, AlreadyVoted) as exc:
        # 拒绝的尝试也是审计的一部分；事务已回滚，单独写一条
        pk = approval.pk if isinstance(approval, Approval) else approval
        ApprovalEvent.objects.create(
            approval_id=pk,
            kind=EventKind.DENIED,
            channel=channel,
            actor=approver,
            actor_name=approver.label if approver else "",
            details={"code": exc.code, "reason": exc.message, "decision": decision},
        )
        raise
    if outcome is None:
        # 截止时间已过而扫描还没跑到：本次调用已把它置为超时（已提交），再告诉操作者
        expired = Approval.objects.get(pk=approval.pk if isinstance(approval, Approval) else approval)
        raise already_decided_error(expired)
    return outcome


def _decide_locked(
    *, approval: Approval | int, approver: Approver | None, decision: str, reason: str, channel: str
) -> DecisionOutcome | None:
    locked = _lock(approval)
    if locked.status == Status.PENDING and locked.expires_at <= timezone.now():
        _expire_locked(locked)
        return None
    if locked.status != Status.PENDING:
        raise already_decided_error(locked)
    result = check_can_approve(approver, project=locked.project, environment=locked.environment)
    if not result:
        raise PermissionDenied(result.reason, code=result.code)
    assert approver is not None
    if _is_requester(locked, approver):
        raise SelfApprovalDenied(_("你是这次构建的发起人，不能审批自己的发布。"))
    if Vote.objects.filter(approval=locked, approver=approver).exists():
        raise AlreadyVoted(_("你已经对审批 %(id)s 投过票了。") % {"id": locked.public_id})
    vote = Vote.objects.create(approval=locked, approver=approver, decision=decision, reason=reason, channel=channel)
    received = Vote.objects.filter(approval=locked, decision=Vote.Decision.APPROVE).count()
    if decision == Vote.Decision.REJECT or received >= locked.required_approvals:
        approved = decision == Vote.Decision.APPROVE
        closed = _close(
            locked,
            status=Status.APPROVED if approved else Status.REJECTED,
            reason=reason,
            actor=approver,
            channel=channel,
            kind=EventKind.APPROVED if approved else EventKind.REJECTED,
            jenkins_action=True,
            details={"votes": received, "required": locked.required_approvals},
        )
        if not closed:
            # 行锁之外的第二道保险：条件更新没改到行，说明别人已决定；抛出使本票随事务回滚
            locked.refresh_from_db()
            raise already_decided_error(locked)
        return DecisionOutcome(locked, vote, final=True)
    event_record(approval=locked, kind=EventKind.VOTE, channel=channel, actor=approver,
                 details={"decision": decision, "reason": reason, "votes": received,
                          "required": locked.required_approvals})
    effects.approval_changed(locked.pk)
    return DecisionOutcome(locked, vote, final=False)


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
    now = timezone.now()
    Approval.objects.filter(pk=locked.pk, reason="").update(reason=reason, updated_at=now)
    Vote.objects.filter(approval=locked, approver=approver, decision=Vote.Decision.REJECT, reason="").update(
        reason=reason
    )
    event_record(approval=locked, kind=EventKind.REASON_ADDED, channel=channel, actor=approver,
                 details={"decision": Vote.Decision.REJECT, "reason": reason})
    effects.approval_changed(locked.pk)
    return True


@transaction.atomic
def approval_expire(*, approval: Approval | int, now: datetime | None = None) -> bool:
    """超时扫描调用：过了截止时间仍待审批的，按快照的策略置为 timeout。

    返回是否真的改了状态；与决定赛跑时，输家得到 False 而不是第二个结果。
    """
    now = now or timezone.now()
    locked = _lock(approval)
    if locked.status != Status.PENDING or locked.expires_at > now:
        return False
    return _expire_locked(locked)


def _expire_locked(locked: Approval) -> bool:
    reject = locked.timeout_policy == "reject"
    changed = _close(
        locked,
        status=Status.TIMEOUT,
        reason=_("超过截止时间无人审批"),
        actor=None,
        channel=Channel.SYSTEM,
        kind=EventKind.TIMEOUT,
        # reject 策略：像拒绝一样中止 Jenkins；mark 策略：只标记，不动 Jenkins
        jenkins_action=reject,
        details={"policy": locked.timeout_policy, "expires_at": locked.expires_at.isoformat()},
    )
    if changed:
        effects.approval_timed_out(locked.pk)
    return changed


@transaction.atomic
def approval_cancel(
    *, approval: Approval | int, reason: str, channel: str = Channel.SYSTEM, actor: Approver | None = None,
    jenkins_action: bool = False,
) -> bool:
    """取消（构建已结束、在 Jenkins 里被处理等）。已是终态则返回 False，不报错。"""
    locked = _lock(approval)
    if locked.status != Status.PENDING:
        return False
    return _close(locked, status=Status.CANCELLED, reason=reason, actor=actor, channel=channel,
                  kind=EventKind.CANCELLED, jenkins_action=jenkins_action)


@transaction.atomic
def approval_mirror_decision(*, approval: Approval | int, approved: bool, decided_by: str, reason: str = "") -> bool:
    """X12：在 Jenkins 自己的界面里被批准/中止的 input，镜像为本服务的决定（不再回写 Jenkins）。"""
    locked = _lock(approval)
    if locked.status != Status.PENDING:
        return False
    actor = approver_for_requester(decided_by)
    status = Status.APPROVED if approved else Status.REJECTED
    changed = _close(
        locked,
        status=status,
        reason=reason or _("在 Jenkins 中处理"),
        actor=actor,
        channel=Channel.JENKINS,
        kind=EventKind.APPROVED if approved else EventKind.REJECTED,
        jenkins_action=False,
        details={"jenkins_user": decided_by},
    )
    if changed and actor is None and decided_by:
        Approval.objects.filter(pk=locked.pk).update(decided_by_name=decided_by[:150])
    return changed


# ---------------------------------------------------------------- 提醒 / Jenkins 操作状态（供任务使用）


def _due_rows_locked(qs):
    """锁住到期行；MySQL/MariaDB 用 SKIP LOCKED，让并发的两次扫描各拿各的，正被人决定的行也直接跳过。"""
    from django.db import connection

    if connection.features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=True)
    return qs.select_for_update()


@transaction.atomic
def approvals_claim_due_reminders(*, now: datetime | None = None, limit: int = 500) -> dict[int | None, list[int]]:
    """认领一批到期提醒：推进 next_reminder_at、计数加一、写历史，返回 {chat_id: [approval pk…]}。

    整批在一个事务里用很少的查询完成：锁行一条；按（第几次提醒、间隔）分组，每组一条 UPDATE，
    下一次时间在数据库里按各行的计划时间推算；历史一条 bulk_create。同一行不会被两次扫描各发一次。
    真正发送在提交后按群合并为一条摘要（X6）。
    """
    from django.db.models import Case, DateTimeField, F, Value, When

    from .reminders import gap_minutes, policy_values

    now = now or timezone.now()
    rows = list(
        _due_rows_locked(
            Approval.objects.filter(status=Status.PENDING, next_reminder_at__lte=now, expires_at__gt=now)
            .order_by("next_reminder_at", "id")
            .values_list("id", "reminder_count", "reminder_policy", "chat_id")[:limit]
        )
    )
    if not rows:
        return {}
    by_chat: dict[int | None, list[int]] = {}
    groups: dict[tuple[int, float | None], list[int]] = {}
    events = []
    for pk, count, policy, chat_id in rows:
        number = count + 1
        _interval, _backoff, max_count = policy_values(policy)
        gap = gap_minutes(policy, number + 1) if number < max_count else None
        groups.setdefault((number, gap), []).append(pk)
        by_chat.setdefault(chat_id, []).append(pk)
        events.append(ApprovalEvent(approval_id=pk, kind=EventKind.REMINDER, channel=Channel.SYSTEM,
                                    details={"number": number, "chat_id": chat_id}))
    for (number, gap), ids in groups.items():
        if gap is None:
            next_at = Value(None, output_field=DateTimeField())
        else:
            # 以计划时间而不是发送时间推算下一次，扫描偶尔迟到不会让时间表漂移；截止之后不再提醒
            shifted = F("next_reminder_at") + timedelta(minutes=gap)
            next_at = Case(When(expires_at__gt=shifted, then=shifted), default=None, output_field=DateTimeField())
        Approval.objects.filter(pk__in=ids).update(reminder_count=number, next_reminder_at=next_at)
    ApprovalEvent.objects.bulk_create(events, batch_size=limit)
    for chat_id, ids in by_chat.items():
        effects.reminders_due(chat_id, ids)
    return by_chat


@transaction.atomic
def approvals_expire_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """超时扫描（R9–R11）：把一批过了截止时间的待审批置为 timeout，按各自快照的策略决定是否动 Jenkins。

    与决定赛跑：决定方持有行锁时本扫描跳过该行（SKIP LOCKED），下一轮再看；谁先改到行谁赢，只落一个结果。
    """
    now = now or timezone.now()
    rows = list(
        _due_rows_locked(
            Approval.objects.filter(status=Status.PENDING, expires_at__lte=now)
            .order_by("expires_at", "id")
            .only("id", "timeout_policy", "expires_at")[:limit]
        )
    )
    if not rows:
        return []
    expired: list[int] = []
    events = []
    for reject in (True, False):
        ids = [r.pk for r in rows if (r.timeout_policy == "reject") is reject]
        if not ids:
            continue
        Approval.objects.filter(pk__in=ids, status=Status.PENDING).update(
            status=Status.TIMEOUT,
            decided_at=now,
            decided_by=None,
            decided_by_name="",
            decision_channel=Channel.SYSTEM,
            reason=_("超过截止时间无人审批"),
            next_reminder_at=None,
            jenkins_action_state=JenkinsActionState.PENDING if reject else JenkinsActionState.NONE,
            updated_at=now,
        )
        for row in rows:
            if row.pk in ids:
                expired.append(row.pk)
                events.append(ApprovalEvent(
                    approval_id=row.pk, kind=EventKind.TIMEOUT, channel=Channel.SYSTEM,
                    details={"policy": row.timeout_policy, "expires_at": row.expires_at.isoformat()},
                ))
                effects.approval_closed(row.pk, jenkins_action=reject)
                effects.approval_timed_out(row.pk)
    ApprovalEvent.objects.bulk_create(events, batch_size=limit)
    return expired


def approval_record_jenkins_action(
    *, approval: Approval | int, ok: bool, action: str, error: str = "", permanent: bool = False,
    details: dict[str, Any] | None = None,
) -> None:
    """记录一次 Jenkins 操作的尝试与结果（成功、暂时失败将重试、永久失败）。"""
    from django.db.models import F

    pk = approval.pk if isinstance(approval, Approval) else approval
    now = timezone.now()
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
            jenkins_action_at=now,
        )
        ApprovalEvent.objects.create(
            approval_id=pk,
            kind=EventKind.JENKINS_ACTION if ok else EventKind.JENKINS_ERROR,
            channel=Channel.SYSTEM,
            details={"action": action, "ok": ok, "error": error[:2000], "permanent": permanent, **(details or {})},
        )
        if state == JenkinsActionState.FAILED:
            # 消息上原本写着“构建继续/已终止”：Jenkins 操作彻底失败时要让审批人看到，好去手动处理
            effects.approval_changed(pk)


# ---------------------------------------------------------------- 构建结果


@transaction.atomic
def build_result_record(
    *,
    job_name: str,
    build_number: int,
    result: str,
    jenkins_server: JenkinsServer | None = None,
    build_url: str = "",
    duration_ms: int | None = None,
    approval: Approval | None = None,
    details: dict[str, Any] | None = None,
) -> tuple[BuildResult, bool]:
    """记录构建结果（B1/B2）；同一构建重复回报只更新不重复通知。返回 (结果, 是否新建)。"""
    jenkins_server = jenkins_server or jenkins_server_default()
    if approval is None:
        approval = (
            Approval.objects.filter(jenkins_server=jenkins_server, job_name=job_name, build_number=build_number)
            .order_by("-created_at")
            .first()
        )
    defaults = {
        "approval": approval,
        "build_url": build_url or (approval.build_url if approval else ""),
        "result": result,
        "duration_ms": duration_ms,
        "project": approval.project if approval else job_name[:200],
        "environment": approval.environment if approval else "",
        "version": approval.version if approval else "",
    }
    stale = BuildResult.objects.filter(jenkins_server=jenkins_server, job_name=job_name, build_number=build_number)
    stale = stale.filter(received_at__lt=timezone.now() - BUILD_KEY_REUSE_AFTER)
    # 构建号被重建的任务复用：旧结果属于另一次构建，删掉让新结果作为新记录（并发出通知）
    stale.delete()
    # 重复回报不清空 details：通知的送达/失败记录在里面（补发扫描靠它判断是否还欠这条通知）
    record, created = BuildResult.objects.update_or_create(
        jenkins_server=jenkins_server, job_name=job_name, build_number=build_number,
        defaults={**defaults, **({"details": details} if details is not None else {})},
        create_defaults={**defaults, "details": details or {}},
    )
    if approval is not None:
        event_record(approval=approval, kind=EventKind.BUILD_RESULT, channel=Channel.JENKINS,
                     details={"result": result, "duration_ms": duration_ms})
        if approval.status == Status.PENDING:
            # 构建先于审批结束：审批已无意义（L2 cancelled）
            approval_cancel(approval=approval, reason=_("构建已结束（%(result)s）") % {"result": result},
                            channel=Channel.JENKINS)
    if created:
        effects.build_result_received(record.pk)
    return record, created


# ---------------------------------------------------------------- 构建日志

BUILD_LOG_MAX_CHARS = 5 * 1024 * 1024  # 只保留最后 5 MB：失败原因几乎总在末尾


@transaction.atomic
def build_log_append(
    *,
    jenkins_server: JenkinsServer,
    job_name: str,
    build_number: int,
    text: str,
    next_start: int,
    complete: bool,
    reset: bool = False,
    approval: Approval | None = None,
    start: int | None = None,
) -> BuildLog:
    """追加一段 Jenkins 增量日志（G5）。next_start 是 Jenkins 的 X-Text-Size，下次从这里续读。

    start 是这段文字在 Jenkins 日志里的起点：行锁下发现已存的进度不是它（另一个标签页或通知任务
    刚追加过同一段），就不再追加，日志不会重复。日志按构建存放；没有审批的构建也可以存。
    """
    log, created = BuildLog.objects.select_for_update().get_or_create(
        jenkins_server=jenkins_server, job_name=job_name, build_number=build_number,
        defaults={"approval": approval},
    )
    if not created and not reset and start is not None and log.size != start:
        return log
    content = text if reset else log.content + text
    if len(content) > BUILD_LOG_MAX_CHARS:
        content = content[-BUILD_LOG_MAX_CHARS:]
    log.content = content
    log.size = next_start
    log.is_complete = complete
    if approval is not None:
        log.approval = approval
    log.save()
    return log


# ---------------------------------------------------------------- 保留期清理（D8、G6）

# 一次运行的时间预算：远小于任务软时限（60 s），积压太多时留给下一次运行
RETENTION_TIME_BUDGET_SECONDS = 20.0
# 归档时一次读进内存的日志字符数上限：单条日志最多 5 MB，一批上千条不能一起读
ARCHIVE_CHUNK_CHARS = 32 * 1024 * 1024
_ARCHIVE_UNSAFE = re.compile(r"[^\w.\- ]")


def approvals_purge_old(
    *, now: datetime | None = None, batch: int = 1000, time_budget: float = RETENTION_TIME_BUDGET_SECONDS
) -> dict[str, Any]:
    """按 config/app.json 的 retention 删除过期数据（D8），构建日志删除前先归档（G6）。

    - 终态审批在决定满 approvals_days 天后删除，投票、历史、Telegram 消息记录随之级联删除；
      它的构建日志与构建结果只断开关联，按各自的期限处理。待审批无论多旧都不删。
    - 审批历史满 events_days 天、且所属审批已是终态的删除：进行中审批的历史一条不删。
    - 构建日志按获取时间满 build_logs_days 天，先写成 LOG_ARCHIVE_DIR/<job>/<build>.log.gz 再删；
      构建结果按接收时间满 build_results_days 天删除。天数为 0 的一类永久保留。

    不包一个大事务：每批按 id 删除、各自提交，批间检查时间预算，一次运行不会长时间持锁；
    没删完时 complete=False，剩下的留给下一次运行。重复运行无害。返回各类删除的行数。
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    now = now or timezone.now()
    days = retention_days()
    deadline = time.monotonic() + time_budget
    counts: dict[str, Any] = {"approvals": 0, "votes": 0, "events": 0, "build_logs": 0, "build_results": 0}
    complete = True

    def cutoff(kind: str) -> datetime:
        return now - timedelta(days=days[kind])

    if days["approvals"]:
        def delete_approvals(ids: list[int]) -> bool:
            # 级联：投票、历史、Telegram 消息记录；构建日志/结果与 superseded_by 置空。Django 按整批发语句，不逐行
            _total, per_model = Approval.objects.filter(pk__in=ids).delete()
            counts["approvals"] += per_model.get(Approval._meta.label, 0)
            counts["votes"] += per_model.get(Vote._meta.label, 0)
            counts["events"] += per_model.get(ApprovalEvent._meta.label, 0)
            return True

        # 终态不会再变回待审批，所以选出的 id 删除时无需再核对条件
        old = Approval.objects.filter(status__in=TERMINAL_STATUSES, decided_at__lt=cutoff("approvals"))
        complete &= _purge_in_batches(old, batch=batch, deadline=deadline, delete=delete_approvals)

    if days["events"]:
        def delete_events(ids: list[int]) -> bool:
            counts["events"] += ApprovalEvent.objects.filter(pk__in=ids).delete()[0]
            return True

        old = ApprovalEvent.objects.filter(created_at__lt=cutoff("events"), approval__status__in=TERMINAL_STATUSES)
        complete &= _purge_in_batches(old, batch=batch, deadline=deadline, delete=delete_events)

    if days["build_logs"]:
        log_cutoff = cutoff("build_logs")
        archive_root = Path(settings.LOG_ARCHIVE_DIR) if settings.LOG_ARCHIVE_DIR else None

        def delete_logs(ids: list[int]) -> bool:
            ok = True
            if archive_root is not None:
                ids, ok = _build_logs_archive(ids, root=archive_root, deadline=deadline)
            # 再核对一次时间：归档期间被续写的日志（fetched_at 变新）这次不删
            counts["build_logs"] += BuildLog.objects.filter(pk__in=ids, fetched_at__lt=log_cutoff).delete()[0]
            return ok

        old = BuildLog.objects.filter(fetched_at__lt=log_cutoff)
        complete &= _purge_in_batches(old, batch=batch, deadline=deadline, delete=delete_logs)

    if days["build_results"]:
        def delete_results(ids: list[int]) -> bool:
            counts["build_results"] += BuildResult.objects.filter(pk__in=ids).delete()[0]
            return True

        old = BuildResult.objects.filter(received_at__lt=cutoff("build_results"))
        complete &= _purge_in_batches(old, batch=batch, deadline=deadline, delete=delete_results)

    counts["complete"] = complete
    logger.info(
        "保留期清理：审批 %s（投票 %s）、历史 %s、构建日志 %s、构建结果 %s%s",
        counts["approvals"], counts["votes"], counts["events"], counts["build_logs"], counts["build_results"],
        "" if complete else "；未清理完，剩余的留给下一次运行",
    )
    return counts


def _purge_in_batches(queryset, *, batch: int, deadline: float, delete: Callable[[list[int]], bool]) -> bool:
    """按 id 分批调用 delete，直到删完、超出时间预算或 delete 要求停止；返回是否删完。"""
    while time.monotonic() < deadline:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch])
        if not ids:
            return True
        if not delete(ids):
            return False
        if len(ids) < batch:
            return True
    return False


def build_log_archive_path(log: BuildLog, *, root: Path) -> Path:
    """归档路径 <root>/<job>/<build>.log.gz；非默认 Jenkins 的日志多一层服务器名，避免同名任务互相覆盖。

    任务名来自 Jenkins（文件夹任务含 /），逐段清洗：不会写出 root 之外。
    """
    parts = [_ARCHIVE_UNSAFE.sub("_", part) for part in log.job_name.split("/") if part]
    parts = ["_" if part in (".", "..") else part for part in parts] or ["_"]
    if not log.jenkins_server.is_default:
        parts.insert(0, log.jenkins_server.name)
    return root.joinpath(*parts, f"{log.build_number}.log.gz")


def _build_logs_archive(ids: list[int], *, root: Path, deadline: float) -> tuple[list[int], bool]:
    """把这些日志 gzip 写入归档目录；返回 (已安全落盘的 id, 是否全部归档)。

    写失败（磁盘满、无权限）时停止并保留这些日志：数据库里的内容是唯一副本，宁可不删。
    时间预算用完也停下，没归档的留给下一次运行。
    """
    sizes = BuildLog.objects.filter(pk__in=ids).annotate(chars=Length("content")).values_list("pk", "chars")
    chunks: list[list[int]] = [[]]
    used = 0
    for pk, chars in sizes:
        if chunks[-1] and used + (chars or 0) > ARCHIVE_CHUNK_CHARS:
            chunks.append([])
            used = 0
        chunks[-1].append(pk)
        used += chars or 0
    archived: list[int] = []
    for chunk in chunks:
        if not chunk:
            break
        if time.monotonic() >= deadline:
            return archived, False
        logs = BuildLog.objects.filter(pk__in=chunk).select_related("jenkins_server").only(
            "job_name", "build_number", "content", "fetched_at", "jenkins_server__name", "jenkins_server__is_default"
        )
        for log in logs:
            path = build_log_archive_path(log, root=root)
            try:
                _write_gzip_atomically(path, log.content, mtime=log.fetched_at)
            except OSError:
                logger.exception("保留期清理：构建日志 %s#%s 归档到 %s 失败，本次不删除未归档的日志",
                                 log.job_name, log.build_number, path)
                return archived, False
            archived.append(log.pk)
    return archived, True


def _write_gzip_atomically(path: Path, text: str, *, mtime: datetime) -> None:
    """先写临时文件并 fsync，再改名：进程中途被杀也不会留下半个 .gz，随后删库才安全。"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=int(mtime.timestamp())) as gz:
                gz.write(text.encode("utf-8"))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
