"""项目级行为：嵌入式默认、beat 的周期任务表、首次管理员、日志脱敏。"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_embedded_defaults_sqlite_wal_and_filesystem_broker(tmp_path):
    """不设任何变量：SQLite 在 var/ 下、WAL 模式，broker 是文件系统。"""
    result = run_manage(
        "shell", "--no-imports", "-c",
        "from django.db import connection; from django.conf import settings; c = connection.cursor();"
        "c.execute('PRAGMA journal_mode'); print(c.fetchone()[0]); c.execute('PRAGMA busy_timeout');"
        "print(c.fetchone()[0]); print(settings.DATABASES['default']['NAME']); print(settings.CELERY_BROKER_URL);"
        "print(settings.LANGUAGE_CODE, settings.TIME_ZONE)",
        env_extra={"APP_VAR_DIR": str(tmp_path), "APP_IGNORE_DOTENV": "1"},
    )
    assert result.returncode == 0, result.stderr
    journal, busy, name, broker, lang = result.stdout.split("\n")[:5]
    assert journal == "wal"
    assert int(busy) >= 5000
    assert name == str(tmp_path / "db.sqlite3")
    assert broker == "filesystem://"
    assert lang == "zh-hans Asia/Shanghai"
    assert (tmp_path / "celery" / "out").is_dir()


def test_production_refuses_to_start_without_secret_key(tmp_path):
    result = run_manage("check", env_extra={"APP_VAR_DIR": str(tmp_path), "APP_IGNORE_DOTENV": "1",
                                             "DJANGO_PRODUCTION": "1", "APP_TESTING": "0"})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


# transaction=True：beat 在事务之外运行，DatabaseScheduler 会关闭“还在事务里”的连接（测试事务里的 MariaDB 连接）
@pytest.mark.django_db(transaction=True)
def test_beat_alone_installs_the_schedule_and_disables_removed_entries(settings):
    """只启动 celery beat（没有任何同步步骤）就调度全部周期任务；代码里删掉的托管条目停用，后台建的不动。"""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from approvalbot.beat import Scheduler
    from approvalbot.celery import app

    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="[auto] gone.task", task="gone.task", interval=every_minute)
    PeriodicTask.objects.create(name="ops: weekly report", task="ops.report", interval=every_minute)

    scheduler = Scheduler(app=app)

    enabled = set(PeriodicTask.objects.filter(enabled=True).values_list("name", flat=True))
    assert set(settings.CELERY_BEAT_SCHEDULE) <= enabled
    assert "[auto] gone.task" not in enabled and "[auto] gone.task" not in scheduler.schedule
    assert "ops: weekly report" in enabled
    sweep = PeriodicTask.objects.get(name="[auto] approvals.reminder_sweep")
    assert (sweep.task, sweep.interval.every, sweep.interval.period) == (
        "approvals.tasks.reminder_sweep_task", 30, IntervalSchedule.SECONDS)
    purge = PeriodicTask.objects.get(name="[auto] approvals.retention_purge")
    assert (purge.crontab.minute, purge.crontab.hour) == ("30", "3")
    # 每个条目指向 worker 真会注册的任务：名字写错的条目会让 beat 每个周期发出没人执行的消息
    app.loader.import_default_modules()  # worker 启动时做的事
    assert {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} <= set(app.tasks)

    # 第二个 beat（或重启）：不重复建行；被删后又加回代码的条目重新启用
    PeriodicTask.objects.filter(name="[auto] approvals.timeout_sweep").update(enabled=False)
    count = PeriodicTask.objects.count()
    Scheduler(app=app)
    assert PeriodicTask.objects.count() == count
    assert PeriodicTask.objects.get(name="[auto] approvals.timeout_sweep").enabled


@pytest.mark.django_db
def test_bootstrap_admin_creates_one_superuser_once(settings, tmp_path):
    from django.contrib.auth import get_user_model

    settings.VAR_DIR = tmp_path
    call_command("bootstrap_admin")
    call_command("bootstrap_admin")
    users = get_user_model().objects.filter(is_superuser=True)
    assert users.count() == 1
    username, password = (tmp_path / "admin-password.txt").read_text().split()
    assert users.get().check_password(password) and username == "admin"
    assert (tmp_path / "admin-password.txt").stat().st_mode & 0o077 == 0


def test_log_filter_redacts_tokens(settings, caplog):
    from approvalbot.logging import RedactSecretsFilter

    settings.APPROVAL_API_TOKEN = "api-secret-token-123456"
    secret_part = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    fake_token = "123456789:" + secret_part  # 拼出来：源码里不出现完整的 token 形状
    record = logging.LogRecord("httpx", logging.WARNING, __file__, 1,
                               f"POST https://api.telegram.org/bot{fake_token}/sendMessage %s",
                               ("Authorization: Bearer api-secret-token-123456",), None)
    RedactSecretsFilter().filter(record)
    message = record.getMessage()
    assert secret_part not in message and "api-secret-token-123456" not in message
    assert "/bot***/sendMessage" in message


def test_httpx_logger_is_quiet():
    # httpx 在 INFO 级别会记录带 Bot token 的完整 URL
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING


@pytest.mark.django_db
def test_api_docs_page_needs_no_cdn(client):
    """内网或离线环境也要能打开 API 文档：页面里不能引用外部主机的脚本与样式。"""
    response = client.get("/api/docs")
    assert response.status_code == 200
    body = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css" in body
    assert "cdn.jsdelivr.net" not in body and "unpkg.com" not in body
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


def test_celery_retry_backoff_stays_below_visibility_timeout(settings):
    """acks_late 的任务若在 visibility_timeout 内没确认，会被 Redis 重新投递：退避上限必须小于它。"""
    from approvalbot.celery import app

    visibility = app.conf.broker_transport_options.get("visibility_timeout", 3600)
    assert settings.CELERY_RETRY_BACKOFF_MAX < visibility
    assert app.conf.task_acks_late and app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.task_time_limit and app.conf.task_soft_time_limit < app.conf.task_time_limit


@pytest.mark.django_db
def test_openapi_schema_generates_without_warnings(tmp_path):
    """API 文档从代码生成：任何警告（如 operationId 冲突）都会让客户端生成器出错。"""
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--fail-on-warn", "--file", str(target))
    text = target.read_text(encoding="utf-8")
    assert "operationId: status_totals" in text and "operationId: status_detail" in text
