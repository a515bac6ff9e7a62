"""Jenkins 客户端对着真 HTTP 的假 Jenkins：认证、crumb、文件夹任务、错误分类。"""

from __future__ import annotations

import pytest

from jenkins_bridge.client import JenkinsClient, JenkinsError, job_path, normalize_input_id
from tests.fake_jenkins import JENKINS_VERSION, FakeInput


def test_input_ids_are_capitalised_like_jenkins():
    assert normalize_input_id("release") == "Release"
    assert normalize_input_id("Release") == "Release"
    assert normalize_input_id("1st") == "1st"
    assert normalize_input_id("") == ""


def test_folder_job_path_encodes_each_segment():
    assert job_path("folder/shop backend") == "job/folder/job/shop%20backend/"
    assert job_path("商城") == "job/%E5%95%86%E5%9F%8E/"


def test_version_resolves_auth_first_on_locked_down_controller(jenkins_server, fake_jenkins):
    """python-jenkins 的 get_version 不解析认证：锁定的控制器对匿名回 403；我们的客户端先解析认证。"""
    assert JenkinsClient(jenkins_server).version() == JENKINS_VERSION
    root_calls = fake_jenkins.calls("GET", "/")
    assert root_calls and all(c.user == "svc" for c in root_calls if c.path == "/")


def test_anonymous_request_to_locked_down_controller_is_permanent_auth_error(jenkins_server, fake_jenkins):
    jenkins_server.username = ""
    with pytest.raises(JenkinsError) as exc:
        JenkinsClient(jenkins_server).version()
    assert exc.value.permanent and exc.value.kind == "auth" and exc.value.status == 403


def test_wrong_password_is_permanent_auth_error(jenkins_server, monkeypatch):
    monkeypatch.setenv("FAKE_JENKINS_TOKEN", "wrong")
    with pytest.raises(JenkinsError) as exc:
        JenkinsClient(jenkins_server).build_info("shop-backend", 1)
    assert exc.value.permanent and exc.value.status == 401


def test_post_carries_session_bound_crumb(jenkins_server, fake_jenkins):
    fake_jenkins.add_build("folder/shop-backend", 7, inputs=[FakeInput("Release")])
    JenkinsClient(jenkins_server).input_proceed("folder/shop-backend", 7, "release")
    post = fake_jenkins.calls("POST")[-1]
    assert post.path == "/job/folder/job/shop-backend/7/input/Release/proceedEmpty"
    assert post.headers.get("Jenkins-Crumb") and post.user == "svc"
    assert not fake_jenkins.build("folder/shop-backend", 7).inputs


def test_connection_refused_is_transient(jenkins_server, fake_jenkins):
    fake_jenkins.down()
    with pytest.raises(JenkinsError) as exc:
        JenkinsClient(jenkins_server).build_info("shop-backend", 1)
    assert not exc.value.permanent and exc.value.kind == "connection"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(jenkins_server, fake_jenkins, status):
    fake_jenkins.add_build("shop-backend", 1)
    fake_jenkins.fail_next(1, status=status, path_contains="/api/json")
    with pytest.raises(JenkinsError) as exc:
        JenkinsClient(jenkins_server).build_info("shop-backend", 1)
    assert not exc.value.permanent and exc.value.status == status


def test_missing_build_is_permanent_not_found(jenkins_server):
    with pytest.raises(JenkinsError) as exc:
        JenkinsClient(jenkins_server).build_state("shop-backend", 404)
    assert exc.value.permanent and exc.value.kind == "not_found"


def test_timeout_is_transient(jenkins_server, fake_jenkins):
    fake_jenkins.add_build("shop-backend", 1)
    fake_jenkins.delay = 0.5
    with pytest.raises(JenkinsError) as exc:
        JenkinsClient(jenkins_server, timeout=0.1).build_info("shop-backend", 1)
    assert not exc.value.permanent and exc.value.kind == "timeout"


def test_logs_whole_and_progressive(jenkins_server, fake_jenkins):
    build = fake_jenkins.add_build("shop-backend", 3)
    build.console = "第一行\n第二行\n"
    client = JenkinsClient(jenkins_server)
    assert client.console_text("shop-backend", 3) == "第一行\n第二行\n"
    text, offset, more = client.progressive_text("shop-backend", 3)
    assert text == "第一行\n第二行\n" and more
    build.console += "第三行\n"
    text, offset2, more = client.progressive_text("shop-backend", 3, offset)
    assert text == "第三行\n" and offset2 > offset


def test_pending_inputs_and_build_state(jenkins_server, fake_jenkins):
    fake_jenkins.add_build("shop-backend", 5, inputs=[FakeInput("Release", parameters=["APPROVER"])])
    client = JenkinsClient(jenkins_server)
    [pending] = client.pending_inputs("shop-backend", 5)
    assert pending.id == "Release" and pending.parameters == ["APPROVER"]
    fake_jenkins.answer_input("shop-backend", 5, "Release", user="alice", approve=False)
    state = client.build_state("shop-backend", 5)
    assert not state.building and state.result == "ABORTED" and state.rejected and state.rejected_by == "alice"
