"""构建日志的获取与保存（G2/G5）：从 Jenkins 增量读取，存进 BuildLog。"""

from __future__ import annotations

import logging

from approvals.models import Approval, BuildLog
from approvals.services import build_log_append

from .client import JenkinsClient, JenkinsError

logger = logging.getLogger(__name__)


def build_log_refresh(approval: Approval) -> BuildLog:
    """从上次读到的位置继续读增量日志；构建已结束且已读完时不再请求 Jenkins。

    Jenkins 失败时抛 JenkinsError，调用方决定是展示旧内容还是重试。
    """
    log = BuildLog.objects.filter(
        jenkins_server=approval.jenkins_server, job_name=approval.job_name, build_number=approval.build_number
    ).first()
    if log is not None and log.is_complete:
        return log
    start = log.size if log else 0
    client = JenkinsClient(approval.jenkins_server)
    text, next_start, more = client.progressive_text(approval.job_name, approval.build_number, start)
    # Jenkins 的日志被轮转/重建时 X-Text-Size 会变小：从头重读
    reset = next_start < start
    if reset:
        text, next_start, more = client.progressive_text(approval.job_name, approval.build_number, 0)
    return build_log_append(approval=approval, text=text, next_start=next_start, complete=not more, reset=reset)


def build_log_tail(approval: Approval, *, lines: int = 30) -> str:
    """失败通知用的日志末尾（B4）；取不到时返回空串并记录原因，不让通知失败。"""
    try:
        log = build_log_refresh(approval)
    except JenkinsError as exc:
        logger.warning("获取审批 %s 的构建日志失败：%s", approval.public_id, exc)
        log = BuildLog.objects.filter(
            jenkins_server=approval.jenkins_server, job_name=approval.job_name, build_number=approval.build_number
        ).first()
        if log is None:
            return ""
    return "\n".join(log.content.rstrip("\n").split("\n")[-lines:])
