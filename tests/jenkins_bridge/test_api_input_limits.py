"""等待与构建结果接口的输入边界：超长输入是 400 validation_error，决不是 MySQL 上的 500（DataError）；
全新安装（还没有任何 Jenkins 服务器行）时 Webhook 回调地址照样能通过 SSRF 检查。

长度上限与 approvals.models（Approval、BuildResult）的列一致；在 MariaDB 上也要跑，SQLite 不检查长度。
"""

from __future__ import annotations

import pytest

from approvals.models import Approval, BuildResult
from jenkins_bridge.models import JenkinsServer
from tests.jenkins_bridge.test_api import JENKINS_BODY, WAIT, assert_error

pytestmark = pytest.mark.django_db

RESULT = "/api/build/result"
BASE = {"JOB_NAME": "shop-backend", "BUILD_NUMBER": 128, "env": "test"}

# (字段, 模型列的长度)：等于上限可以存，多一个字符就是 400
WAIT_LIMITS = [
    ("project", 200), ("job_name", 255), ("environment", 32), ("version", 200), ("operation", 200),
    ("requested_by", 150), ("input_id", 100),
]


@pytest.mark.parametrize(("field", "limit"), WAIT_LIMITS)
def test_wait_refuses_values_longer_than_the_column(api, jenkins_server, shop_rule, field, limit):
    body = {**BASE, field: "界" * (limit + 1)}
    error = assert_error(api("jenkins").post(WAIT, body, format="json"), 400, "validation_error")
    assert field in error["details"]["fields"]
    assert not Approval.objects.exists()


@pytest.mark.parametrize("field", ["build_url", "callback_url"])
def test_wait_refuses_urls_longer_than_the_column(api, jenkins_server, shop_rule, field):
    url = f"{jenkins_server.base_url}webhook-step/" + "a" * 500
    error = assert_error(api("jenkins").post(WAIT, {**BASE, field: url}, format="json"), 400, "validation_error")
    assert field in error["details"]["fields"]
    assert not Approval.objects.exists()


def test_wait_accepts_every_field_at_its_column_limit(api, jenkins_server, shop_rule):
    """边界值写得进去（MariaDB 严格模式下也不报 DataError）；没给 project 时由 255 长的任务名推出。"""
    body = {"BUILD_NUMBER": 7, "job_name": "j" * 255, "environment": "e" * 32, "version": "v" * 200,
            "operation": "操" * 200, "requested_by": "r" * 150,
            "build_url": f"{jenkins_server.base_url}job/x/" + "b" * (500 - len(jenkins_server.base_url) - 6)}
    response = api("jenkins").post(WAIT, body, format="json")
    assert response.status_code == 201, response.content
    approval = Approval.objects.get()
    assert approval.job_name == "j" * 255 and approval.environment == "e" * 32 and len(approval.build_url) == 500
    assert len(approval.project) <= 200


def test_wait_accepts_long_input_id_and_callback_at_limit(api, jenkins_server, shop_rule):
    hook = f"{jenkins_server.base_url}webhook-step/"
    hook += "h" * (500 - len(hook))
    body = {**BASE, "input_id": "I" * 100, "project": "p" * 200}
    assert api("jenkins").post(WAIT, body, format="json").status_code == 201
    body = {**BASE, "BUILD_NUMBER": 129, "callback_url": hook}
    response = api("jenkins").post(WAIT, body, format="json")
    assert response.status_code == 201, response.content
    assert Approval.objects.get(build_number=129).callback_url == hook


@pytest.mark.parametrize(("body", "field"), [
    ({**BASE, "result": "FAILURE", "JOB_NAME": "j" * 256}, "job_name"),
    ({**BASE, "result": "FAILURE", "project": "p" * 201}, "project"),
    ({**BASE, "result": "FAILURE", "BUILD_URL": "http://jenkins/" + "x" * 500}, "build_url"),
    ({**BASE, "result": "FAILURE", "duration": 10**13 + 1}, "duration"),
])
def test_build_result_refuses_values_longer_than_the_column(api, jenkins_server, body, field):
    error = assert_error(api("jenkins").post(RESULT, body, format="json"), 400, "validation_error")
    assert field in error["details"]["fields"]
    assert not BuildResult.objects.exists()


def test_build_result_accepts_job_name_at_column_limit(api, jenkins_server):
    """没有审批的构建：项目列（200）由 255 长的任务名推出，要截断而不是 500。"""
    body = {"JOB_NAME": "j" * 255, "BUILD_NUMBER": 3, "result": "SUCCESS", "duration": 10**13,
            "BUILD_URL": "http://jenkins/" + "x" * 485}
    response = api("jenkins").post(RESULT, body, format="json")
    assert response.status_code == 201, response.content
    record = BuildResult.objects.get()
    assert record.job_name == "j" * 255 and len(record.project) <= 200 and len(record.build_url) == 500


# ---------------------------------------------------------------- 全新安装：默认服务器那一行还不存在


def test_webhook_callback_is_accepted_on_a_fresh_install(api, fake_jenkins, shop_rule, settings, monkeypatch):
    settings.JENKINS_URL, settings.JENKINS_USER = fake_jenkins.url, "svc"
    monkeypatch.setenv("JENKINS_API_TOKEN", "svc-token")
    assert not JenkinsServer.objects.exists()
    hook = fake_jenkins.register_webhook("first-hook")
    response = api("jenkins").post(WAIT, {**JENKINS_BODY, "callback_url": hook}, format="json")
    assert response.status_code == 201, response.content
    approval = Approval.objects.get()
    assert approval.resume_mode == "webhook" and approval.jenkins_server.name == "default"


def test_callback_must_be_under_the_approvals_own_jenkins(api, jenkins_server, fake_jenkins, shop_rule):
    """回调认证头属于这条审批的 Jenkins：指向另一台已配置的 Jenkins 也不行。"""
    JenkinsServer.objects.create(name="other", url="http://other-jenkins.example:8080/", api_token_env="OTHER_TOKEN")
    hook = "http://other-jenkins.example:8080/webhook-step/abc"
    error = assert_error(api("jenkins").post(WAIT, {**JENKINS_BODY, "callback_url": hook}, format="json"),
                         400, "validation_error")
    assert "callback_url" in error["details"]["fields"]
    assert not Approval.objects.exists()
    response = api("jenkins").post(WAIT, {**JENKINS_BODY, "callback_url": hook, "jenkins": "other"}, format="json")
    assert response.status_code == 201, response.content
    assert Approval.objects.get().jenkins_server.name == "other"


def test_naming_a_configured_jenkins_works_and_overlong_names_are_refused(api, jenkins_server, shop_rule):
    client = api("jenkins")
    response = client.post(WAIT, {**JENKINS_BODY, "jenkins": jenkins_server.name}, format="json")
    assert response.status_code == 201, response.content
    response = client.post(RESULT, {**BASE, "result": "SUCCESS", "jenkins": jenkins_server.name}, format="json")
    assert response.status_code == 201, response.content
    for path, body in ((WAIT, {**JENKINS_BODY, "BUILD_NUMBER": 9}), (RESULT, {**BASE, "BUILD_NUMBER": 9,
                                                                              "result": "SUCCESS"})):
        error = assert_error(client.post(path, {**body, "jenkins": "j" * 65}, format="json"), 400, "validation_error")
        assert "jenkins" in error["details"]["fields"]
    assert not Approval.objects.filter(build_number=9).exists() and not BuildResult.objects.filter(build_number=9)
