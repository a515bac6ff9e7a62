"""端到端：真正启动 Procfile 里的四个进程（web、bot、worker、beat），走完一次审批。

嵌入式默认（同一个 SQLite 文件 + 文件系统 broker），外部只有假 Telegram 与假 Jenkins（真 HTTP）：
流水线 POST 等待接口 → worker 把带按钮的消息发到群 → 审批人点「同意发布」→ bot 记录决定 →
worker 调 Jenkins 的 input proceed 并把消息改成结果 → 流水线轮询看到 approved。
同时检查：四个进程共用 SQLite 不报 "database is locked"，日志里没有 Bot token 与 API token。
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fake_jenkins import FakeInput, FakeJenkins
from tests.fake_telegram import FakeTelegram

ROOT = Path(__file__).resolve().parents[1]
GROUP = -1009876543210
API_TOKEN = "e2e-api-token-0123456789abcdef"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"超时：{what}")


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def fakes():
    telegram = FakeTelegram().start()
    jenkins = FakeJenkins().start()
    yield telegram, jenkins
    telegram.stop()
    jenkins.down()


def test_four_processes_run_one_approval_end_to_end(tmp_path, fakes):
    telegram, jenkins = fakes
    telegram.add_group(GROUP, "发布群")
    bob = telegram.add_user(2002, "bob_ops", "Bob")
    jenkins.add_build("shop-backend", 42, inputs=[FakeInput(id="Release")])
    users = {
        "users": {"bob": {"role": "运维负责人", "telegram_id": 2002, "telegram_username": "bob_ops", "name": "Bob"}},
        "projects": {"shop-backend": {"approvers": ["bob"], "chat_id": GROUP}},
    }
    (tmp_path / "users.json").write_text(json.dumps(users, ensure_ascii=False), encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_"))}
    env.update({
        "APP_VAR_DIR": str(tmp_path / "var"), "APP_IGNORE_DOTENV": "1", "APP_TESTING": "0",
        "USERS_CONFIG_FILE": str(tmp_path / "users.json"), "APP_CONFIG_FILE": str(tmp_path / "app.json"),
        "TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_API_URL": telegram.url,
        "JENKINS_URL": jenkins.url, "JENKINS_USER": "svc", "JENKINS_API_TOKEN": "svc-token",
        "APPROVAL_API_TOKEN": API_TOKEN, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "WEB_PORT": str(port), "WORKER_CONCURRENCY": "1", "SWEEP_INTERVAL_SECONDS": "5",
        "TELEGRAM_PACING_GROUP_SECONDS": "0", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    })
    for command in (["migrate", "--noinput"], ["load_config"]):
        done = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    log_path = tmp_path / "honcho.log"
    with log_path.open("w") as log:
        honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _reachable(f"{base}/health"), 60, "web 进程启动")
        status, body = http("POST", f"{base}/api/stage/approval/wait", {
            "JOB_NAME": "shop-backend", "BUILD_NUMBER": 42, "env": "生产", "version": "v2.0",
            "description": "修复支付回调 🚀", "input_id": "release", "BUILD_URL": f"{jenkins.url}job/shop-backend/42/"})
        assert status == 201, body
        public_id = body["id"]

        # worker 把带按钮的审批消息发到项目群
        message = wait_until(lambda: next(iter(telegram.chat_messages(GROUP)), None), 60, "审批消息")
        assert public_id in message.text and "修复支付回调 🚀" in message.text
        assert [b["callback_data"] for b in message.buttons][0] == f"ap:{public_id}:a"

        # 审批人点「同意发布」：bot（长轮询）记录决定，worker 继续 Jenkins 并改消息
        query = telegram.tap(bob, GROUP, message.message["message_id"], f"ap:{public_id}:a")
        wait_until(lambda: telegram.answer(query), 60, "按钮得到回答")
        wait_until(lambda: jenkins.calls("POST", contains="/input/Release/proceed"), 60, "Jenkins input 被继续")
        edited = wait_until(lambda: "已同意" in telegram.message(GROUP, message.message["message_id"]).text
                            and telegram.message(GROUP, message.message["message_id"]), 60, "消息被改成结果")
        assert not edited.buttons

        status, body = http("GET", f"{base}/api/stage/approval/wait?id={public_id}&wait=5")
        assert status == 200 and body["status"] == "approved" and body["proceed"] is True
        assert body["decided_by"] == "Bob"
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    output = log_path.read_text(errors="replace")
    assert "database is locked" not in output
    assert telegram.token not in output and API_TOKEN not in output
    for name in ("web.1", "bot.1", "worker.1", "beat.1"):
        assert f"{name} started" in output, output[-3000:]
    # 机器人真的在长轮询，而不是因为缺 token 空转
    assert "机器人未启动" not in output
    # worker 与 beat 用的是项目的日志配置（含脱敏过滤器），而不是 Celery 接管后的默认格式
    assert re.search(r"worker\.1\s+\| \d{4}-\d\d-\d\d [\d:,]+ INFO ", output), output[-3000:]


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
