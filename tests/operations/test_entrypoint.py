"""不用 Docker 验证镜像的入口：docker/entrypoint.sh 在全新的 MariaDB 库 + Redis 上跑 migrate 与四个进程（O9）。

只在 DATABASE_URL 指向 MySQL/MariaDB、CELERY_BROKER_URL 指向 Redis 时运行（CI 的第二轮）。
环境与镜像相同：DJANGO_PRODUCTION=1、SERVE_STATIC、APP_VAR_DIR 等；进程收到 SIGTERM 后必须在各自的停止时限内退出。
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import environ
import pytest

from .helpers import ROOT, free_port, health, process_env, wait_until
from .test_systemd_units import script_stop_timeouts

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
PROCESSES = ("worker", "beat", "web", "bot")

pytestmark = [pytest.mark.slow, pytest.mark.mysql]


@pytest.fixture
def fresh_database():
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("mysql://") or not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        pytest.skip("只在 DATABASE_URL=mysql://… 且 CELERY_BROKER_URL=redis://… 时运行（CI 的 MariaDB 轮次）")
    import MySQLdb

    config = environ.Env.db_url_config(url)
    name = f"{config['NAME']}_entry"[:64]
    server = MySQLdb.connect(host=config["HOST"] or "127.0.0.1", port=int(config["PORT"] or 3306),
                             user=config["USER"], passwd=config["PASSWORD"] or "")
    cursor = server.cursor()
    cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        server.close()


def test_entrypoint_migrates_then_runs_and_stops_the_four_processes(fresh_database, tmp_path):
    port = free_port()
    # 镜像的 ENV（docker/Dockerfile）+ compose 给的 DATABASE_URL/CELERY_BROKER_URL/LOG_FILE
    env = process_env(tmp_path, keep_services=True, DATABASE_URL=fresh_database, DJANGO_PRODUCTION="1",
                      DJANGO_SECRET_KEY=secrets.token_urlsafe(40), SERVE_STATIC="true", PYTHONUNBUFFERED="1",
                      PYTHONDONTWRITEBYTECODE="1", WEB_HOST="127.0.0.1", WEB_PORT=str(port), WEB_CONCURRENCY="2",
                      WORKER_CONCURRENCY="1", SWEEP_INTERVAL_SECONDS="5", DJANGO_ALLOWED_HOSTS="approval.example.com",
                      LOG_FILE=str(tmp_path / "var" / "log" / "app.log"))
    migrated = subprocess.run([str(ENTRYPOINT), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=180)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    logs = {name: (tmp_path / f"{name}.out").open("w") for name in PROCESSES}
    # 从别的目录调用：入口脚本自己找到项目目录
    running = {name: subprocess.Popen([str(ENTRYPOINT), name], cwd=tmp_path, env=env, stdout=logs[name],
                                      stderr=subprocess.STDOUT, start_new_session=True) for name in PROCESSES}
    try:
        def healthy():
            answer = health(port, host="approval.example.com")
            if not answer or answer[0] != 200:
                return None
            parts = answer[1]["components"]
            ok = all(parts[name]["status"] == "ok" for name in ("database", "broker", "beat"))
            return ok and answer[1]
        body = wait_until(healthy, 90, "/health：database、broker、beat 都是 ok")
        assert body["components"]["database"]["vendor"] == "mysql"
        assert body["components"]["broker"]["transport"] == "redis"
        # 镜像的 HEALTHCHECK 用的同一个探测脚本：生产只允许对外域名，按回环地址探测也不被拒绝
        probe = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], env=env,
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0 and probe.stdout.startswith("/health 200 "), probe.stdout

        for name in PROCESSES:
            assert running[name].poll() is None, f"{name} 提前退出"
            running[name].send_signal(signal.SIGTERM)
        limits = script_stop_timeouts()
        began = time.monotonic()
        for name in PROCESSES:
            remaining = limits[name] - (time.monotonic() - began)
            running[name].wait(timeout=max(remaining, 1))
        elapsed = time.monotonic() - began
    finally:
        for process in running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs.values():
            log.close()

    # 正常的优雅退出；机器人（没有 token 时空转的 sleep）被 SIGTERM 结束
    assert {name: running[name].returncode for name in ("web", "worker", "beat")} == {
        "web": 0, "worker": 0, "beat": 0}
    assert elapsed < 40, f"停止用了 {elapsed:.0f} 秒"
    for name in PROCESSES:
        output = (tmp_path / f"{name}.out").read_text(errors="replace")
        assert "Traceback" not in output and " ERROR " not in output and "[ERROR]" not in output, (
            name, output[-3000:])
    assert "没有设置 TELEGRAM_BOT_TOKEN" in (tmp_path / "bot.out").read_text()
    # 进程都停了：探测失败，退出码非零（容器会被标记为不健康）
    probe = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py"), "--timeout", "1"], env=env,
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 1 and "无法访问" in probe.stdout
