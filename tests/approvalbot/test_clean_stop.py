"""make run 之后按一次 Ctrl-C：四个进程在时限内全部退出，输出里没有 ERROR 与 Traceback，也不留下孤儿进程。

以前 honcho 5 秒后就 SIGKILL 还没退完的 worker，而且它向整个进程组发 SIGTERM，prefork 池的子进程被直接杀死，
Celery 记下 “Process 'ForkPoolWorker-1' exited with 'signal 15 (SIGTERM)'” 这样的 ERROR。
这里跑的就是 make run 最后一步的那条命令（bin/run-all，读 Procfile），在临时的 APP_VAR_DIR 里。
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STOP_WITHIN_SECONDS = 25

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"超时：{what}")


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _our_processes(marker: str) -> list[int]:
    """环境里带着这次测试的 APP_VAR_DIR 的进程：只认我们自己启动的。"""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"APP_VAR_DIR={marker}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def test_one_ctrl_c_stops_every_process_cleanly(tmp_path):
    var = str(tmp_path / "var")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "TELEGRAM_"))}
    env.update({"APP_VAR_DIR": var, "APP_IGNORE_DOTENV": "1", "APP_TESTING": "0", "WEB_PORT": str(port),
                "USERS_CONFIG_FILE": str(tmp_path / "users.json"), "APP_CONFIG_FILE": str(tmp_path / "app.json"),
                "WORKER_CONCURRENCY": "2", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        # 新会话：向它的进程组发 SIGINT，就是终端里按 Ctrl-C
        honcho = subprocess.Popen([sys.executable, "bin/run-all", "-e", os.devnull], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: _up(f"http://127.0.0.1:{port}/health"), 60, "web 启动")
        _wait_for(lambda: "ready." in log_path.read_text(errors="replace"), 60, "worker 就绪")
        _wait_for(lambda: "beat: Starting" in log_path.read_text(errors="replace")
                  or "Scheduler" in log_path.read_text(errors="replace"), 30, "beat 启动")

        started = time.monotonic()
        os.killpg(honcho.pid, signal.SIGINT)
        honcho.wait(timeout=STOP_WITHIN_SECONDS + 10)
        took = time.monotonic() - started
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        leftovers = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                     for pid in _our_processes(var)}
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    output = log_path.read_text(errors="replace")
    assert took < STOP_WITHIN_SECONDS, (took, output[-3000:])
    assert "SIGINT received" in output
    for name in ("web.1", "bot.1", "worker.1", "beat.1"):
        assert f"{name} stopped" in output, output[-3000:]
    assert "SIGKILL" not in output, output[-3000:]
    assert "ERROR" not in output and "Traceback" not in output, output[-4000:]
    assert "worker.1 stopped (rc=0)" in output  # celery 自己热关闭完、正常退出
    assert not leftovers, leftovers
