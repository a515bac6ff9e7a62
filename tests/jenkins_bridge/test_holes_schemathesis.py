"""Schemathesis 在进程内对着真实的 WSGI 应用跑 /api/schema 里的每个操作：文档必须如实描述服务器。

所有检查都开（不是 5xx、状态码/内容类型/响应体/响应头与文档一致、文档说不合法的输入必须被拒绝……），
任何一个发现都让测试失败。token 拥有全部权限范围，默认 Jenkins 指向假 Jenkins（回调地址检查要用）。

不开的只有：
- positive_data_acceptance 对写操作：文档说“合法”的输入里，有的要靠数据库才能判断（审批人是否存在、
  有没有权限，回调地址是否在这台 Jenkins 之下，Jenkins 服务器名），这些是 400 而不是 2xx。读操作照开。
- 发出前把 wait 改成 0：否则每个等待中的请求都要真的挂上几十秒（wait 的校验另有测试）。
"""

from __future__ import annotations

from collections import defaultdict

import hypothesis
import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.pytest.lazy import get_all_tests

pytestmark = pytest.mark.django_db

WRITES = ["/api/stage/approval/wait", "/api/build/result", "/api/approve/{public_id}", "/api/reject/{public_id}"]


def config(token: str) -> SchemathesisConfig:
    """token 交给 Schemathesis 的认证配置（而不是自己加请求头）：它才知道“不带 token”的反例要真的不带。"""
    return SchemathesisConfig.from_dict({
        "auth": {"openapi": {"BearerToken": {"bearer": token}}},
        "checks": {"enabled": True},
        "operations": [{"include-path": path, "checks": {"positive_data_acceptance": {"enabled": False}}}
                       for path in WRITES],
    })


@pytest.fixture
def wsgi_app(db):
    """真正的 WSGIHandler（不是测试客户端）：请求前后关连接的信号先摘掉，否则会关掉测试事务所在的连接。"""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(make_token) -> str:
    return make_token("jenkins", "approve", "read")


@pytest.fixture
def api_schema(wsgi_app, jenkins_server, shop_rule, make_approval, token):
    make_approval()
    make_approval(environment="production")
    return schemathesis.openapi.from_wsgi("/api/schema?format=json", wsgi_app, config=config(token))


# 与 schemathesis 的 pytest 插件同一套测试构造（样例、覆盖、随机三个阶段），但不经插件：
# 插件的参数化与 pytest 9 不兼容（Function._nodeid）。每个操作一个 Hypothesis 测试，失败收集起来一起报告。
SETTINGS = hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None,
                               suppress_health_check=list(HealthCheck), print_blob=False)


def test_every_operation_matches_its_schema(api_schema):
    statuses: dict[str, set[int]] = defaultdict(set)

    def check(case) -> None:
        for values in (case.query, case.body):
            if isinstance(values, dict) and "wait" in values:
                values["wait"] = 0  # 不真的挂起等待（样例里的 wait=30 也一样）
        response = case.call_and_validate()
        statuses[case.operation.label].add(response.status_code)

    findings: list[str] = []
    operations = 0
    for result in get_all_tests(schema=api_schema, test_func=check, settings=SETTINGS, given_kwargs={}):
        operation, run = result.ok()  # 文档本身有错时 ok() 抛出，测试同样失败
        operations += 1
        try:
            run()
        except (Exception, FailureGroup) as exc:  # noqa: BLE001 - 各操作的发现汇总后一起报告
            findings.append(f"{operation.label}:\n{exc}")
    assert operations == 9
    # 认证真的生效、请求真的走到了深处：每个操作都有成功的回答（不只是 401/400/404）
    assert all(any(200 <= code < 300 for code in codes) for codes in statuses.values()), dict(statuses)
    assert not findings, "\n\n".join(findings)
