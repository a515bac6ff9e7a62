"""保留期清理（D8）与构建日志归档（G6）。"""

from __future__ import annotations

import gzip
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.db.models.functions import Length
from django.utils import timezone

from accounts.app_config import retention_days

from .models import TERMINAL_STATUSES, Approval, ApprovalEvent, BuildLog, BuildResult, Vote
from .sweeps import run_in_batches

logger = logging.getLogger(__name__)

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


def _purge_in_batches(queryset: QuerySet, *, batch: int, deadline: float,
                      delete: Callable[[list[int]], bool]) -> bool:
    """按 id 分批调用 delete，直到删完、超出时间预算或 delete 要求停止（返回 False）；返回是否删完。"""

    def step() -> int | None:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch])
        if ids and not delete(ids):
            return None
        return len(ids)

    return run_in_batches(step, batch=batch, deadline=deadline)[1]


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
