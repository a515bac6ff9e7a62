"""bin/approvalbot：在临时目录里真正启动四个进程（SQLite + 文件系统 broker，没有 Telegram token），再全部停掉（O12）。"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from .helpers import ROOT, free_port, process_env, wait_until

SCRIPT = ROOT / "bin" / "approvalbot"
ROLES = ("web", "worker", "beat", "bot")

pytestmark = pytest.mark.slow


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def listed_pids(status_output: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"^(\w+)\s+运行中\s+pid (\d+)$", status_output, re.M)}


@pytest.fixture
def deployment(tmp_path):
    """迁移好的临时部署；测试结束时无论成败都把进程停掉。"""
    port = free_port()
    env = process_env(tmp_path, WEB_PORT=str(port), WEB_CONCURRENCY="2", WORKER_CONCURRENCY="1",
                      LOG_FILE=str(tmp_path / "var" / "log" / "app.log"), SWEEP_INTERVAL_SECONDS="5")
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    yield env, port
    run(env, "stop", timeout=180)


def test_start_status_stop_runs_the_four_processes_and_cleans_up(deployment, tmp_path):
    env, port = deployment
    var = tmp_path / "var"
    started = run(env, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    for role in ROLES:
        assert f"已启动 {role}" in started.stdout

    # status 列出四个运行中的进程和健康的 /health；beat 自己装入周期任务表，worker 执行心跳后 beat=ok
    status = wait_until(lambda: (s := run(env, "status")).returncode == 0 and "beat=ok" in s.stdout and s, 60,
                        "status 全部运行、/health 200 且 beat 心跳新鲜")
    pids = listed_pids(status.stdout)
    assert sorted(pids) == sorted(ROLES), status.stdout
    assert re.search(r"^/health 200 ok（database=ok broker=ok beat=ok ", status.stdout, re.M), status.stdout
    for role, pid in pids.items():
        assert (var / "run" / f"{role}.pid").read_text().strip() == str(pid)
        assert not gone(pid)

    # 已在运行的进程不会再起一份
    again = run(env, "start", "web")
    assert again.returncode == 1 and "web 已在运行" in again.stdout
    assert listed_pids(run(env, "status").stdout)["web"] == pids["web"]

    # 没有 token：机器人说明原因后空转，而不是退出
    assert "没有设置 TELEGRAM_BOT_TOKEN" in (var / "log" / "bot.log").read_text()
    # 每个进程的输出在 var/log/<进程>.log；LOG_FILE 另有按角色分开的轮转文件，worker 的子进程也写进自己角色的文件
    assert "Sending due task" in (var / "log" / "app-beat.log").read_text()
    worker_log = (var / "log" / "app-worker.log").read_text()
    assert re.search(r"beat_heartbeat_task\[[-\w]+\] succeeded", worker_log), worker_log[-2000:]
    logs = run(env, "logs", "--no-follow", "web")
    assert logs.returncode == 0 and "Listening at: http://127.0.0.1:" in logs.stdout

    began = time.monotonic()
    stopped = run(env, "stop", timeout=180)
    elapsed = time.monotonic() - began
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert elapsed < 30, f"停止用了 {elapsed:.0f} 秒：{stopped.stdout}"
    for role, pid in pids.items():
        assert f"已停止 {role}" in stopped.stdout
        assert gone(pid), role
        # 进程组里也没有留下子进程（gunicorn 与 celery 的工作进程）
        assert all(gone(p.pid) for p in psutil.process_iter() if _pgid(p.pid) == pid), role
    assert list((var / "run").glob("*.pid")) == []
    final = run(env, "status")
    assert final.returncode == 3 and final.stdout.count("已停止") == 4 and "web 未运行" in final.stdout
    for role in ROLES:
        output = (var / "log" / f"{role}.log").read_text()
        assert "Traceback" not in output and " ERROR " not in output and "Logging error" not in output, (
            role, output[-2000:])


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_stale_pid_file_is_replaced_and_unknown_names_are_refused(deployment, tmp_path):
    env, _port = deployment
    run_dir = tmp_path / "var" / "run"
    run_dir.mkdir(parents=True)
    # 一个早已退出的进程留下的 pid 文件；再来一个 pid 被别的程序（本测试进程）复用的
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / "beat.pid").write_text(f"{dead.pid}\n")
    (run_dir / "bot.pid").write_text(f"{os.getpid()}\n")
    status = run(env, "status", "beat", "bot")
    assert status.returncode == 3 and "beat    已停止" in status.stdout and "bot     已停止" in status.stdout
    assert not (run_dir / "beat.pid").exists() and not (run_dir / "bot.pid").exists()

    started = run(env, "start", "beat")
    assert started.returncode == 0 and "已启动 beat" in started.stdout, started.stdout + started.stderr
    assert int((run_dir / "beat.pid").read_text()) != dead.pid
    # 停掉不存在的进程不出错；未知进程名给出说明与非零退出码
    assert "bot 未运行" in run(env, "stop", "bot").stdout
    unknown = run(env, "start", "scheduler")
    assert unknown.returncode == 2 and "未知进程：scheduler" in unknown.stderr
    assert not Path(run_dir / "scheduler.pid").exists()
