"""构建日志的获取与保存（G2/G5）：从 Jenkins 增量读取，存进 BuildLog。

日志按构建（Jenkins、任务、构建号）定位：日志查看器从审批进来，构建结果通知也可能没有审批。
"""

from __future__ import annotations

import logging

from approvals.models import Approval, BuildLog
from approvals.services import build_log_append

from .client import JenkinsClient, JenkinsError
from .models import JenkinsServer

logger = logging.getLogger(__name__)


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
                            approval=approval, text=text, next_start=next_start, complete=not more, reset=reset)


def approval_log_refresh(approval: Approval) -> BuildLog:
    return build_log_refresh(jenkins_server=approval.jenkins_server, job_name=approval.job_name,
                             build_number=approval.build_number, approval=approval)


def build_log_tail(
    *, jenkins_server: JenkinsServer, job_name: str, build_number: int, approval: Approval | None = None,
    lines: int = 30,
) -> str:
    """失败通知用的日志末尾（B4）；取不到时用已存的内容，都没有则返回空串并记录原因，不让通知失败。"""
    try:
        log = build_log_refresh(jenkins_server=jenkins_server, job_name=job_name, build_number=build_number,
                                approval=approval)
    except JenkinsError as exc:
        logger.warning("获取 %s #%s 的构建日志失败：%s", job_name, build_number, exc)
        log = _stored(jenkins_server, job_name, build_number)
        if log is None:
            return ""
    return "\n".join(log.content.rstrip("\n").split("\n")[-lines:])
