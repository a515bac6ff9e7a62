"""长轮询的 ASGI 外层：让等待发生在 Django 请求周期之外。

等待接口的视图在需要等待时立刻返回当前状态，并带一个内部头 X-Approvalbot-Longpoll: "<pk> <秒数>"。
本外层截住这个响应先不发，挂在进程内唯一的观察者上；审批一有结果，直接用观察线程生成好的回答体发出去。
于是 Django 的中间件、请求结束信号、数据库连接在请求一开始就走完了；唤醒 1000 个等待不再需要
1000 × 若干次切到同步线程（那条路每秒只能送出一两百个回答）。

没有本外层时（runserver、WSGI、测试客户端），视图自己在协程里等待，行为相同。
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import sync_to_async

from .errors import json_bytes
from .longpoll import MARKER_HEADER, SCOPE_FLAG, watcher

logger = logging.getLogger(__name__)

WAIT_PATH = "/api/stage/approval/wait"
MARKER = MARKER_HEADER.lower().encode("ascii")
DJANGO_CONCURRENCY = 16


class LongPollMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._gate: asyncio.Semaphore | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != WAIT_PATH:
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        # 同时进入 Django 的等待请求有上限：上千个流水线同时到达时在这里排队（只是挂起的协程），
        # 而不是同时各占一个 Django 请求线程
        if self._gate is None:
            self._gate = asyncio.Semaphore(DJANGO_CONCURRENCY)

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                marker = next((value for name, value in headers if name.lower() == MARKER), None)
                if marker is not None:
                    held["start"], held["marker"], held["body"] = message, marker, b""
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                return
            await send(message)

        async with self._gate:
            await self.app({**scope, SCOPE_FLAG: True}, receive, capture)
        if "start" not in held:
            return
        pk_text, seconds_text = held["marker"].decode("ascii").split()
        reply = await self._wait(int(pk_text), float(seconds_text), receive)
        if reply is False:
            return  # 客户端已断开
        if reply is None:
            reply = await sync_to_async(_latest_reply, thread_sensitive=False)(int(pk_text))
        body = json_bytes(reply) if reply else held["body"]
        headers = [(name, value) for name, value in held["start"].get("headers") or []
                   if name.lower() not in (MARKER, b"content-length")]
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        await send({**held["start"], "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _wait(pk: int, seconds: float, receive: Any) -> dict | None | bool:
        """等待结果；同时监听断开（Django 已读完请求体，之后 receive 只会收到 http.disconnect）。"""
        waiter = asyncio.ensure_future(watcher.wait(pk, seconds))
        disconnect = asyncio.ensure_future(receive())
        done, _pending = await asyncio.wait({waiter, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            disconnect.cancel()
            await asyncio.gather(disconnect, return_exceptions=True)
            return waiter.result()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)  # 让等待者的登记当场清除
        return False


def _latest_reply(pk: int) -> dict | None:
    """等到时间仍未决定：读一次最新状态（票数可能变了）。像一个请求那样管理本线程的连接——否则断掉的连接
    （数据库重启、wait_timeout）会一直留在这个线程里，之后每一次超时的长轮询都失败。读不到时退回
    等待开始时的回答（那也是正确的、只是旧一点的状态）。"""
    from django.db import DatabaseError, close_old_connections

    from .views import _reply_for

    close_old_connections()
    try:
        return _reply_for(pk)
    except DatabaseError:
        logger.warning("长轮询到时读取审批 %s 的最新状态失败，返回等待开始时的状态", pk, exc_info=True)
        return None
    finally:
        close_old_connections()


def longpoll_asgi(app: Any) -> LongPollMiddleware:
    return LongPollMiddleware(app)
