"""确保 Django 启动时 Celery 应用也被加载，@shared_task 才能绑定到它。

在导入 prometheus_client 之前设定多进程指标目录：web、bot、worker、beat 各进程的计数写在同一个目录里，
/metrics 把它们加在一起（approvalbot/metrics.py）。测试模式下不用（计数留在测试进程内）。
"""

import os
from pathlib import Path

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR") and os.environ.get("APP_TESTING", "") not in ("1", "true", "yes"):
    _dir = Path(os.environ.get("APP_VAR_DIR") or Path(__file__).resolve().parent.parent / "var") / "prometheus"
    _dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_dir)

    import socket

    from prometheus_client import values

    # 文件按“主机名-进程号”命名：几个容器共用一个目录时进程号会重复（都是 1、7…），只用进程号会互相覆盖
    _host = socket.gethostname().replace("_", "-")

    def _process_identifier() -> str:
        return f"{_host}-{os.getpid()}"

    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)

    def _mark_dead() -> None:
        # 进程退出时删掉它的“活着才算”的 Gauge 文件（长轮询等待数）；计数器文件保留，计数不丢
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(_process_identifier())

    import atexit

    atexit.register(_mark_dead)

from .celery import app as celery_app

__all__ = ("celery_app",)
