"""Jenkins 的 Celery 任务：薄、幂等；重试退避有上限且带抖动，低于 broker 的 visibility_timeout。"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from celery import Task, shared_task
from celery.signals import task_received
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from approvalbot.celery import retry_countdown
from approvalbot.trace import trace
from approvals.actions import (
    approval_record_jenkins_action,
    jenkins_action_claim,
    jenkins_action_lease_free,
    jenkins_action_release,
)
from approvals.effects import JENKINS_RESUME_TASK
from approvals.models import Approval, JenkinsActionState, ResumeMode, Status

from .client import JenkinsError
from .models import BuildWatch, JenkinsServer
from .services import approval_input_ready_check, approval_mirror_check, approval_resume_jenkins

logger = logging.getLogger(__name__)


@task_received.connect
def _trace_received(request: object = None, **kwargs: object) -> None:
    """worker 主进程收到消息的时刻（交给子进程之前）：基准据此量 broker 与调度的耗时。"""
    if getattr(request, "name", "") == JENKINS_RESUME_TASK:
        trace("task_received", f"pk:{(getattr(request, 'args', None) or [None])[0]}")

RESUME_MAX_RETRIES = 12
# 一次执行的时限与租约：硬时限一到子进程被杀，租约随即到期，恢复扫描接手。租约要比硬时限长，
# 否则还在执行的任务会被当成死掉的再补做一次；它也决定了 worker 被 kill -9 后多久补做（≈ 租约 + 扫描间隔）
RESUME_SOFT_TIME_LIMIT = 25
RESUME_TIME_LIMIT = 30
RESUME_LEASE_SECONDS = 35
# 恢复扫描：到了该执行的时间、又过了这么久仍没人认领（broker 丢了消息），才补发
RECOVERY_GRACE_SECONDS = 10
# 补发之后，同一条至少隔这么久才会再补发（队列积压时不要每轮都多投一份）
RECOVERY_REPEAT_SECONDS = 30
MIRROR_BATCH = 200
# 镜像任务每轮的时间预算：低于任务的软时限（60 秒），查不完的留给下一轮
MIRROR_TIME_BUDGET_SECONDS = 40.0
# 这些错误说明整台 Jenkins 不可用（而不是某个构建的问题）：本轮跳过它余下的构建
CIRCUIT_BREAKING_KINDS = frozenset({"connection", "timeout", "auth", "not_configured"})
# “input 尚未进入等待”先快速重试几次（5、10、20 秒），之后交给镜像任务，不占用 RESUME_MAX_RETRIES
INPUT_WAIT_FAST_RETRIES = 3


class _Plan:
    """这次执行之后，下一次该在何时执行（None：不需要恢复扫描来补：已完成、已失败、在等 input 出现）。

    没有走到任何一个结局就出了异常（数据库断开、软时限、程序错误）时仍保留一个时间：acks_late 的消息已经确认，
    不会再投递，只有恢复扫描能把它捡回来。
    """

    def __init__(self) -> None:
        self.due_at: datetime | None = timezone.now() + timedelta(seconds=RECOVERY_REPEAT_SECONDS)

    def retry_in(self, seconds: float) -> float:
        self.due_at = timezone.now() + timedelta(seconds=seconds)
        return seconds

    def settled(self, outcome: str) -> str:
        """有了结局（完成、失败、跳过、交给镜像任务等 input），恢复扫描不必再来。"""
        self.due_at = None
        return outcome


@shared_task(name=JENKINS_RESUME_TASK, bind=True, ignore_result=True, max_retries=RESUME_MAX_RETRIES,
             soft_time_limit=RESUME_SOFT_TIME_LIMIT, time_limit=RESUME_TIME_LIMIT)
def approval_resume_task(self, approval_id: int) -> str:
    """决定（或超时、取消）之后继续/中止 Jenkins。先认领：已完成、已失败或别人正在执行的什么都不做（幂等）。"""
    token = jenkins_action_claim(approval_id, seconds=RESUME_LEASE_SECONDS)
    if token is None:
        return "skip"
    plan = _Plan()
    try:
        return _resume(self, approval_id, plan)
    finally:
        jenkins_action_release(approval_id, token, due_at=plan.due_at)


def _resume(task: Task, approval_id: int, plan: _Plan) -> str:
    approval = Approval.objects.select_related("jenkins_server").get(pk=approval_id)
    trace("task_started", approval.public_id)
    try:
        result = approval_resume_jenkins(approval)
    except JenkinsError as exc:
        if exc.kind == "input_not_pending":
            return _wait_for_input(task, approval, exc, plan)
        _input_wait_end(approval_id)
        retries = task.request.retries or 0
        give_up = exc.permanent or retries >= RESUME_MAX_RETRIES
        error = exc.message if exc.permanent or not give_up else _("%(error)s（已重试 %(n)s 次，放弃）") % {
            "error": exc.message, "n": retries}
        if _already_done(approval_id):
            return plan.settled("skip")
        approval_record_jenkins_action(
            approval=approval_id, ok=False, action=approval.resume_mode, error=error, permanent=give_up,
            details={"kind": exc.kind, "status": exc.status, "attempt": retries + 1},
        )
        if give_up:
            logger.warning("审批 %s 的 Jenkins 操作失败（不再重试）：%s", approval.public_id, error)
            return plan.settled("failed")
        countdown = plan.retry_in(retry_countdown(retries))
        if task.request.is_eager:
            # 同步（eager）模式没有 broker 能延时：立即重试只会空转，到时由恢复扫描补做
            return "retry_later"
        logger.info("审批 %s 的 Jenkins 操作暂时失败，%s 秒后重试：%s", approval.public_id, countdown, exc.message)
        raise task.retry(exc=exc, countdown=countdown) from exc
    _input_wait_end(approval_id)
    if _already_done(approval_id):
        return plan.settled("skip")
    approval_record_jenkins_action(approval=approval_id, ok=True, action=result.action, details=result.details)
    return plan.settled(result.action)


def _wait_for_input(task: Task, approval: Approval, exc: JenkinsError, plan: _Plan) -> str:
    """构建还在跑、只是还没走到 input：不是失败，也不占用重试次数。

    先按退避快速重试几次（通常几秒后就走到了）；之后交给镜像任务，它在 input 出现或构建结束时重新投递。
    历史里只在开始等待时记一条，不会每次检查都写。
    """
    now = timezone.now()
    BuildWatch.objects.get_or_create(approval=approval)
    started = BuildWatch.objects.filter(approval=approval, awaiting_input_since__isnull=True).update(
        awaiting_input_since=now)
    if started and not _already_done(approval.pk):
        approval_record_jenkins_action(
            approval=approval.pk, ok=False, action=approval.resume_mode, permanent=False,
            error=_("%(error)s：构建仍在运行，input 出现后自动继续") % {"error": exc.message},
            details={"kind": exc.kind, "status": exc.status, "attempt": (task.request.retries or 0) + 1},
        )
    retries = task.request.retries or 0
    if task.request.is_eager or retries >= INPUT_WAIT_FAST_RETRIES:
        return plan.settled("waiting_input")  # 镜像任务在 input 出现时重新投递
    raise task.retry(exc=exc, countdown=plan.retry_in(retry_countdown(retries)))


def _input_wait_end(approval_id: int) -> None:
    """有了别的结果（成功、其他错误）：不再由镜像任务等 input，恢复扫描照常接管暂时失败。"""
    BuildWatch.objects.filter(approval_id=approval_id, awaiting_input_since__isnull=False).update(
        awaiting_input_since=None)


def _already_done(approval_id: int) -> bool:
    """两个投递并发时，后完成的那个不要把“已完成”改写成失败。"""
    return Approval.objects.filter(pk=approval_id).exclude(jenkins_action_state=JenkinsActionState.PENDING).exists()


@shared_task(name="jenkins_bridge.tasks.jenkins_action_recovery_task", ignore_result=True)
def jenkins_action_recovery_task(now: str | None = None) -> int:
    """补发：Jenkins 操作还在等，到了该执行的时间却没人认领——broker 丢了消息（Redis 重启后是空的），
    或执行它的 worker 死了（租约到期）。在等 input 出现的由镜像任务负责。"""
    current = datetime.fromisoformat(now) if now else timezone.now()
    rows = (
        Approval.objects.filter(jenkins_action_state=JenkinsActionState.PENDING,
                                jenkins_action_due_at__lte=current - timedelta(seconds=RECOVERY_GRACE_SECONDS))
        .filter(jenkins_action_lease_free(current))
        .exclude(jenkins_watch__awaiting_input_since__isnull=False)
    )
    ids = list(rows.order_by("jenkins_action_due_at").values_list("pk", flat=True)[:500])
    if not ids:
        return 0
    Approval.objects.filter(pk__in=ids).update(
        jenkins_action_due_at=current + timedelta(seconds=RECOVERY_REPEAT_SECONDS - RECOVERY_GRACE_SECONDS))
    for pk in ids:
        approval_resume_task.delay(pk)
    logger.info("恢复扫描重新投递了 %s 个 Jenkins 操作", len(ids))
    return len(ids)


class _RunGuard:
    """镜像任务一轮的保护：时间预算，以及对连不上的 Jenkins 熔断（本轮跳过它余下的构建）。

    否则一台被黑洞的 Jenkins 会让每轮花上 200 × 超时秒数，远超任务的软时限。
    """

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget
        self.broken: set[int] = set()

    def skip_reason(self, approval: Approval) -> str | None:
        if approval.jenkins_server_id in self.broken:
            return "skipped"
        if time.monotonic() >= self.deadline:
            return "deferred"
        return None

    def failed(self, approval: Approval, exc: JenkinsError) -> None:
        if exc.kind in CIRCUIT_BREAKING_KINDS:
            self.broken.add(approval.jenkins_server_id)


def _record_watch_error(approval: Approval, exc: JenkinsError) -> None:
    # 暂时连不上 Jenkins：记在观察记录上，下一轮再看；不写审批历史（否则每分钟一条）
    BuildWatch.objects.update_or_create(
        approval=approval, defaults={"checked_at": timezone.now(), "last_error": exc.message[:2000]}
    )


@shared_task(name="jenkins_bridge.tasks.jenkins_build_mirror_task", ignore_result=True)
def jenkins_build_mirror_task() -> dict[str, int]:
    """X12：检查待审批的构建——结束了或在 Jenkins 里被处理了，就关闭审批，Telegram 不再显示过期请求。

    同一轮里也照看“决定已做出、在等 input 出现”的审批：input 出现或构建结束时重新投递 Jenkins 操作。
    """
    # 环境变量定义的默认 Jenkins 改了地址：先让库里那一行跟上（下面的筛选条件用到 url）
    JenkinsServer.env_server_sync()
    counts: dict[str, int] = {}
    guard = _RunGuard(MIRROR_TIME_BUDGET_SECONDS)

    def check_each(approvals, check) -> None:
        """两类审批共用同一套时间预算、断路与错误记录；check 返回本条的结果名。"""
        for approval in approvals:
            outcome = guard.skip_reason(approval)
            if not outcome:
                try:
                    outcome = check(approval)
                except JenkinsError as exc:
                    _record_watch_error(approval, exc)
                    guard.failed(approval, exc)
                    outcome = "error"
            counts[outcome] = counts.get(outcome, 0) + 1

    def resume_if_input_ready(approval: Approval) -> str:
        if not approval_input_ready_check(approval):
            return "input_waiting"
        approval_resume_task.delay(approval.pk)
        return "resume_queued"

    pending = (
        Approval.objects.select_related("jenkins_server")
        .filter(status=Status.PENDING, jenkins_server__is_active=True)
        .exclude(jenkins_server__url="")
        # 最久没检查的先查：待审批很多时每轮只查一批，轮流覆盖
        .order_by(F("jenkins_watch__checked_at").asc(nulls_first=True), "created_at")[:MIRROR_BATCH]
    )
    check_each(pending, approval_mirror_check)

    awaiting = (
        Approval.objects.select_related("jenkins_server")
        .filter(jenkins_action_state=JenkinsActionState.PENDING, resume_mode=ResumeMode.INPUT,
                jenkins_watch__awaiting_input_since__isnull=False, jenkins_server__is_active=True)
        .exclude(jenkins_server__url="")
        .order_by(F("jenkins_watch__checked_at").asc(nulls_first=True), "decided_at")[:MIRROR_BATCH]
    )
    check_each(awaiting, resume_if_input_ready)
    return counts
