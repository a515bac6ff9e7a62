"""jenkins_bridge 测试的夹具：真 HTTP 的假 Jenkins、指向它的默认服务器、各种权限范围的 token。"""

from __future__ import annotations

import pytest

from tests.fake_jenkins import FakeJenkins


@pytest.fixture(autouse=True)
def celery_eager(monkeypatch):
    """提交后的任务同步执行。tests/conftest.py 设置的环境变量来得太晚（pytest-django 先加载了 settings），
    所以这里直接改 Celery 配置。"""
    from approvalbot.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)


@pytest.fixture
def fake_jenkins():
    from jenkins_bridge.client import shared_clients_clear

    shared_clients_clear()  # 客户端按进程缓存：上一个用例的连接与 crumb 属于上一个假 Jenkins
    fake = FakeJenkins().start()
    yield fake
    fake.down()


@pytest.fixture
def jenkins_server(db, fake_jenkins, monkeypatch):
    """默认 Jenkins 指向假 Jenkins；API token 从环境变量读取（不入库）。"""
    from jenkins_bridge.models import JenkinsServer

    monkeypatch.setenv("FAKE_JENKINS_TOKEN", "svc-token")
    return JenkinsServer.objects.create(
        name="default", url=fake_jenkins.url, username="svc", api_token_env="FAKE_JENKINS_TOKEN",
        is_default=True, timeout_seconds=2.0,
    )


@pytest.fixture
def make_token(db):
    from jenkins_bridge.services import api_token_create

    counter = {"n": 0}

    def factory(*scopes: str, **kwargs) -> str:
        counter["n"] += 1
        _token, raw = api_token_create(name=f"t{counter['n']}", scopes=list(scopes), **kwargs)
        return raw

    return factory


@pytest.fixture
def api(make_token):
    """按权限范围给出带 Bearer 头的 DRF 测试客户端：api("jenkins", "read")。"""
    from rest_framework.test import APIClient

    def factory(*scopes: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(*scopes)}")
        return client

    return factory
