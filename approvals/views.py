"""日志查看器（G1–G8）：签名链接或已登录的后台用户才能看；实时追加、高亮、搜索、下载。"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from .errors import ApprovalNotFound
from .links import log_token_valid
from .models import Approval, BuildLog
from .selectors import approval_get

logger = logging.getLogger(__name__)

# 两次向 Jenkins 取增量日志的最小间隔：多个浏览器标签同时看也不会压垮 Jenkins
REFRESH_MIN_INTERVAL = timedelta(seconds=2)


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


def _refresh(approval: Approval) -> tuple[BuildLog | None, str]:
    """按需从 Jenkins 续读；失败时返回已存的内容与错误说明，页面照样能看。"""
    from jenkins_bridge.client import JenkinsError
    from jenkins_bridge.logs import approval_log_refresh

    log = _stored(approval)
    if log is not None and (log.is_complete or timezone.now() - log.fetched_at < REFRESH_MIN_INTERVAL):
        return log, ""
    try:
        return approval_log_refresh(approval), ""
    except JenkinsError as exc:
        logger.warning("日志查看器：审批 %s 取日志失败：%s", approval.public_id, exc)
        return log, _("暂时无法从 Jenkins 获取日志：%(error)s") % {"error": exc.message}


@require_GET
def log_viewer(request: HttpRequest, public_id: str) -> HttpResponse:
    approval, denied = _load(request, public_id)
    if denied:
        return denied
    log, error = _refresh(approval)
    return render(request, "approvals/log_viewer.html", {
        "approval": approval,
        "content": log.content if log else "",
        "complete": bool(log and log.is_complete),
        "error": error,
        "token": request.GET.get("t", ""),
    })


@require_GET
def log_tail(request: HttpRequest, public_id: str) -> JsonResponse:
    """实时追加（G2）：返回客户端已有长度之后的新内容。"""
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
    log, error = _refresh(approval)
    content = log.content if log else ""
    reset = offset > len(content)  # 日志被截断或重建：客户端从头显示
    text = content if reset else content[offset:]
    return JsonResponse({"text": text, "offset": len(content), "reset": reset,
                         "complete": bool(log and log.is_complete), "error": error})


@require_GET
def log_download(request: HttpRequest, public_id: str) -> HttpResponse:
    """下载（G8）：纯文本附件。"""
    approval, denied = _load(request, public_id)
    if denied:
        return denied
    log, _error = _refresh(approval)
    response = HttpResponse((log.content if log else ""), content_type="text/plain; charset=utf-8")
    safe_job = "".join(c if c.isalnum() or c in "-_." else "_" for c in approval.job_name)
    response["Content-Disposition"] = f'attachment; filename="{safe_job}-{approval.build_number}.log"'
    return response
