"""运维能用的指标（O2）：请求数与耗时（按路由、状态码）、Celery 任务耗时/失败/重试（按任务）、队列长度、
进程 CPU/内存/文件描述符、数据库查询耗时，业务指标名字不变；多进程模式下一个 /metrics 汇总各进程；
docker/prometheus/alerts.yml 里引用的每个指标都在 /metrics 里。"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from django.db import connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from approvalbot.celery import app as celery_app

from .helpers import ROOT, process_env

pytestmark = pytest.mark.django_db

BUSINESS = ("approvalbot_approvals", "approvalbot_decisions_total", "approvalbot_decision_latency_seconds_count",
            "approvalbot_external_call_errors_total", "approvalbot_longpoll_waiters", "approvalbot_jenkins_actions",
            "approvalbot_telegram_outbox")
# Prometheus 自己生成的序列，不在 /metrics 里
SYNTHETIC = {"up"}


@celery_app.task(name="tests.operations.flaky_task", bind=True, max_retries=1)
def flaky_task(self):
    if self.request.retries < 1:
        raise self.retry(countdown=0)
    raise RuntimeError("第二次也失败")


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(text: str, metric: str, **labels: str) -> float:
    return sum(s.value for s in samples(text).get(metric, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def run_flaky(monkeypatch) -> None:
    """重试一次、再失败（eager 模式下重试就地执行）。失败不抛给调用方，与 worker 里一样记为失败。"""
    monkeypatch.setitem(celery_app.conf, "task_eager_propagates", False)
    result = flaky_task.apply()
    assert result.failed()


def exposed_names(text: str) -> set[str]:
    names = set(samples(text))
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    return names


def scrape() -> str:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def test_metrics_cover_requests_tasks_queue_process_and_database(settings, tmp_path, monkeypatch):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path)}
    for n in range(3):
        (tmp_path / f"{n}_{uuid.uuid4()}.celery.msg").write_text("{}")
    (tmp_path / "9_other.other.msg").write_text("{}")  # 别的队列
    before = scrape()
    assert Client().get("/health").status_code == 200
    assert Client().get("/api/status").status_code == 401  # 没带 token
    run_flaky(monkeypatch)
    text = scrape()

    route = {"view": "health", "method": "GET"}
    assert value(text, "django_http_requests_latency_seconds_by_view_method_count", **route) - value(
        before, "django_http_requests_latency_seconds_by_view_method_count", **route) == 1
    assert value(text, "django_http_responses_total_by_status_view_method_total", status="200", **route) >= 1
    assert value(text, "django_http_responses_total_by_status_view_method_total", status="401",
                 view="api-status", method="GET") >= 1
    task = {"task": "tests.operations.flaky_task"}
    assert value(text, "approvalbot_celery_task_duration_seconds_count", **task) >= 2  # 第一次（重试）+ 第二次（失败）
    assert value(text, "approvalbot_celery_task_retries_total", **task) == 1
    assert value(text, "approvalbot_celery_task_failures_total", **task) == 1
    assert value(text, "approvalbot_celery_queue_length", queue="celery") == 3
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert value(text, name) > 0, name
    vendor = connection.vendor
    assert value(text, "django_db_query_duration_seconds_count", vendor=vendor) > value(
        before, "django_db_query_duration_seconds_count", vendor=vendor)
    assert value(text, "django_db_execute_total", vendor=vendor) > 0
    names = exposed_names(text)
    assert set(BUSINESS) <= names
    assert value(text, "approvalbot_database_up") == 1


def test_queue_length_on_redis(settings):
    import redis

    url = settings.CELERY_BROKER_URL if settings.CELERY_BROKER_URL.startswith("redis://") else None
    if url is None:
        pytest.skip("CELERY_BROKER_URL 不是 Redis（CI 的 MariaDB+Redis 轮次里运行）")
    queue = f"ops-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    client = redis.Redis.from_url(url)
    try:
        client.rpush(queue, "a", "b")
        client.rpush(f"{queue}\x06\x163", "c")  # kombu 的优先级子队列
        assert value(scrape(), "approvalbot_celery_queue_length", queue=queue) == 3
    finally:
        client.delete(queue, f"{queue}\x06\x163")


def test_one_endpoint_sums_every_process_in_multiprocess_mode(tmp_path):
    """worker/beat 里执行的任务与 web 的请求写同一个多进程目录；web 的 /metrics 把两个进程的都给出来。"""
    env = process_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"), DJANGO_ALLOWED_HOSTS="testserver",
                      CELERY_BROKER_URL="memory://")
    (tmp_path / "prom").mkdir()
    task_process = ("from django.core.management import call_command; call_command('migrate', verbosity=0); "
                    "from approvalbot.operations.tasks import beat_heartbeat_task; beat_heartbeat_task.apply()")
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", task_process], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    web_process = ("from django.test import Client; c = Client(); c.get('/health'); "
                   "print('METRICS'); print(c.get('/metrics').content.decode())")
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", web_process], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout.split("METRICS", 1)[1]
    assert value(text, "approvalbot_celery_task_duration_seconds_count",
                 task="operations.tasks.beat_heartbeat_task", state="success") == 1  # 来自另一个进程
    assert value(text, "django_http_requests_latency_seconds_by_view_method_count", view="health") == 1
    assert value(text, "django_db_query_duration_seconds_count") > 0
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "approvalbot_heartbeat_timestamp_seconds", name="beat") > 0


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset"}


def promql_metric_names(expr: str) -> set[str]:
    """表达式里引用的指标名：去掉字符串、标签选择、时间范围、by (…) 这类标签列表，剩下不跟着 "(" 的标识符。"""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if match[0] in PROMQL_KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(match[0])
    return names


def test_promql_name_extraction():
    assert promql_metric_names('sum by (task) (increase(a_total{x=~"b.*"}[15m])) > 3 and c == 1') == {"a_total", "c"}
    assert promql_metric_names("time() - m{name=\"beat\"} > 26 * 3600") == {"m"}


def test_every_metric_in_the_prometheus_rules_is_exported(settings, tmp_path, monkeypatch):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path)}
    Client().get("/health")
    run_flaky(monkeypatch)
    names = exposed_names(scrape())
    rules = yaml.safe_load((Path(ROOT) / "docker" / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    checked = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"].startswith("Approvalbot") and rule["labels"]["severity"] in ("critical", "warning")
            assert rule["annotations"]["summary"]
            missing = promql_metric_names(rule["expr"]) - names - SYNTHETIC
            assert not missing, f"{rule['alert']} 引用了 /metrics 里没有的指标：{missing}"
            checked += 1
    assert checked >= 12
    prometheus = yaml.safe_load((Path(ROOT) / "docker" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    assert prometheus["rule_files"] == ["alerts.yml"]
    assert prometheus["scrape_configs"][0]["job_name"] == "approvalbot"  # 规则里 up{job="approvalbot"}
