"""构建日志的获取与保存（G2/G5）：从 Jenkins 增量读取，存进 BuildLog。

日志按构建（Jenkins、任务、构建号）定位：日志查看器从审批进来，构建结果通知也可能没有审批。
"""

from __future__ import annotations

import logging

from approvals.builds import build_log_append
from approvals.models import Approval, BuildLog

from .client import JenkinsClient, JenkinsError
from .models import JenkinsServer

logger = logging.getLogger(__name__)

# 失败通知只需要末尾几十行：还没存过日志时最多从 Jenkins 读这么多字节
TAIL_BYTES = 64 * 1024


def _stored(server: JenkinsServer, job_name: str, build_number: int) -> BuildLog | None:
    return BuildLog.objects.filter(jenkins_server=server, job_name=job_name, build_number=build_number).first()


def build_log_refresh(
    *, jenkins_server: JenkinsServer, job_name: str, build_number: int, approval: Approval | None = None
) -> BuildLog:
    """从上次读到的位置继续读增量日志；构建已结束且已读完时不再请求 Jenkins。

    Jenkins 失败时抛 JenkinsError，调用方决定是展示旧内容还是重试。
    """
    log = _stored(jenkins_server, job_name, build_number)
    if log is not None and log.is_complete:
        return log
    start = log.size if log else 0
    client = JenkinsClient(jenkins_server)
    text, next_start, more = client.progressive_text(job_name, build_number, start)
    # Jenkins 的日志被轮转/重建时 X-Text-Size 会变小：从头重读
    reset = next_start < start
    if reset:
        text, next_start, more = client.progressive_text(job_name, build_number, 0)
    return build_log_append(jenkins_server=jenkins_server, job_name=job_name, build_number=build_number,
                            approval=approval, text=text, next_start=next_start, complete=not more, reset=reset,
                            start=0 if reset else start)


def approval_log_refresh(approval: Approval) -> BuildLog:
    return build_log_refresh(jenkins_server=approval.jenkins_server, job_name=approval.job_name,
                             build_number=approval.build_number, approval=approval)


def _log_size(client: JenkinsClient, job_name: str, build_number: int) -> int | None:
    """日志的字节数（HEAD，不下载）；HEAD 被拦、没有 X-Text-Size 时返回 None，由调用方退回整段读取。"""
    try:
        return client.log_size(job_name, build_number)
    except JenkinsError as exc:
        if exc.kind in ("connection", "timeout", "auth", "not_found"):
            raise
        logger.info("取 %s #%s 的日志长度失败（%s），改为整段读取", job_name, build_number, exc)
        return None


def _remote_tail(client: JenkinsClient, job_name: str, build_number: int, size: int) -> str:
    """只读日志的最后 TAIL_BYTES 字节。"""
    text, _next_start, _more = client.progressive_text(job_name, build_number, max(0, size - TAIL_BYTES))
    # 从中间开始读：第一行多半不完整（还可能切开了一个多字节字符），丢掉
    return text.split("\n", 1)[1] if "\n" in text else ""


def build_log_tail(
    *, jenkins_server: JenkinsServer, job_name: str, build_number: int, approval: Approval | None = None,
    lines: int = 30,
) -> str:
    """失败通知用的日志末尾（B4）；取不到时用已存的内容，都没有则返回空串并记录原因，不让通知失败。

    还没存过这个构建的日志、而日志又比 TAIL_BYTES 长时，只从 Jenkins 读最后 TAIL_BYTES（几百 MB 的日志
    不为 30 行整段下载），这段不存库：存了就成了缺头的日志，日志查看器以后仍从头完整读取。
    短日志与已存过的日志照旧读取并保存（增量续读）。
    """
    log = _stored(jenkins_server, job_name, build_number)
    try:
        if log is None:
            client = JenkinsClient(jenkins_server)
            size = _log_size(client, job_name, build_number)
            if size is not None and size > TAIL_BYTES:
                return _last_lines(_remote_tail(client, job_name, build_number, size), lines)
        log = build_log_refresh(jenkins_server=jenkins_server, job_name=job_name, build_number=build_number,
                                approval=approval)
    except JenkinsError as exc:
        logger.warning("获取 %s #%s 的构建日志失败：%s", job_name, build_number, exc)
        log = _stored(jenkins_server, job_name, build_number)
        if log is None:
            return ""
    return _last_lines(log.content, lines)


def _last_lines(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])
