"""继续 Jenkins 的快路径：客户端与 crumb 按进程复用、知道 input id 时一个请求；缓存错了自己恢复。"""

# covers J5

from __future__ import annotations

import pytest

from approvals.models import Approval, JenkinsActionState
from approvals.services import approval_decide
from tests.fake_jenkins import FakeInput

pytestmark = pytest.mark.django_db


@pytest.fixture
def decide(django_capture_on_commit_callbacks, people):
    def run(approval, decision="approve"):
        with django_capture_on_commit_callbacks(execute=True):
            approval_decide(approval=approval, approver=people["approver"], decision=decision, channel="telegram")
        return Approval.objects.get(pk=approval.pk)

    return run


@pytest.fixture
def plain_server(jenkins_server):
    """不往 input 参数里写审批人的 Jenkins：继续只需要 POST proceedEmpty。"""
    jenkins_server.approver_parameter = ""
    jenkins_server.save()
    return jenkins_server


def build_waiting(make_approval, fake):
    approval = make_approval(input_id="Release")
    fake.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    return approval


def requests_for(fake, number):
    return [(c.method, c.path.split("?")[0]) for c in fake.requests
            if f"/{number}/" in c.path or "crumbIssuer" in c.path]


def test_second_resume_reuses_connection_and_crumb_and_sends_one_request(plain_server, fake_jenkins, shop_rule,
                                                                         make_approval, decide):
    first = build_waiting(make_approval, fake_jenkins)
    assert decide(first).jenkins_action_state == JenkinsActionState.DONE
    second = build_waiting(make_approval, fake_jenkins)  # 同一任务的下一个构建（前一个已决定，不会被取代）
    before = len(fake_jenkins.requests)
    assert decide(second).jenkins_action_state == JenkinsActionState.DONE
    later = fake_jenkins.requests[before:]
    assert [(c.method, c.path) for c in later] == [
        ("POST", f"/job/shop-backend/{second.build_number}/input/Release/proceedEmpty")]
    assert len(fake_jenkins.calls("GET", "crumbIssuer")) == 1


def test_expired_crumb_is_fetched_again_and_the_decision_still_lands_once(plain_server, fake_jenkins, shop_rule,
                                                                          make_approval, decide):
    decide(build_waiting(make_approval, fake_jenkins))
    second = build_waiting(make_approval, fake_jenkins)
    fake_jenkins.expire_sessions()  # Jenkins 重启：缓存的 crumb 作废
    approval = decide(second)
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    assert len(fake_jenkins.calls("GET", "crumbIssuer")) == 2
    posts = [c for c in fake_jenkins.calls("POST", f"/{second.build_number}/input/")]
    assert len(posts) == 2  # 第一次被拒（403，没有生效），第二次带新 crumb
    assert not fake_jenkins.build("shop-backend", second.build_number).inputs  # 继续了，input 不再等待


def test_wrong_input_id_falls_back_to_the_pending_list(plain_server, fake_jenkins, shop_rule, make_approval, decide):
    """流水线传的 id 与 Jenkins 里的大小写不一致：直接发得到 404，再读等待列表找到真正的 id。"""
    approval = make_approval(input_id="deploy-prod")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("DEPLOY-PROD")])
    approval = decide(approval)
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    assert [m + " " + p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for m, p in
            requests_for(fake_jenkins, approval.build_number) if m == "POST"] == [
        "POST Deploy-prod/proceedEmpty", "POST DEPLOY-PROD/proceedEmpty"]
    assert fake_jenkins.calls("GET", "pendingInputActions")


def test_input_not_reached_yet_is_still_a_wait_not_a_failure(plain_server, fake_jenkins, shop_rule, make_approval,
                                                            decide):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[])  # 还没走到 input
    approval = decide(approval)
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    assert approval.jenkins_watch.awaiting_input_since is not None
    assert approval.jenkins_watch.action_sent_at is None  # 404 不是“已送达”


def test_reject_goes_straight_to_abort(plain_server, fake_jenkins, shop_rule, make_approval, decide):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    approval = decide(approval, "reject")
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    assert [p for m, p in requests_for(fake_jenkins, approval.build_number) if "crumb" not in p] == [
        f"/job/shop-backend/{approval.build_number}/input/Release/abort"]


def test_with_an_approver_parameter_the_pending_list_is_still_read(jenkins_server, fake_jenkins, shop_rule,
                                                                  make_approval, decide):
    """服务器配置了审批人参数名：要先知道 input 声明了哪些参数，才能把审批人写进去。"""
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number,
                           inputs=[FakeInput("Release", parameters=["APPROVER"])])
    approval = decide(approval)
    assert fake_jenkins.build("shop-backend", approval.build_number).submitted == [{"APPROVER": "Bob"}]
