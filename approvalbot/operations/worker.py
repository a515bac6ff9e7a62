"""worker 的心跳（/health 与告警判断“有 worker 在运行”）：worker 就绪后在主进程里起一个线程，定时写心跳行。

不靠 beat 发来的任务：那样 beat 停了也像 worker 停了。主进程的线程不受任务占满子进程的影响；
正常退出时删掉自己的行，/health 立刻看得到少了一个 worker。
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.db import close_old_connections, connections
from django.utils import timezone

from .health import WORKER_HEARTBEAT_PREFIX, WORKER_HEARTBEAT_SECONDS
from .models import Heartbeat

logger = logging.getLogger(__name__)

# 主机名换了的旧行（容器重建）保留这么久后清掉
STALE_ROWS_AFTER = timedelta(days=7)

_stop = threading.Event()
_thread: threading.Thread | None = None


def heartbeat_name(hostname: str) -> str:
    return (WORKER_HEARTBEAT_PREFIX + hostname)[:50]


def worker_heartbeat(name: str) -> None:
    now = timezone.now()
    Heartbeat.objects.update_or_create(name=name, defaults={"at": now})
    Heartbeat.objects.filter(name__startswith=WORKER_HEARTBEAT_PREFIX, at__lt=now - STALE_ROWS_AFTER).delete()


def _loop(name: str) -> None:
    while not _stop.is_set():
        try:
            close_old_connections()
            worker_heartbeat(name)
        except Exception:
            logger.warning("写 worker 心跳失败（稍后再试）", exc_info=True)
        _stop.wait(WORKER_HEARTBEAT_SECONDS)
    connections.close_all()


@worker_ready.connect
def _start(sender: Any = None, **kwargs: Any) -> None:
    global _thread
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    _stop.clear()
    _thread = threading.Thread(target=_loop, args=(heartbeat_name(hostname),), name="worker-heartbeat", daemon=True)
    _thread.start()


@worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=5)
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    try:
        close_old_connections()
        Heartbeat.objects.filter(name=heartbeat_name(hostname)).delete()
    except Exception:
        logger.warning("删除 worker 心跳失败", exc_info=True)
