"""manage.py runbot：缺 token 时明确拒绝启动（非零退出）、注册 webhook、轮询进程对 SIGTERM 优雅退出。"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

SECRET = "runbot-Secret_0123456789"
BASE_DIR = Path(django_settings.BASE_DIR)


def test_missing_token_refuses_with_a_clear_message(settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    with pytest.raises(CommandError) as caught:
        call_command("runbot")
    assert caught.value.returncode == 2
    assert "没有设置 TELEGRAM_BOT_TOKEN" in str(caught.value) and "@BotFather" in str(caught.value)


def test_set_webhook_registers_url_secret_and_commands(fake_tg, settings, capsys):
    settings.PUBLIC_BASE_URL = "https://approvals.example.com"
    settings.TELEGRAM_WEBHOOK_SECRET = SECRET
    call_command("runbot", "--set-webhook")
    assert fake_tg.webhook == {
        "url": "https://approvals.example.com/telegram/webhook/", "secret_token": SECRET,
        "allowed_updates": ["message", "callback_query"], "max_connections": 40,
    }
    commands = {c["command"]: c["description"] for c in fake_tg.commands}
    assert set(commands) == {"start", "help", "approve", "reject", "pending", "status", "jenkins", "whoami", "stats",
                             "freeze", "unfreeze", "delegate", "undelegate"}
    assert commands["approve"] == "同意发布：/approve 编号"
    assert "已注册 webhook" in capsys.readouterr().out

    call_command("runbot", "--delete-webhook")
    assert fake_tg.webhook is None


def test_webhook_mode_registers_and_exits(fake_tg, settings):
    settings.TELEGRAM_MODE = "webhook"
    settings.PUBLIC_BASE_URL = "https://approvals.example.com"
    settings.TELEGRAM_WEBHOOK_SECRET = SECRET
    call_command("runbot")
    assert fake_tg.webhook["url"] == "https://approvals.example.com/telegram/webhook/"


@pytest.mark.parametrize(("base_url", "secret", "expected"), [
    ("https://approvals.example.com", "", "TELEGRAM_WEBHOOK_SECRET"),
    ("https://approvals.example.com", "有空格 的密钥", "TELEGRAM_WEBHOOK_SECRET"),
    ("http://approvals.example.com", SECRET, "HTTPS"),
])
def test_webhook_needs_a_valid_secret_and_https(fake_tg, settings, base_url, secret, expected):
    settings.PUBLIC_BASE_URL = base_url
    settings.TELEGRAM_WEBHOOK_SECRET = secret
    with pytest.raises(CommandError) as caught:
        call_command("runbot", "--set-webhook")
    assert caught.value.returncode == 2 and expected in str(caught.value)
    assert fake_tg.webhook is None


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_URL"))}
    env.update({"APP_IGNORE_DOTENV": "1", "APP_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "approvalbot.settings",
                "PYTHONUNBUFFERED": "1", **extra})
    return env


def _runbot(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", "runbot", "--poll-timeout", "1"], cwd=BASE_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_process_without_token_exits_non_zero(tmp_path):
    proc = _runbot(_env(tmp_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "没有设置 TELEGRAM_BOT_TOKEN" in err


def test_process_with_revoked_token_exits_non_zero(fake_tg, tmp_path):
    env = _env(tmp_path, TELEGRAM_BOT_TOKEN="123456789:AArevokedTOKENrevokedTOKENrevoked1",
               TELEGRAM_API_URL=fake_tg.url)
    proc = _runbot(env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "Telegram 拒绝了 TELEGRAM_BOT_TOKEN" in err
    assert "AArevokedTOKEN" not in out + err


def test_polling_process_retries_startup_and_stops_gracefully_on_sigterm(fake_tg, tmp_path):
    fake_tg.server_error("getMe", times=2)  # 启动时 Telegram 暂时不可用：退避重试而不是退出
    proc = _runbot(_env(tmp_path, TELEGRAM_BOT_TOKEN=fake_tg.token, TELEGRAM_API_URL=fake_tg.url))
    try:
        fake_tg.wait_for(lambda: fake_tg.ok_calls("getUpdates"), timeout=30)
        assert [c.status for c in fake_tg.calls_to("getMe")][:3] == [502, 502, 200]
        assert fake_tg.ok_calls("getMe") and fake_tg.ok_calls("deleteWebhook")  # 轮询前先确保没有 webhook
        assert {c["command"] for c in fake_tg.commands} >= {"approve", "reject"}
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 10
    assert "Telegram 机器人已停止" in out
    assert fake_tg.token not in out + err
