"""长轮询：等待中的流水线不占线程。

每个进程只有一个观察线程：有人等待时，每 POLL_INTERVAL 秒用一条查询检查所有被等待的审批，
已进入终态的直接生成回答体，交给各自事件循环里的 Future；没人等待时线程睡眠、归还数据库连接。
这样 1000 个等待只是 1000 个挂起的协程，加上每 0.4 秒一条 SQL。
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection

from approvalbot.metrics import LONGPOLL_WAITERS
from approvals.models import Approval, Status

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.4
# 视图与 ASGI 外层之间的约定（api/asgi.py、api/views.py 都从这里取）：外层在 scope 里做标记，
# 视图需要等待时立即回答并带上内部头 "<pk> <秒数>"，由外层挂起等待、去掉这个头后再回给客户端
SCOPE_FLAG = "approvalbot.longpoll"
MARKER_HEADER = "X-Approvalbot-Longpoll"


def _decided_replies(ids: list[int]) -> dict[int, dict[str, Any]]:
    from .serializers import approval_reply

    decided = (
        Approval.objects.filter(pk__in=ids)
        .exclude(status=Status.PENDING)
        .prefetch_related("votes")
    )
    return {approval.pk: approval_reply(approval) for approval in decided}


class DecisionWatcher:
    """进程内唯一的观察者（模块级单例 watcher）。线程安全；可被任意事件循环使用。"""

    def __init__(self, *, interval: float = POLL_INTERVAL,
                 fetch: Callable[[list[int]], dict[int, dict[str, Any]]] = _decided_replies) -> None:
        self.interval = interval
        self._fetch = fetch
        self._lock = threading.Lock()
        self._waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}
        # 只在“从无人等待变为有人等待”时唤醒线程；新来的等待者不会让查询变频繁
        self._has_waiters = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0  # 查询次数（测试与指标用）

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._waiters.values())

    async def wait(self, approval_id: int, timeout: float) -> dict[str, Any] | None:
        """等到审批进入终态（返回回答体）或超时（返回 None）。客户端断开时协程被取消，登记随之清除。"""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        entry = (loop, future)
        with self._lock:
            self._waiters.setdefault(approval_id, set()).add(entry)
            self._has_waiters.set()
            self._ensure_thread()
        LONGPOLL_WAITERS.inc()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            LONGPOLL_WAITERS.dec()
            with self._lock:
                entries = self._waiters.get(approval_id)
                if entries is not None:
                    entries.discard(entry)
                    if not entries:
                        del self._waiters[approval_id]

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="approval-longpoll-watcher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                ids = list(self._waiters)
                if not ids:
                    self._has_waiters.clear()
            if not ids:
                # 没人等：归还连接再睡，避免长时间占着一个数据库连接
                connection.close()
                self._has_waiters.wait()
                continue
            try:
                # 观察线程一直持有自己的连接（ASGI 进程的 CONN_MAX_AGE=0 不适用于它，否则每 0.4 秒重连一次）；
                # 自动提交下每次查询都看到最新提交；连接坏了查询会失败，下面关掉，下一轮自动重连
                replies = self._fetch(ids)
                self.polls += 1
            except Exception:
                logger.exception("长轮询观察线程查询失败")
                connection.close()
                replies = {}
            for approval_id, reply in replies.items():
                with self._lock:
                    entries = self._waiters.pop(approval_id, set())
                for loop, future in entries:
                    try:
                        loop.call_soon_threadsafe(_resolve, future, reply)
                    except RuntimeError:
                        pass  # 事件循环已关闭：那个请求早已结束
            time.sleep(self.interval)


def _resolve(future: asyncio.Future, reply: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(reply)


watcher = DecisionWatcher()
