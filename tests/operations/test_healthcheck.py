"""docker/healthcheck.py：镜像 HEALTHCHECK 与 bin/approvalbot status 用的探测，对一个真实的本地 HTTP 服务。"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .helpers import ROOT, free_port

PROBE = ROOT / "docker" / "healthcheck.py"
BODY = {"status": "degraded", "components": {"database": {"status": "ok"}, "broker": {"status": "ok"},
                                             "beat": {"status": "stale"}}}


class FakeApp(BaseHTTPRequestHandler):
    """像 Django 一样只接受 ALLOWED_HOSTS 里的 Host；answer 决定 /health 的回答。"""

    answer: tuple[int, bytes] = (200, json.dumps(BODY).encode())
    allowed_host = "approval.example.com"
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        host = self.headers.get("Host", "").split(":")[0]
        status, body = (400, b"<h1>Bad Request</h1>") if host != self.allowed_host else self.answer
        if self.path != "/health":
            status, body = 404, b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def app():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def probe(port: int, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "WEB_PORT": str(port), "WEB_HOST": "0.0.0.0"}
    return subprocess.run([sys.executable, str(PROBE), *args], env={**base, **env}, capture_output=True, text=True,
                          timeout=30)


def test_healthy_answer_exits_zero_with_a_summary_using_the_allowed_host(app):
    done = probe(app.server_port, DJANGO_ALLOWED_HOSTS=".approval.example.com,localhost")
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip() == "/health 200 degraded（database=ok broker=ok beat=stale）"


def test_without_the_allowed_host_django_would_refuse_the_probe(app):
    done = probe(app.server_port, DJANGO_ALLOWED_HOSTS="other.example.com")
    assert done.returncode == 1 and "/health 400" in done.stdout


def test_503_and_garbage_answers_are_unhealthy(app, monkeypatch):
    monkeypatch.setattr(FakeApp, "answer", (503, json.dumps({**BODY, "status": "error"}).encode()))
    done = probe(app.server_port, DJANGO_ALLOWED_HOSTS="approval.example.com")
    assert done.returncode == 1 and done.stdout.startswith("/health 503 error（database=ok")
    monkeypatch.setattr(FakeApp, "answer", (200, b"<html>proxy error</html>"))
    done = probe(app.server_port, DJANGO_ALLOWED_HOSTS="approval.example.com")
    assert done.returncode == 1 and "不是预期的 JSON" in done.stdout


def test_nothing_listening_or_a_hung_server_fails_fast(app, monkeypatch):
    began = time.monotonic()
    done = probe(free_port(), "--timeout", "1")
    assert done.returncode == 1 and "无法访问" in done.stdout
    monkeypatch.setattr(FakeApp, "delay", 5.0)
    done = probe(app.server_port, "--timeout", "1", DJANGO_ALLOWED_HOSTS="approval.example.com")
    assert done.returncode == 1 and "无法访问" in done.stdout
    assert time.monotonic() - began < 5
