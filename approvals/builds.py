"""构建结果与构建日志（B1/B2、G5）：Jenkins 回报的结果、从 Jenkins 读到的日志，按构建存放。"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from . import effects
from .history import event_record
from .models import Approval, BuildLog, BuildResult, Channel, EventKind, Status
from .services import BUILD_KEY_REUSE_AFTER, approval_cancel, jenkins_server_model


@transaction.atomic
def build_result_record(
    *,
    job_name: str,
    build_number: int,
    result: str,
    jenkins_server: Any = None,
    build_url: str = "",
    duration_ms: int | None = None,
    approval: Approval | None = None,
    details: dict[str, Any] | None = None,
) -> tuple[BuildResult, bool]:
    """记录构建结果（B1/B2）；同一构建重复回报只更新不重复通知。返回 (结果, 是否新建)。"""
    jenkins_server = jenkins_server or jenkins_server_model().objects.default()
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


BUILD_LOG_MAX_CHARS = 5 * 1024 * 1024  # 只保留最后 5 MB：失败原因几乎总在末尾


@transaction.atomic
def build_log_append(
    *,
    jenkins_server: Any,
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
