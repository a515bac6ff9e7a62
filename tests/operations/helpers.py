"""运维测试共用的小工具：子进程环境、空闲端口、等待条件、/health。"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def in_ci() -> bool:
    """.ci/run 导出 APPROVALBOT_CI=1：CI 上缺工具是安装步骤的错误，要失败而不是跳过。"""
    return os.environ.get("APPROVALBOT_CI") == "1"


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI 上不能跳过：{reason}")
    pytest.skip(reason)


def process_env(tmp_path: Path, *, keep_services: bool = False, **extra: str) -> dict[str, str]:
    """子进程按生产方式运行：不读开发者的 .env、不进测试模式；默认用嵌入式 SQLite + 文件系统 broker。"""
    env = {k: v for k, v in os.environ.items()
           if keep_services or not k.startswith(("DATABASE_URL", "CELERY_"))}
    for name in ("TELEGRAM_BOT_TOKEN", "JENKINS_URL", "LOG_FILE", "APP_PROCESS", "WEB_HOST", "WEB_PORT"):
        env.pop(name, None)
    env.update({
        "APP_VAR_DIR": str(tmp_path / "var"), "APP_IGNORE_DOTENV": "1", "APP_TESTING": "0",
        "USERS_CONFIG_FILE": str(tmp_path / "users.json"), "APP_CONFIG_FILE": str(tmp_path / "app.json"),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    })
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{timeout:.0f} 秒内没有等到：{what}")


def health(port: int, host: str = "localhost") -> tuple[int, dict] | None:
    """GET /health（Host 头须在 DJANGO_ALLOWED_HOSTS 里）；连不上时 None。"""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return None
