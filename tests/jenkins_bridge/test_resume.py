"""三种恢复方式端到端对着假 Jenkins（J5/J6/X14）：决定 → 提交后任务 → 真 HTTP → 记录在审批上。"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from approvalbot.celery import retry_countdown
from approvals.models import Approval, ApprovalEvent, EventKind, JenkinsActionState, Status
from approvals.services import approval_decide
from approvals.sweeps import approvals_expire_due
from jenkins_bridge.api.serializers import approval_reply
from jenkins_bridge.tasks import approval_resume_task, jenkins_action_recovery_task
from tests.fake_jenkins import FakeInput

pytestmark = pytest.mark.django_db


@pytest.fixture
def decide(django_capture_on_commit_callbacks, people):
    def run(approval, decision="approve", who="approver", reason=""):
        with django_capture_on_commit_callbacks(execute=True):
            approval_decide(approval=approval, approver=people[who], decision=decision, reason=reason,
                            channel="telegram")
        return Approval.objects.get(pk=approval.pk)

    return run


def jenkins_events(approval):
    return list(ApprovalEvent.objects.filter(approval=approval, kind__in=[EventKind.JENKINS_ACTION,
                                                                          EventKind.JENKINS_ERROR]).order_by("id"))


def test_approve_proceeds_input_with_real_approver_as_parameter(jenkins_server, fake_jenkins, shop_rule,
                                                                 make_approval, decide):
    approval = make_approval(input_id="release")  # 流水线里写的小写 id：Jenkins 会把首字母大写
    fake_jenkins.add_build("shop-backend", approval.build_number,
                           inputs=[FakeInput("Release", parameters=["APPROVER"])])
    approval = decide(approval)
    assert approval.status == Status.APPROVED
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    build = fake_jenkins.build("shop-backend", approval.build_number)
    assert build.submitted == [{"APPROVER": "Bob"}]  # X14：真实审批人写进了 Jenkins
    [post] = fake_jenkins.calls("POST", "/input/")
    assert post.path.endswith("/input/Release/proceed")
    [event] = jenkins_events(approval)
    assert event.kind == EventKind.JENKINS_ACTION and event.details["action"] == "input_proceed"


def test_approve_uses_proceed_empty_when_input_declares_no_approver_parameter(jenkins_server, fake_jenkins,
                                                                                shop_rule, make_approval, decide):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    approval = decide(approval)
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    [post] = fake_jenkins.calls("POST", "/input/")
    assert post.path.endswith("/input/Release/proceedEmpty")


def test_reject_aborts_input_and_stops_build_when_rule_says_so(jenkins_server, fake_jenkins, shop_rule,
                                                                make_approval, decide):
    shop_rule.stop_build = True
    shop_rule.save()
    approval = make_approval(input_id="release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    approval = decide(approval, "reject", reason="迁移脚本未评审")
    assert approval.status == Status.REJECTED and approval.jenkins_action_state == JenkinsActionState.DONE
    paths = [c.path for c in fake_jenkins.calls("POST")]
    assert paths[0].endswith("/input/Release/abort") and paths[1].endswith("/stop")
    assert jenkins_events(approval)[0].details["action"] == "input_abort+stop"


def test_input_id_found_through_wfapi_when_not_given(jenkins_server, fake_jenkins, shop_rule, make_approval,
                                                      django_capture_on_commit_callbacks, people):
    """没有 input_id 的 input 方式不存在（那是 poll）；这里测 id 大小写对不上时靠 wfapi 找到真正的 id。"""
    approval = make_approval(input_id="deploy-prod")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("DEPLOY-PROD")])
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
    assert fake_jenkins.calls("POST", "/input/")[0].path.endswith("/input/DEPLOY-PROD/proceedEmpty")
    assert fake_jenkins.calls("GET", "wfapi/pendingInputActions")


def test_timeout_with_reject_policy_aborts_input(jenkins_server, fake_jenkins, shop_rule, make_approval,
                                                 django_capture_on_commit_callbacks):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    with django_capture_on_commit_callbacks(execute=True):
        assert approvals_expire_due(now=approval.expires_at + timedelta(seconds=1)) == [approval.pk]
    approval.refresh_from_db()
    assert approval.status == Status.TIMEOUT and approval.jenkins_action_state == JenkinsActionState.DONE
    assert fake_jenkins.calls("POST")[0].path.endswith("/input/Release/abort")


def test_webhook_mode_posts_decision_json(jenkins_server, fake_jenkins, shop_rule, make_approval, decide):
    hook = fake_jenkins.register_webhook("hook-1")
    approval = make_approval(callback_url=hook)
    approval = decide(approval, reason="可以发 ✅")
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    [posted] = fake_jenkins.webhook_posts["hook-1"]
    # 与等待接口的回答同一份内容，外加 Webhook 的 approval_id / approved
    reply = approval_reply(Approval.objects.get(pk=approval.pk))
    assert posted == {**reply, "approval_id": approval.public_id, "approved": True}
    assert (posted["status"], posted["decided_by"], posted["reason"], posted["proceed"]) == (
        "approved", "Bob", "可以发 ✅", True)
    assert jenkins_events(approval)[0].details == {
        "action": "webhook", "ok": True, "error": "", "permanent": False, "http_status": 200}


def test_webhook_auth_header_comes_from_server_env(jenkins_server, fake_jenkins, shop_rule, make_approval, decide,
                                                   monkeypatch):
    monkeypatch.setenv("HOOK_AUTH", "s3cret")
    jenkins_server.webhook_auth_header_env = "HOOK_AUTH"
    jenkins_server.save()
    hook = fake_jenkins.register_webhook("hook-2", auth_token="s3cret")
    approval = decide(make_approval(callback_url=hook), "reject")
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    assert fake_jenkins.webhook_posts["hook-2"][0]["approved"] is False


def test_webhook_wrong_auth_is_permanent_failure(jenkins_server, fake_jenkins, shop_rule, make_approval, decide):
    hook = fake_jenkins.register_webhook("hook-3", auth_token="expected")
    approval = decide(make_approval(callback_url=hook))
    assert approval.jenkins_action_state == JenkinsActionState.FAILED
    assert "403" in approval.jenkins_action_error


@pytest.mark.parametrize(("status", "location", "host"), [
    (302, "https://sso.example.com/login?from=%2Fwebhook-step%2Fhook-r&ticket=s3cret-ticket", "sso.example.com"),
    (301, "https://jenkins.example.com:8443/webhook-step/hook-r?token=s3cret-ticket", "jenkins.example.com:8443"),
    (307, "/login?token=s3cret-ticket", "127.0.0.1"),
    (308, "", ""),
])
def test_webhook_answering_a_redirect_is_a_permanent_failure(jenkins_server, fake_jenkins, shop_rule, make_approval,
                                                             decide, status, location, host):
    """回调地址回 3xx（登录页、写错的地址）：不跟随也不算成功，流水线没收到决定——记为失败并说明去向，不重试。"""
    hook = fake_jenkins.register_webhook("hook-r")
    fake_jenkins.redirect_webhook("hook-r", location, status=status)
    approval = decide(make_approval(callback_url=hook))
    assert approval.jenkins_action_state == JenkinsActionState.FAILED
    assert str(status) in approval.jenkins_action_error and host in approval.jenkins_action_error
    assert "s3cret-ticket" not in approval.jenkins_action_error and "/login" not in approval.jenkins_action_error
    assert len(fake_jenkins.calls("POST", "/webhook-step/")) == 1  # 永久失败：不重试，也不跟随
    assert fake_jenkins.webhook_posts.get("hook-r") is None
    [event] = jenkins_events(approval)
    assert event.kind == EventKind.JENKINS_ERROR and event.details["permanent"] is True


def test_poll_mode_sends_nothing(jenkins_server, fake_jenkins, shop_rule, make_approval, decide):
    approval = decide(make_approval())
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    assert not fake_jenkins.calls("POST")


def test_jenkins_down_then_back_is_retried_and_succeeds_once(jenkins_server, fake_jenkins, shop_rule,
                                                              make_approval, decide):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    fake_jenkins.down()
    approval = decide(approval)
    assert approval.jenkins_action_state == JenkinsActionState.PENDING  # 暂时失败：等重试
    assert approval.jenkins_action_attempts == 1
    assert jenkins_events(approval)[0].details["permanent"] is False
    fake_jenkins.up()
    # 恢复扫描在最长退避之后补发（broker 丢消息时同样靠它）
    later = timezone.now() + timedelta(hours=1)
    assert jenkins_action_recovery_task(now=later.isoformat()) == 1
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE and approval.jenkins_action_attempts == 2
    assert len(fake_jenkins.calls("POST", "/input/")) == 1
    # 再跑一次任务或扫描：什么都不做（幂等）
    assert approval_resume_task.delay(approval.pk).get() == "skip"
    assert jenkins_action_recovery_task(now=later.isoformat()) == 0
    assert len(fake_jenkins.calls("POST", "/input/")) == 1


def test_server_error_is_retried_not_failed(jenkins_server, fake_jenkins, shop_rule, make_approval, decide):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    fake_jenkins.fail_next(1, status=503, path_contains="/input/")
    approval = decide(approval)
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    assert "503" in approval.jenkins_action_error
    assert approval_resume_task.delay(approval.pk).get() == "input_proceedEmpty"
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE


def test_build_gone_is_permanent_and_not_retried(jenkins_server, fake_jenkins, shop_rule, make_approval, decide):
    approval = decide(make_approval(input_id="Release"))  # 假 Jenkins 上没有这个构建：404
    assert approval.jenkins_action_state == JenkinsActionState.FAILED
    assert approval.jenkins_action_attempts == 1
    [event] = jenkins_events(approval)
    assert event.kind == EventKind.JENKINS_ERROR and event.details["permanent"] is True
    # 永久失败不会被恢复扫描重新捡起
    assert jenkins_action_recovery_task(now=(timezone.now() + timedelta(days=1)).isoformat()) == 0
    assert approval_resume_task.delay(approval.pk).get() == "skip"


def test_input_already_answered_in_jenkins_is_permanent(jenkins_server, fake_jenkins, shop_rule, make_approval,
                                                        decide):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    fake_jenkins.answer_input("shop-backend", approval.build_number, "Release", user="carol", approve=True)
    approval = decide(approval)
    assert approval.jenkins_action_state == JenkinsActionState.FAILED
    assert "carol" in approval.jenkins_action_error
    assert not fake_jenkins.calls("POST", "/input/")


def test_lost_response_then_retry_counts_as_done(jenkins_server, fake_jenkins, shop_rule, make_approval, decide):
    """第一次 POST 其实到达了 Jenkins 但响应超时；重试时 input 已不在：视为已完成，不报错、不重复。"""
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    fake_jenkins.delay, fake_jenkins.delay_on = 2.3, "/input/"  # 超过服务器配置的 2 秒超时
    approval = decide(approval)
    fake_jenkins.delay = 0
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    deadline = time.monotonic() + 3
    while fake_jenkins.build("shop-backend", approval.build_number).inputs and time.monotonic() < deadline:
        time.sleep(0.05)  # 假 Jenkins 在客户端放弃之后才处理完那个请求
    assert approval_resume_task.delay(approval.pk).get() == "already_done"
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    assert len(fake_jenkins.calls("POST", "/input/")) == 1


def test_retry_countdown_is_capped_and_jittered(settings):
    settings.CELERY_RETRY_BACKOFF_MAX = 600
    values = [retry_countdown(n) for n in range(20) for _ in range(5)]
    assert all(0 < v <= 600 for v in values)
    assert max(retry_countdown(15) for _ in range(50)) <= 600 < 3600  # 低于 broker 的 visibility_timeout
    assert len({retry_countdown(10) for _ in range(20)}) > 1  # 有抖动


def test_worker_mode_schedules_retry_with_backoff(jenkins_server, fake_jenkins, shop_rule, make_approval, settings):
    """非 eager（真 worker）时：暂时失败用 self.retry 按退避重新排队，而不是马上再试。"""
    from celery.exceptions import Retry

    from approvalbot.celery import app

    approval = make_approval(input_id="Release")
    Approval.objects.filter(pk=approval.pk).update(status=Status.APPROVED, decided_at=timezone.now(),
                                                    jenkins_action_state=JenkinsActionState.PENDING)
    fake_jenkins.down()
    app.conf.task_always_eager = False
    try:
        approval_resume_task.push_request(args=[approval.pk], kwargs={}, retries=3, is_eager=False,
                                          called_directly=False)
        with pytest.raises(Retry) as exc:
            approval_resume_task.run(approval.pk)
    finally:
        approval_resume_task.pop_request()
        app.conf.task_always_eager = True
    assert 0 < float(exc.value.when) <= 40  # 5 × 2³ = 40 秒封顶（带抖动）


def _run_as_worker(approval_id: int, retries: int):
    """像真 worker 那样执行一次（非 eager）：返回结果，或 self.retry 抛出的 Retry。"""
    from celery.exceptions import Retry

    from approvalbot.celery import app

    app.conf.task_always_eager = False
    try:
        approval_resume_task.push_request(args=[approval_id], kwargs={}, retries=retries, is_eager=False,
                                          called_directly=False)
        try:
            return approval_resume_task.run(approval_id)
        except Retry as exc:
            return exc
    finally:
        approval_resume_task.pop_request()
        app.conf.task_always_eager = True


def test_decision_before_pipeline_reaches_input_waits_without_burning_retries(jenkins_server, fake_jenkins,
                                                                              shop_rule, make_approval, decide):
    """先批了、流水线几小时后才走到 input：不能在重试 12 次（约 1 小时）后永久失败。"""
    from celery.exceptions import Retry

    from jenkins_bridge.models import BuildWatch
    from jenkins_bridge.tasks import RESUME_MAX_RETRIES, jenkins_build_mirror_task

    approval = make_approval(input_id="Release")
    build = fake_jenkins.add_build("shop-backend", approval.build_number)  # 还在前面的阶段跑
    approval = decide(approval)
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    assert BuildWatch.objects.get(approval=approval).awaiting_input_since is not None
    [event] = jenkins_events(approval)
    assert event.details["kind"] == "input_not_pending" and event.details["permanent"] is False
    # worker 里先按退避快速重试；重试次数用完也不算失败，交给镜像任务
    assert isinstance(_run_as_worker(approval.pk, retries=0), Retry)
    assert _run_as_worker(approval.pk, retries=RESUME_MAX_RETRIES) == "waiting_input"
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    assert len(jenkins_events(approval)) == 1  # 等待期间不再每次写历史
    # 恢复扫描不再每分钟空投；镜像任务照看它
    assert jenkins_action_recovery_task(now=(timezone.now() + timedelta(hours=3)).isoformat()) == 0
    assert jenkins_build_mirror_task() == {"input_waiting": 1}
    build.inputs["Release"] = FakeInput("Release")  # 流水线终于走到了 input
    assert jenkins_build_mirror_task() == {"resume_queued": 1}
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    assert [c.path for c in fake_jenkins.calls("POST")][-1].endswith("/input/Release/proceedEmpty")
    assert BuildWatch.objects.get(approval=approval).awaiting_input_since is None
    assert jenkins_build_mirror_task() == {}


def test_build_that_ends_before_reaching_input_is_a_permanent_failure(jenkins_server, fake_jenkins, shop_rule,
                                                                      make_approval, decide):
    from jenkins_bridge.tasks import jenkins_build_mirror_task

    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number)
    approval = decide(approval)
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    fake_jenkins.finish("shop-backend", approval.build_number, "FAILURE")  # 构建在走到 input 之前就失败了
    assert jenkins_build_mirror_task() == {"resume_queued": 1}
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.FAILED
    assert "FAILURE" in approval.jenkins_action_error
    assert not fake_jenkins.calls("POST")
    assert jenkins_build_mirror_task() == {}
