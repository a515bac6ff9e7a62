"""多个 beat 的主备：只有持有数据库租约（Lease "beat"）的那个调度周期任务，其余的空转待命。

持有者每 BEAT_LEASE_SECONDS/3 续一次期；它停了（正常退出时立刻放开租约，崩溃时租约到期），
待命的 beat 在几秒内接手，并从数据库重新读入周期任务表（上次运行时间由原持有者写回）。
数据库暂时不可用时，持有者在自己的租约到期之前照常调度（别人也拿不到租约）。

标了 run_in_beat 的任务（告警检查）由调度它的 beat 在本进程的一个线程里执行，不经过 broker 与 worker：
它要报告的正是 worker 或 broker 停了。
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections
from django.db.models import Q
from django.utils import timezone

from approvalbot.beat import Scheduler

from .models import Lease

logger = logging.getLogger(__name__)

LEASE_NAME = "beat"


def lease_acquire(name: str, holder: str, seconds: float) -> bool:
    """续期（已是持有者）或接手（租约已过期）；两个进程同时来时只有一个条件更新改到行。"""
    now = timezone.now()
    until = now + datetime.timedelta(seconds=seconds)
    Lease.objects.get_or_create(name=name, defaults={"expires_at": now})
    if Lease.objects.filter(name=name, holder=holder).update(expires_at=until, renewed_at=now):
        return True
    return bool(Lease.objects.filter(Q(expires_at__lt=now) | Q(holder=""), name=name)
                .update(holder=holder, expires_at=until, acquired_at=now, renewed_at=now))


def lease_release(name: str, holder: str) -> None:
    """正常退出时放开：待命的不必等到期。"""
    Lease.objects.filter(name=name, holder=holder).update(expires_at=timezone.now())


class LeaderScheduler(Scheduler):
    """approvalbot.beat.Scheduler（装入 CELERY_BEAT_SCHEDULE）+ 租约：settings.CELERY_BEAT_SCHEDULER 指向这里。"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = float(settings.BEAT_LEASE_SECONDS)
        self.is_leader = False
        self._renewed = 0.0  # time.monotonic() of the last successful renewal
        self._local = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beat-local")
        self._running: dict[str, Future] = {}
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------ 租约

    def _hold(self) -> bool:
        now = time.monotonic()
        if self.is_leader and now - self._renewed < self.lease_seconds / 3:
            return True
        try:
            close_old_connections()
            held = lease_acquire(LEASE_NAME, self.holder, self.lease_seconds)
        except (DatabaseError, InterfaceError) as exc:
            # 别人也拿不到租约：自己的租约到期之前照常调度
            logger.warning("beat 续租失败（%s），租约到期前照常调度", exc.__class__.__name__)
            return self.is_leader and now - self._renewed < self.lease_seconds
        if held:
            self._renewed = now
        return held

    def tick(self, *args: Any, **kwargs: Any) -> float:
        was_leader = self.is_leader
        self.is_leader = self._hold()
        standby = max(1.0, min(5.0, self.lease_seconds / 3))
        if not self.is_leader:
            if was_leader:
                logger.warning("beat 失去了调度租约，转为待命（%s）", self.holder)
            return standby
        if not was_leader:
            logger.warning("本 beat 开始调度周期任务（%s）", self.holder)
            # 待命期间别人在调度：下次读表时从数据库重新装入（含原持有者写回的上次运行时间）
            self._last_full_sync = datetime.datetime.min
        return min(super().tick(*args, **kwargs), standby)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._local.shutdown(wait=True, cancel_futures=True)
            if self.is_leader:
                try:
                    close_old_connections()
                    lease_release(LEASE_NAME, self.holder)
                    logger.info("beat 退出，已放开调度租约")
                except (DatabaseError, InterfaceError):
                    logger.warning("beat 退出时放开租约失败：待命的 beat 在租约到期后接手")
                self.is_leader = False

    # ------------------------------------------------------------ 在本进程执行的任务

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        task = self.app.tasks.get(entry.task)
        if task is None or not getattr(task, "run_in_beat", False):
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        entry = self.reserve(entry) if advance else entry
        running = self._running.get(entry.name)
        if running is not None and not running.done():
            logger.warning("上一次 %s 还没做完，跳过这一次", entry.task)
            return None
        self._running[entry.name] = self._local.submit(self._run_local, task, entry)
        return None

    @staticmethod
    def _run_local(task: Any, entry: Any) -> None:
        close_old_connections()
        try:
            result = task.apply(args=entry.args, kwargs=entry.kwargs)
            if result.failed():
                logger.error("%s 在 beat 进程里执行失败：%s", entry.task, result.result, exc_info=result.result)
        finally:
            close_old_connections()
