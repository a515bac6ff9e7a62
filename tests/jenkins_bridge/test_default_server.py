"""由环境变量定义的默认 Jenkins：运维改了 JENKINS_URL 并重启后，所有 Jenkins 调用都用新地址，
而不是第一次用到时抄进库里的旧值（客户端、/health、镜像任务都不留旧副本）。"""

from __future__ import annotations

import pytest

from approvalbot.operations.health import cache_clear, check_jenkins
from approvals.models import Approval, JenkinsActionState, Status
from approvals.services import approval_decide
from jenkins_bridge.models import JenkinsServer
from jenkins_bridge.tasks import jenkins_build_mirror_task
from tests.fake_jenkins import FakeInput

pytestmark = pytest.mark.django_db

OLD_URL = "http://127.0.0.1:9/"  # 旧地址：没有人在监听


@pytest.fixture
def env_jenkins(settings, monkeypatch):
    settings.JENKINS_URL, settings.JENKINS_USER = OLD_URL, "svc"
    monkeypatch.setenv("JENKINS_API_TOKEN", "svc-token")
    cache_clear()
    yield settings
    cache_clear()


def test_changed_jenkins_url_is_used_after_the_row_exists(env_jenkins, fake_jenkins, shop_rule, make_approval,
                                                          people, django_capture_on_commit_callbacks):
    approval = make_approval(input_id="Release")  # 第一次用到：默认服务器那一行按旧地址建立
    assert JenkinsServer.objects.filter(name="default").values_list("url", flat=True).get() == OLD_URL
    env_jenkins.JENKINS_URL = fake_jenkins.url  # 运维改了地址、重启
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
    approval = Approval.objects.get(pk=approval.pk)
    assert approval.jenkins_action_state == JenkinsActionState.DONE, approval.jenkins_action_error
    [post] = fake_jenkins.calls("POST", "/input/")
    assert post.user == "svc"


def test_health_checks_the_current_jenkins_url(env_jenkins, fake_jenkins, shop_rule, make_approval):
    make_approval()
    assert check_jenkins()["status"] == "error"  # 旧地址连不上
    env_jenkins.JENKINS_URL = fake_jenkins.url
    result = check_jenkins()
    assert result["status"] == "ok" and result["servers"]["default"]["version"]


def test_health_checks_env_jenkins_before_any_row_exists(env_jenkins, fake_jenkins):
    env_jenkins.JENKINS_URL = fake_jenkins.url
    result = check_jenkins()
    assert result["status"] == "ok" and set(result["servers"]) == {"default"}
    assert not JenkinsServer.objects.exists()  # GET /health 不写库


def test_mirror_picks_up_a_default_row_created_before_jenkins_url_was_set(env_jenkins, fake_jenkins, shop_rule,
                                                                            make_approval):
    env_jenkins.JENKINS_URL = ""
    approval = make_approval()  # 默认服务器那一行没有地址
    assert jenkins_build_mirror_task() == {}
    env_jenkins.JENKINS_URL = fake_jenkins.url
    fake_jenkins.add_build("shop-backend", approval.build_number, building=False, result="SUCCESS")
    assert jenkins_build_mirror_task() == {"build_finished": 1}
    assert Approval.objects.get(pk=approval.pk).status == Status.CANCELLED


def test_admin_configured_servers_are_not_touched(env_jenkins, fake_jenkins):
    """只有环境变量定义的那台（名为 default、token 变量 JENKINS_API_TOKEN）跟随环境变量。"""
    JenkinsServer.objects.create(name="ci-main", url=fake_jenkins.url, username="svc",
                                 api_token_env="FAKE_JENKINS_TOKEN")
    JenkinsServer.objects.create(name="default", url=fake_jenkins.url, username="svc",
                                 api_token_env="ANOTHER_TOKEN")
    assert set(JenkinsServer.objects.values_list("url", flat=True)) == {fake_jenkins.url}
    assert {s.base_url for s in JenkinsServer.objects.all()} == {fake_jenkins.url}


def test_partial_loads_of_servers_work(env_jenkins, fake_jenkins):
    """.only() 只取部分字段时不去猜（否则读 name 又会查库、再进 from_db）。"""
    JenkinsServer.objects.create(name="default", url=OLD_URL, username="svc", api_token_env="JENKINS_API_TOKEN")
    env_jenkins.JENKINS_URL = fake_jenkins.url
    assert [s.pk for s in JenkinsServer.objects.only("pk")]
    assert JenkinsServer.objects.only("name", "api_token_env", "url").get().url == fake_jenkins.url


@pytest.mark.django_db
def test_jenkins_timeout_setting_reaches_the_client_of_the_default_server(settings):
    """JENKINS_TIMEOUT_SECONDS 是默认 Jenkins（环境变量定义的那台）每次请求的超时。"""
    from jenkins_bridge.client import JenkinsClient
    from jenkins_bridge.models import JenkinsServer

    settings.JENKINS_URL, settings.JENKINS_USER = "https://ci.example.com/", "svc"
    settings.JENKINS_TIMEOUT_SECONDS = 3.5
    server = JenkinsServer.objects.default()
    assert JenkinsClient(JenkinsServer.objects.get(pk=server.pk)).timeout == 3.5
    settings.JENKINS_TIMEOUT_SECONDS = 7.0  # 运维改了设置：不必改库里那一行
    assert JenkinsClient(JenkinsServer.objects.get(pk=server.pk)).timeout == 7.0
