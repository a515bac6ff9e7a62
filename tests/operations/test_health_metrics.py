"""/health 与 /metrics（A9–A11、X10）。"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvalbot.operations import health
from approvalbot.operations.models import Heartbeat
from approvals.models import Approval

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


def metric(text: str, name: str, **labels: str) -> float:
    """从 /metrics 文本里读一个样本（没有则 0）：计数器是整个测试进程累计的，断言看增量。"""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def scrape() -> str:
    response = Client().get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def test_metrics_prometheus_text(api, make_approval, shop_rule, jenkins_server, django_capture_on_commit_callbacks):
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):  # 计数在提交之后
        make_approval()
        make_approval(job_name="other-app")
        newer = make_approval()  # 取代了第一条（cancelled）
        api("approve").post(f"/api/approve/{newer.public_id}", {"approver": "bob"}, format="json")
    text = scrape()
    assert 'approvalbot_approvals{status="pending"} 1.0' in text
    assert 'approvalbot_approvals{status="approved"} 1.0' in text
    assert 'approvalbot_approvals{status="cancelled"} 1.0' in text
    decided = {"channel": "api", "status": "approved"}
    assert metric(text, "approvalbot_decisions_total", **decided) - metric(
        before, "approvalbot_decisions_total", **decided) == 1
    assert metric(text, "approvalbot_decisions_total", channel="system", status="cancelled") - metric(
        before, "approvalbot_decisions_total", channel="system", status="cancelled") == 1
    for name in ("approvalbot_decision_latency_seconds_count", "approvalbot_decision_latency_seconds_bucket"):
        labels = {"le": "30.0"} if name.endswith("bucket") else {}
        assert metric(text, name, **labels) - metric(before, name, **labels) == 1
    assert "approvalbot_external_call_errors_total" in text or "approvalbot_external_call_errors" in text
    assert "approvalbot_longpoll_waiters" in text
    assert "approvalbot_telegram_outbox" in text and "approvalbot_jenkins_actions" in text


def test_counters_never_go_down_when_retention_deletes_rows(make_approval, shop_rule, people,
                                                           django_capture_on_commit_callbacks):
    """计数器只增：保留期清理删掉旧审批后，“现在有多少”变小，“一共决定过多少”不变。"""
    from approvals.retention import approvals_purge_old
    from approvals.services import approval_decide

    approval = make_approval()
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
    before = scrape()
    Approval.objects.filter(pk=approval.pk).update(decided_at=timezone.now() - timedelta(days=400))
    assert approvals_purge_old()["approvals"] == 1
    after = scrape()
    decided = {"channel": "api", "status": "approved"}
    assert metric(after, "approvalbot_decisions_total", **decided) == metric(before, "approvalbot_decisions_total",
                                                                            **decided) >= 1
    assert metric(after, "approvalbot_approvals", status="approved") == metric(
        before, "approvalbot_approvals", status="approved") - 1


def test_only_real_failures_count_as_external_call_errors(jenkins_server, fake_jenkins, fake_tg, shop_rule,
                                                         make_approval, people, settings,
                                                         django_capture_on_commit_callbacks):
    """等 input 出现、本机节流等候不是失败；Telegram 500、Jenkins 连不上才是。"""
    from approvals.services import approval_decide

    settings.TELEGRAM_DEFAULT_CHAT_ID = None
    before = scrape()
    waiting = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", waiting.build_number, inputs=[])  # 流水线还没走到 input
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=waiting, approver=people["approver"], decision="approve", channel="api")
    middle = scrape()
    assert metric(middle, "approvalbot_external_call_errors_total", system="jenkins") == metric(
        before, "approvalbot_external_call_errors_total", system="jenkins")
    fake_tg.server_error("sendMessage", times=1)
    with django_capture_on_commit_callbacks(execute=True):
        make_approval(environment="staging")  # 规则指定的群：审批消息的第一次发送遇到 500
    after = scrape()
    assert metric(after, "approvalbot_external_call_errors_total", system="telegram", kind="server_error") - metric(
        middle, "approvalbot_external_call_errors_total", system="telegram", kind="server_error") == 1
