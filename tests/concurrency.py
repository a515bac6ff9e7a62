"""并发测试的共用工具：真实线程同时起跑，每个线程用自己的数据库连接并在结束时关闭。"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections


def run_together(calls: list[Callable[[], Any]], *, expected: tuple[type[BaseException], ...] = ()) -> list[tuple]:
    """所有调用在同一个 barrier 上同时开始；返回每个调用的 ("ok", 结果) 或 ("error", 预期内的异常)。

    预期之外的异常、或 60 秒内没结束的线程（死锁）直接让测试失败。
    """
    barrier = threading.Barrier(len(calls))
    results: list[tuple] = [("missing", None)] * len(calls)

    def worker(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[index] = ("ok", call())
        except expected as exc:
            results[index] = ("error", exc)
        except BaseException as exc:  # noqa: BLE001 - 交给主线程的断言报告
            results[index] = ("crash", exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "线程没有结束（死锁？）"
    crashes = [r for r in results if r[0] != "ok" and r[0] != "error"]
    assert not crashes, crashes
    return results
