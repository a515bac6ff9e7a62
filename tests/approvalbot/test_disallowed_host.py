"""Jenkins 用一个不在 DJANGO_ALLOWED_HOSTS 里的主机名访问：不再只是一句「请求不正确。」。

API 回答 400 disallowed_host（统一的错误形状），网页是一页说明；服务器日志写明主机名与要改的 DJANGO_ALLOWED_HOSTS
（用配置的语言）；DEBUG 时回答里也写明。
"""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.django_db

HOST = "jenkins-agent-7.corp.internal"


def _host_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "jenkins_bridge.api.errors"]


def test_api_request_with_unknown_host_gets_disallowed_host(client, settings, caplog):
    settings.DEBUG = False
    with caplog.at_level(logging.WARNING, logger="jenkins_bridge.api.errors"):
        response = client.get("/api/status", HTTP_HOST=HOST, HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "disallowed_host" and error["details"] == {}
    assert HOST not in error["message"]  # 不在 DEBUG：不回显主机名与设置
    (line,) = _host_logs(caplog)
    assert HOST in line and "DJANGO_ALLOWED_HOSTS" in line and "重启 web 进程" in line  # 日志总是中文


def test_in_debug_the_answer_names_the_host_and_the_setting(client, settings):
    settings.DEBUG = True
    response = client.post("/api/stage/approval/wait", {"JOB_NAME": "shop", "BUILD_NUMBER": 1}, HTTP_HOST=HOST)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "disallowed_host"
    assert HOST in error["message"] and "DJANGO_ALLOWED_HOSTS" in error["message"]
    assert error["details"] == {"host": HOST, "setting": "DJANGO_ALLOWED_HOSTS"}


@pytest.mark.parametrize("debug", [False, True])
def test_pages_explain_it_too(client, settings, caplog, debug):
    settings.DEBUG = debug
    with caplog.at_level(logging.WARNING, logger="jenkins_bridge.api.errors"):
        response = client.get("/admin/", HTTP_HOST=HOST)

    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "请求的主机名不在本服务允许的列表里" in body or "DJANGO_ALLOWED_HOSTS" in body
    assert ("DJANGO_ALLOWED_HOSTS" in body) is debug
    assert len(_host_logs(caplog)) == 1


def test_a_hostile_host_header_is_escaped_on_the_page(client, settings):
    settings.DEBUG = True
    response = client.get("/", HTTP_HOST="<script>x</script>")

    assert response.status_code == 400
    assert "<script>x</script>" not in response.content.decode()


def test_allowed_host_is_untouched(client, settings):
    settings.ALLOWED_HOSTS = [HOST]
    assert client.get("/health", HTTP_HOST=HOST).status_code in (200, 503)
