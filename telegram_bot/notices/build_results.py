"""构建结果通知（B3–B8）：结果与表情、耗时、环境、版本、谁批准的、Jenkins 与日志链接，失败时附日志末尾。

有审批时回复在审批消息下，点名同意者与负责人；没有审批时按规则发到项目群，点名负责人与审批人。
每个构建结果在发件箱里一行（幂等键 build_result:<id>）：重复回报、任务重投、补发扫描都只发一次。
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Prefetch
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Approver
from approvals.eligibility import Eligibility
from approvals.models import Approval, BuildResult, BuildResultValue, Status, Vote

from ..messages import fit_message, join_names, log_url, render_fitted, render_telegram, with_note
from ..models import MessageKind, TelegramMessage
from ..outbox import RECOVERY_WINDOW, outbox_add, outbox_key
from ..sender import chat_resolve
from .common import default_chat_id, duration_ms_text, mention_list, reply_target, voted_approve

LOG_TAIL_LINES = 30
# 刚收到的结果：提交后投递的任务可能还在路上，补发扫描先不插手
OWED_AFTER = timedelta(minutes=2)

RESULT_EMOJI = {
    BuildResultValue.SUCCESS: "✅",
    BuildResultValue.FAILURE: "❌",
    BuildResultValue.ABORTED: "⚪",
    BuildResultValue.NOT_BUILT: "⚪",
    BuildResultValue.UNSTABLE: "⚠️",
}


@dataclass
class ResultAudience:
    chat_id: int | None
    reply_to: int | None
    people: list[Approver]
    project: str = ""


def build_result_audience(result: BuildResult) -> ResultAudience:
    """发往哪里、点名谁（B8）。"""
    approval = result.approval
    eligibility = Eligibility()
    if approval is not None:
        chat_id, reply_to = reply_target(approval)
        people = [*voted_approve(approval), *eligibility.owners(approval.project, approval.environment)]
        return ResultAudience(chat_id, reply_to, people)
    rule = eligibility.rule(result.project or result.job_name, result.environment)
    chat_id = rule.chat_id or default_chat_id()
    return ResultAudience(chat_resolve(int(chat_id)) if chat_id else None, None, [*rule.owners, *rule.approvers],
                          project=rule.project if rule.matched else "")


def console_url(build_url: str) -> str | None:
    return f"{build_url.rstrip('/')}/console" if build_url else None


def build_log_tail_for(result: BuildResult, *, lines: int = LOG_TAIL_LINES) -> str:
    """失败时附带的日志末尾（B4）：从 Jenkins 增量读取并保存；Jenkins 不可达时用已存的日志。"""
    from jenkins_bridge.logs import build_log_tail

    return build_log_tail(jenkins_server=result.jenkins_server, job_name=result.job_name,
                          build_number=result.build_number, approval=result.approval, lines=lines)


def render_build_result(result: BuildResult, *, approval: Approval | None, people: list[Approver],
                        tail: str = "", project: str = "") -> str:
    """构建结果通知（B3–B7，templates/telegram/notices/build_result.html）；日志末尾放不下时保留最后的部分。"""
    titles = {
        BuildResultValue.SUCCESS: _("构建成功"),
        BuildResultValue.FAILURE: _("构建失败"),
        BuildResultValue.ABORTED: _("构建已中止"),
        BuildResultValue.NOT_BUILT: _("未构建"),
        BuildResultValue.UNSTABLE: _("构建不稳定"),
    }
    decision = ""
    if approval is not None:
        approvers = [a.label for a in voted_approve(approval)]
        if approval.status == Status.APPROVED:
            decision = _("%(names)s 同意") % {"names": join_names(approvers) or approval.decided_by_name or _("系统")}
        else:
            decision = str(approval.get_status_display())
            if approval.decided_by_name:
                decision = with_note(decision, approval.decided_by_name)
    context = {
        "result": result, "approval": approval, "decision": decision,
        "emoji": RESULT_EMOJI.get(result.result, "❔"), "title": titles.get(result.result, result.result),
        "project": project or (approval.project if approval else "") or result.project or result.job_name,
        "environment": result.environment or (approval.environment if approval else ""),
        "version": result.version or (approval.version if approval else ""),
        "duration": duration_ms_text(result.duration_ms),
        "console_url": console_url(result.build_url), "log_url": log_url(approval),
        "people": mention_list(people) if people else None,
    }
    template = "telegram/notices/build_result.html"
    if not tail.strip():
        head = render_telegram(template, context)
        # 没有可截短的自由文本：照 fit_message 的规则，只有整条超长时才在末尾加“…”
        return fit_message(lambda extra: head + extra, "")
    context["tail_title"] = _("日志末尾（最后 %(n)d 行）") % {"n": LOG_TAIL_LINES}
    return render_fitted(template, context, free_text_name="tail", free_text=tail, keep="tail")


def _load(result_id: int) -> BuildResult | None:
    return (
        BuildResult.objects.select_related("jenkins_server", "approval", "approval__requester",
                                           "approval__jenkins_server")
        .prefetch_related(Prefetch("approval__votes", queryset=Vote.objects.select_related("approver").order_by("id")))
        .filter(pk=result_id).first()
    )


def build_result_enqueue(result_id: int) -> TelegramMessage | None:
    """放进发件箱：群与回复的消息在此刻定下（审批消息若已发出就回复它）。"""
    result = _load(result_id)
    if result is None:
        return None
    target = build_result_audience(result)
    return outbox_add(key=outbox_key(MessageKind.BUILD_RESULT, result.pk), kind=MessageKind.BUILD_RESULT,
                      chat_id=target.chat_id, approval_id=result.approval_id, build_result_id=result.pk,
                      reply_to=target.reply_to)


def build_result_render(row: TelegramMessage) -> str | None:
    result = _load(row.build_result_id)
    if result is None:
        return None
    target = build_result_audience(result)
    tail = ""
    if result.result in (BuildResultValue.FAILURE, BuildResultValue.UNSTABLE):
        tail = build_log_tail_for(result)
    return render_build_result(result, approval=result.approval, people=target.people, tail=tail,
                               project=target.project)


def build_results_owed(*, limit: int) -> list[int]:
    """收到超过 2 分钟、不到一天，却没有通知那一行的构建结果（提交后投递任务时 broker 不可用）。"""
    now = timezone.now()
    have = TelegramMessage.objects.filter(kind=MessageKind.BUILD_RESULT, build_result_id__isnull=False)
    return list(
        BuildResult.objects.filter(received_at__lte=now - OWED_AFTER, received_at__gte=now - RECOVERY_WINDOW)
        .exclude(pk__in=have.values("build_result_id"))
        .order_by("received_at", "pk").values_list("pk", flat=True)[:limit]
    )
