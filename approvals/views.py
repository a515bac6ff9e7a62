"""日志查看器（G1–G8）：签名链接或已登录的后台用户才能看；实时追加、高亮、搜索、下载。

页面在“不会再有新内容”时安定下来、不再轮询：日志已完整；或构建/审批已结束而 Jenkins 给不出日志——这时写明
为什么没有（或不完整），下载也说同样的话，而不是给一个 0 字节的文件。取日志失败后 FAILURE_PAUSE 内不再问
Jenkins、也不再记日志：几个标签页每 2 秒一次的轮询不会把 Jenkins 和服务器日志刷满。
服务器日志给运维看，用配置的语言（LANGUAGE_CODE）；页面上的说明用访问者的语言。
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from .errors import ApprovalNotFound
from .links import log_token_valid
from .models import Approval, BuildLog, BuildResult, Status
from .selectors import approval_get

logger = logging.getLogger(__name__)

# 两次向 Jenkins 取增量日志的最小间隔：多个浏览器标签同时看也不会压垮 Jenkins
REFRESH_MIN_INTERVAL = timedelta(seconds=2)
# 取日志失败后多久内不再问 Jenkins（这段时间里的请求直接用已存的内容和上次的原因）
FAILURE_PAUSE_SECONDS = 30


@dataclass(frozen=True)
class FetchProblem:
    """向 Jenkins 取日志失败的原因（JenkinsError.kind 与 HTTP 状态），页面按访问者的语言说出来。"""

    kind: str
    status: int | None
    server: str


@dataclass(frozen=True)
class LogState:
    content: str
    complete: bool  # Jenkins 说日志已经完整
    final: bool  # 不会再有新内容：页面停止轮询
    status: str  # 状态行
    notice: str  # 为什么没有、为什么不完整、为什么暂时取不到；空表示一切正常


def _authorised(request: HttpRequest, approval: Approval) -> bool:
    token = request.GET.get("t", "")
    if token and log_token_valid(approval, token):
        return True
    user = request.user
    return bool(user.is_authenticated and (user.is_staff or hasattr(user, "approver")))


def _load(request: HttpRequest, public_id: str) -> tuple[Approval | None, HttpResponse | None]:
    try:
        approval = approval_get(public_id)
    except ApprovalNotFound as exc:
        return None, render(request, "approvals/log_error.html", {"message": exc.message}, status=404)
    if not _authorised(request, approval):
        message = _("链接无效或已过期。请从 Telegram 消息重新打开，或登录后台后查看。")
        return None, render(request, "approvals/log_error.html", {"message": message}, status=403)
    return approval, None


def _stored(approval: Approval) -> BuildLog | None:
    return BuildLog.objects.filter(
        jenkins_server=approval.jenkins_server, job_name=approval.job_name, build_number=approval.build_number
    ).first()


def _problem_key(approval: Approval) -> str:
    return f"approvals:log-fetch-problem:{approval.public_id}"


def _fetch(approval: Approval) -> tuple[BuildLog | None, FetchProblem | None]:
    """按需从 Jenkins 续读；失败时返回已存的内容与原因，页面照样能看。"""
    from jenkins_bridge.client import JenkinsError
    from jenkins_bridge.logs import approval_log_refresh

    log = _stored(approval)
    if log is not None and (log.is_complete or timezone.now() - log.fetched_at < REFRESH_MIN_INTERVAL):
        return log, None
    paused = cache.get(_problem_key(approval))
    if paused:
        return log, FetchProblem(**paused)
    try:
        # JenkinsError 的说明要写进服务器日志：按配置的语言生成，不随访问者的浏览器变
        with translation.override(settings.LANGUAGE_CODE):
            return approval_log_refresh(approval), None
    except JenkinsError as exc:
        logger.warning("日志查看器：审批 %s 取日志失败（%s 秒内不再重试）：%s", approval.public_id,
                       FAILURE_PAUSE_SECONDS, exc.message)
        problem = FetchProblem(kind=exc.kind, status=exc.status, server=approval.jenkins_server.name)
        cache.set(_problem_key(approval), asdict(problem), FAILURE_PAUSE_SECONDS)
        return log, problem


def _problem_text(problem: FetchProblem) -> str:
    values = {"server": problem.server, "status": problem.status or "-"}
    texts = {
        "not_configured": _("这次构建所属的 Jenkins「%(server)s」没有配置地址（JENKINS_URL 或后台的「Jenkins 服务器」）"),
        "connection": _("连不上 Jenkins「%(server)s」"),
        "timeout": _("Jenkins「%(server)s」响应超时"),
        "not_found": _("Jenkins 上找不到这次构建（可能已被删除，或服务账号无权查看）"),
        "auth": _("Jenkins 拒绝了服务账号（HTTP %(status)s）：检查 JENKINS_USER 与 JENKINS_API_TOKEN 的权限"),
    }
    return texts.get(problem.kind, _("Jenkins「%(server)s」返回了错误（HTTP %(status)s）")) % values


def _ended(approval: Approval) -> str:
    """构建已经结束（或不会再往下走）的说法；还在进行时返回空串。"""
    result = (BuildResult.objects.filter(jenkins_server_id=approval.jenkins_server_id, job_name=approval.job_name,
                                         build_number=approval.build_number).first())
    if result is not None:
        return _("构建已结束（%(result)s）") % {"result": result.get_result_display()}
    if approval.status in (Status.REJECTED, Status.TIMEOUT, Status.CANCELLED):
        return _("审批%(status)s，构建不会再继续") % {"status": approval.get_status_display()}
    return ""


def _log_state(approval: Approval) -> LogState:
    log, problem = _fetch(approval)
    content = log.content if log else ""
    if log is not None and log.is_complete:
        return LogState(content, True, True, _("构建已结束，日志完整。"), "")
    if problem is None:
        return LogState(content, False, False, _("构建进行中，日志实时更新…"), "")
    reason = _problem_text(problem)
    ended = _ended(approval)
    if not ended and problem.kind != "not_configured":
        # 构建可能还在跑：稍后重试（页面逐步放慢轮询）
        return LogState(content, False, False, _("暂时无法获取日志，稍后自动重试…"),
                        _("暂时无法从 Jenkins 获取日志：%(error)s") % {"error": reason})
    kept = _("下面是之前保存的部分。") if content else _("之前也没有保存过这次构建的日志。")
    notice = _("无法从 Jenkins 获取日志：%(error)s。%(kept)s") % {"error": reason, "kept": kept}
    if not ended:
        return LogState(content, False, True, _("无法获取日志。"), notice)
    status = (_("%(ended)s，日志不完整。") if content else _("%(ended)s，没有可显示的日志。")) % {"ended": ended}
    return LogState(content, False, True, status, notice)


@require_GET
def log_viewer(request: HttpRequest, public_id: str) -> HttpResponse:
    approval, denied = _load(request, public_id)
    if denied:
        return denied
    state = _log_state(approval)
    return render(request, "approvals/log_viewer.html", {
        "approval": approval,
        "state": state,
        "content": state.content,
        "token": request.GET.get("t", ""),
    })


@require_GET
def log_tail(request: HttpRequest, public_id: str) -> JsonResponse:
    """实时追加（G2）：返回客户端已有长度之后的新内容；final=true 时页面停止轮询。"""
    approval, denied = _load(request, public_id)
    if denied:
        return JsonResponse({"error": {"code": "forbidden" if denied.status_code == 403 else "not_found",
                                       "message": _("无权查看或审批不存在。"), "details": {}}},
                            status=denied.status_code)
    try:
        offset = max(int(request.GET.get("offset", "0")), 0)
    except ValueError:
        return JsonResponse({"error": {"code": "invalid_offset", "message": _("offset 必须是非负整数。"),
                                       "details": {}}}, status=400)
    state = _log_state(approval)
    reset = offset > len(state.content)  # 日志被截断或重建：客户端从头显示
    text = state.content if reset else state.content[offset:]
    return JsonResponse({"text": text, "offset": len(state.content), "reset": reset, "complete": state.complete,
                         "final": state.final, "status": state.status, "notice": state.notice})


@require_GET
def log_download(request: HttpRequest, public_id: str) -> HttpResponse:
    """下载（G8）：纯文本附件；没有日志时说明原因（与页面上的说明相同），而不是给一个空文件。"""
    approval, denied = _load(request, public_id)
    if denied:
        return denied
    state = _log_state(approval)
    if not state.content:
        reason = state.notice or _("Jenkins 还没有输出任何日志，稍后再试。")
        return render(request, "approvals/log_error.html", {
            "message": _("这次构建没有可下载的日志。%(reason)s") % {"reason": reason},
            "approval": approval, "token": request.GET.get("t", ""),
        }, status=404)
    response = HttpResponse(state.content, content_type="text/plain; charset=utf-8")
    safe_job = "".join(c if c.isalnum() or c in "-_." else "_" for c in approval.job_name)
    response["Content-Disposition"] = f'attachment; filename="{safe_job}-{approval.build_number}.log"'
    return response
