"""/health 与 /metrics（A9–A11、X10）。"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals.models import Heartbeat
from jenkins_bridge.api import health

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    health.cache_clear()
    yield
    health.cache_clear()


def test_health_all_ok(jenkins_server, settings):
    settings.CELERY_BROKER_URL = "memory://"
    Heartbeat.objects.create(name="beat", at=timezone.now())
    response = Client().get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok", body
    assert body["components"]["database"]["status"] == "ok"
    assert body["components"]["broker"]["status"] == "ok"
    assert body["components"]["jenkins"]["servers"]["default"]["status"] == "ok"
    assert body["components"]["beat"]["status"] == "ok"
    assert body["components"]["telegram"]["status"] == "not_configured"


def test_health_degraded_when_jenkins_down_or_beat_stale(jenkins_server, fake_jenkins, settings):
    settings.CELERY_BROKER_URL = "memory://"
    Heartbeat.objects.create(name="beat", at=timezone.now() - timedelta(hours=1))
    fake_jenkins.down()
    response = Client().get("/health")
    assert response.status_code == 200  # 仍在收单：负载均衡不该摘掉本服务
    body = response.json()
    assert body["status"] == "degraded"
    assert body["components"]["jenkins"]["servers"]["default"]["error"] == "connection"
    assert body["components"]["beat"]["status"] == "stale"


def test_health_503_when_broker_unreachable(settings, db):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["components"]["broker"]["status"] == "error"
    assert "127.0.0.1:1" not in response.content.decode()  # 不泄露 broker 地址


def test_health_reports_telegram_without_leaking_token(settings, db):
    settings.CELERY_BROKER_URL = "memory://"
    settings.TELEGRAM_BOT_TOKEN = "123456:SECRET-TOKEN-abcdefghijklmnop"
    settings.TELEGRAM_API_URL = "http://127.0.0.1:1"
    response = Client().get("/health")
    body = response.json()
    assert body["components"]["telegram"]["status"] == "error"
    assert "SECRET" not in response.content.decode()


def test_metrics_prometheus_text(api, make_approval, shop_rule, jenkins_server):
    make_approval()
    make_approval(job_name="other-app")
    newer = make_approval()  # 取代了第一条（cancelled）
    api("approve").post(f"/api/approve/{newer.public_id}", {"approver": "bob"}, format="json")
    response = Client().get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'approvalbot_approvals{status="pending"} 1.0' in text
    assert 'approvalbot_approvals{status="approved"} 1.0' in text
    assert 'approvalbot_approvals{status="cancelled"} 1.0' in text
    assert 'approvalbot_decisions_total{channel="api",status="approved"} 1.0' in text
    assert 'approvalbot_decision_latency_seconds_bucket{le="30.0"} 1.0' in text
    assert 'approvalbot_decision_latency_seconds_count 1.0' in text
    assert 'approvalbot_external_call_errors_total{system="jenkins"}' in text
    assert 'approvalbot_external_call_errors_total{system="telegram"}' in text
    assert "approvalbot_longpoll_waiters" in text
