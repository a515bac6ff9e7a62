"""告警（O3/O4/H4）：组件持续失败到阈值时发一次告警，恢复时发一次恢复通知；状态在数据库里，
重复检查、并发检查都不重复；Telegram 本身坏了时改记 ERROR 日志并发邮件；worker 停了时告警不经 broker 照样送到。"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import ConfigState
from approvalbot.celery import app as celery_app
from approvalbot.operations import health
from approvalbot.operations.alerts import alerts_evaluate, database_down
from approvalbot.operations.models import AlertState, BackupRun, BackupStatus, Heartbeat
from approvals.models import Approval, JenkinsActionState, Status
from telegram_bot.models import MessageKind, MessageState, TelegramMessage
from tests.concurrency import run_together

ADMIN_CHAT = -1009990001111


@pytest.fixture(autouse=True)
def fresh_cache():
    health.cache_clear()
    yield
    health.cache_clear()


@pytest.fixture
def ops(db, settings, fake_tg, jenkins_server):
    """Telegram 指向假服务器，告警发到管理员群；broker、beat 都正常；阈值 3 分钟（app.json 的 alerts.after_minutes）。"""
    settings.CELERY_BROKER_URL = "memory://"
    settings.TELEGRAM_ADMIN_CHAT_ID = ADMIN_CHAT
    settings.ALERT_EMAILS = ["ops@example.com"]
    fake_tg.add_group(ADMIN_CHAT, "运维群")
    ConfigState.objects.create(name="app", data={"alerts": {"after_minutes": 3}})
    Heartbeat.objects.create(name="beat", at=timezone.now() + timedelta(hours=1))  # 检查时间会往后拨
    return fake_tg


def _evaluate(when, django_capture_on_commit_callbacks):
    health.cache_clear()
    with django_capture_on_commit_callbacks(execute=True):
        return alerts_evaluate(now=when)


def test_jenkins_down_alerts_once_after_threshold_and_recovers_once(ops, fake_jenkins,
                                                                   django_capture_on_commit_callbacks):
    t0 = timezone.now()
    fake_jenkins.down()
    for minutes in (0, 1, 2):
        result = _evaluate(t0 + timedelta(minutes=minutes), django_capture_on_commit_callbacks)
        assert result["failing"] == ["jenkins:default"] and result["alerted"] == []
    assert not ops.chat_messages(ADMIN_CHAT)

    assert _evaluate(t0 + timedelta(minutes=3), django_capture_on_commit_callbacks)["alerted"] == ["jenkins:default"]
    for minutes in (4, 5, 30):  # 一直坏着、进程重启（状态在库里）：不再重复
        assert _evaluate(t0 + timedelta(minutes=minutes), django_capture_on_commit_callbacks)["alerted"] == []
    [alert] = ops.chat_messages(ADMIN_CHAT)
    assert "告警" in alert.text and "Jenkins「default」" in alert.text and "连不上" in alert.text
    assert "开始于" in alert.text and "已持续：3 分钟" in alert.text
    assert not mail.outbox  # Telegram 好好的：不发邮件
    state = AlertState.objects.get(component="jenkins:default")
    assert state.failing_since is not None and state.alerted_at is not None

    fake_jenkins.up()
    assert _evaluate(t0 + timedelta(minutes=31), django_capture_on_commit_callbacks)["recovered"] == ["jenkins:default"]
    assert _evaluate(t0 + timedelta(minutes=32), django_capture_on_commit_callbacks)["recovered"] == []
    alert, recovery = ops.chat_messages(ADMIN_CHAT)
    assert "已恢复" in recovery.text and "Jenkins「default」" in recovery.text and "持续：31 分钟" in recovery.text
    assert TelegramMessage.objects.filter(kind=MessageKind.ALERT, state=MessageState.SENT).count() == 2


def test_a_short_blip_below_the_threshold_sends_nothing(ops, fake_jenkins, django_capture_on_commit_callbacks):
    t0 = timezone.now()
    fake_jenkins.down()
    _evaluate(t0, django_capture_on_commit_callbacks)
    fake_jenkins.up()
    assert _evaluate(t0 + timedelta(minutes=1), django_capture_on_commit_callbacks)["recovered"] == []
    assert not ops.chat_messages(ADMIN_CHAT) and not TelegramMessage.objects.filter(kind=MessageKind.ALERT).exists()


def test_telegram_down_alerts_by_error_log_and_email(ops, settings, caplog, django_capture_on_commit_callbacks):
    ConfigState.objects.filter(name="app").update(data={"alerts": {"after_minutes": 0}})
    settings.TELEGRAM_API_URL = "http://127.0.0.1:1"  # Bot API 连不上
    t0 = timezone.now()
    with caplog.at_level(logging.ERROR, logger="approvalbot.operations.alerts"):
        assert _evaluate(t0, django_capture_on_commit_callbacks)["alerted"] == ["telegram"]
    assert any(r.levelno == logging.ERROR and "Telegram" in r.getMessage() for r in caplog.records)
    [message] = mail.outbox
    assert message.to == ["ops@example.com"] and "告警" in message.subject and "Telegram" in message.subject
    assert "Bot API" in message.body
    assert not TelegramMessage.objects.filter(kind=MessageKind.ALERT).exists()

    settings.TELEGRAM_API_URL = ops.url
    assert _evaluate(t0 + timedelta(minutes=1), django_capture_on_commit_callbacks)["recovered"] == ["telegram"]
    assert len(mail.outbox) == 2 and "已恢复" in mail.outbox[1].subject


def test_worker_down_alert_is_delivered_without_the_broker(ops, settings, monkeypatch,
                                                          django_capture_on_commit_callbacks):
    """没有 worker：投递到 broker 的任务没人执行；告警在检查的进程里直接经发件箱发出。"""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    ConfigState.objects.filter(name="app").update(data={"alerts": {"after_minutes": 0}})
    Heartbeat.objects.create(name="worker:w1", at=timezone.now() - timedelta(minutes=10))
    result = _evaluate(timezone.now(), django_capture_on_commit_callbacks)
    assert result["alerted"] == ["worker"]
    assert "beat" not in result["failing"]  # beat 的心跳由 worker 写：只报真正停了的 worker
    [alert] = ops.chat_messages(ADMIN_CHAT)
    assert "后台任务（worker）" in alert.text and "没有在运行的 worker" in alert.text


def test_alert_for_a_healthy_worker_goes_through_the_broker(ops, settings, monkeypatch, fake_jenkins,
                                                           django_capture_on_commit_callbacks):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    ConfigState.objects.filter(name="app").update(data={"alerts": {"after_minutes": 0}})
    Heartbeat.objects.create(name="worker:w1", at=timezone.now())
    fake_jenkins.down()
    assert _evaluate(timezone.now(), django_capture_on_commit_callbacks)["alerted"] == ["jenkins:default"]
    assert not ops.chat_messages(ADMIN_CHAT)  # 排在 broker 里等 worker（测试里没有 worker）


def test_overdue_approvals_and_stuck_jenkins_actions_are_components(ops, make_approval, shop_rule,
                                                                   django_capture_on_commit_callbacks):
    ConfigState.objects.filter(name="app").update(data={"alerts": {"after_minutes": 0}})
    late = make_approval()
    Approval.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(minutes=30))
    stuck = make_approval(job_name="other-app")
    Approval.objects.filter(pk=stuck.pk).update(
        status=Status.APPROVED, decided_at=timezone.now() - timedelta(hours=1),
        jenkins_action_state=JenkinsActionState.PENDING)
    result = _evaluate(timezone.now(), django_capture_on_commit_callbacks)
    assert set(result["alerted"]) == {"approvals", "jenkins_actions"}
    texts = " ".join(m.text for m in ops.chat_messages(ADMIN_CHAT))
    assert late.public_id in texts and "超时扫描可能停了" in texts
    assert stuck.public_id in texts and "卡在等待执行" in texts


def test_failed_backup_is_an_alert_and_health_shows_backup_age(ops, django_capture_on_commit_callbacks):
    ConfigState.objects.filter(name="app").update(data={"alerts": {"after_minutes": 0}})
    body = Client().get("/health").json()
    assert body["components"]["backup"]["status"] == "none" and body["status"] == "ok"
    now = timezone.now()
    BackupRun.objects.create(trigger="scheduled", status=BackupStatus.OK, started_at=now - timedelta(hours=2),
                             finished_at=now - timedelta(hours=2), file_name="a.sqlite3.gz")
    backup = Client().get("/health").json()["components"]["backup"]
    assert backup["status"] == "ok" and 7100 < backup["age_seconds"] < 7300
    BackupRun.objects.create(trigger="scheduled", status=BackupStatus.FAILED, started_at=now, finished_at=now,
                             error="磁盘已满")
    anonymous = Client().get("/health")
    assert anonymous.json()["components"]["backup"]["status"] == "error"
    assert "磁盘已满" not in anonymous.content.decode() and "a.sqlite3.gz" not in anonymous.content.decode()
    assert Client().get("/health").json()["components"]["backup"]["status"] == "error"
    assert _evaluate(now, django_capture_on_commit_callbacks)["alerted"] == ["backup"]
    assert "磁盘已满" in ops.chat_messages(ADMIN_CHAT)[0].text


def test_database_down_is_alerted_from_memory(settings, caplog):
    settings.ALERT_AFTER_MINUTES = 3
    settings.ALERT_EMAILS = ["ops@example.com"]
    report = {"components": {"database": {"status": "error", "error": "OperationalError"}}}
    t0 = timezone.now()
    try:
        assert alerts_evaluate(now=t0, report=report)["alerted"] == []
        with caplog.at_level(logging.ERROR):
            assert alerts_evaluate(now=t0 + timedelta(minutes=3), report=report)["alerted"] == ["database"]
        assert alerts_evaluate(now=t0 + timedelta(minutes=4), report=report)["alerted"] == []
        assert "OperationalError" in mail.outbox[0].body and len(mail.outbox) == 1
        assert any("数据库" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    finally:
        database_down.ok(timezone.now())


@pytest.mark.skipif(connection.vendor != "mysql", reason="并发的条件更新只在 MySQL/MariaDB 上有意义")
@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluations_send_one_alert(settings, fake_tg, jenkins_server, fake_jenkins):
    """两个 beat（或 worker）同时检查：条件更新只让一方发告警、一方发恢复。"""
    settings.CELERY_BROKER_URL = "memory://"
    settings.TELEGRAM_ADMIN_CHAT_ID = ADMIN_CHAT
    fake_tg.add_group(ADMIN_CHAT, "运维群")
    settings.ALERT_AFTER_MINUTES = 0
    Heartbeat.objects.create(name="beat", at=timezone.now())
    fake_jenkins.down()
    report = health.health_report()
    now = timezone.now()
    results = run_together([lambda: alerts_evaluate(now=now, report=report) for _ in range(4)])
    assert sum(len(r[1]["alerted"]) for r in results) == 1
    fake_jenkins.up()
    health.cache_clear()
    report = health.health_report()
    results = run_together([lambda: alerts_evaluate(now=now + timedelta(minutes=1), report=report) for _ in range(4)])
    assert sum(len(r[1]["recovered"]) for r in results) == 1
    assert len(fake_tg.chat_messages(ADMIN_CHAT)) == 2


def test_alert_state_is_visible_read_only_in_the_admin(ops, fake_jenkins, admin_client,
                                                       django_capture_on_commit_callbacks):
    fake_jenkins.down()
    _evaluate(timezone.now(), django_capture_on_commit_callbacks)
    page = admin_client.get("/admin/operations/alertstate/")
    assert page.status_code == 200 and "jenkins:default" in page.content.decode()
    assert admin_client.get("/admin/operations/alertstate/add/").status_code == 403
    assert admin_client.get("/admin/operations/backuprun/").status_code == 200


def test_health_shows_failure_details_only_to_staff(ops, make_approval, shop_rule, admin_client):
    late = make_approval()
    Approval.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(minutes=30))
    BackupRun.objects.create(trigger="manual", status=BackupStatus.FAILED, started_at=timezone.now(),
                             finished_at=timezone.now(), error="mysqldump: Access denied for user 'backup'")
    anonymous = Client().get("/health").content.decode()
    assert late.public_id not in anonymous and "Access denied" not in anonymous
    staff = admin_client.get("/health").json()["components"]
    assert staff["approvals"]["oldest_overdue"] == late.public_id and staff["approvals"]["overdue"] == 1
    assert "Access denied" in staff["backup"]["last_error"]
