"""X12/J7：在 Jenkins 里结束或处理掉的构建被发现，审批随之关闭，不再在 Telegram 上显示过期请求。"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import Approval, ApprovalEvent, EventKind, Status
from jenkins_bridge.models import BuildWatch
from jenkins_bridge.services import MIRROR_NOT_FOUND_LIMIT
from jenkins_bridge.tasks import jenkins_build_mirror_task
from tests.fake_jenkins import FakeInput, FakeJenkins

pytestmark = pytest.mark.django_db


def test_build_finished_cancels_pending(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval()
    fake_jenkins.add_build("shop-backend", approval.build_number, building=False, result="FAILURE")
    assert jenkins_build_mirror_task() == {"build_finished": 1}
    approval.refresh_from_db()
    assert approval.status == Status.CANCELLED and "FAILURE" in approval.reason
    assert approval.decision_channel == "jenkins"


def test_deleted_build_cancels_pending_once_it_was_seen(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval()
    fake_jenkins.add_build("shop-backend", approval.build_number)
    assert jenkins_build_mirror_task() == {"waiting": 1}
    del fake_jenkins.builds[("shop-backend", approval.build_number)]  # 有人在 Jenkins 里删了这个构建
    assert jenkins_build_mirror_task() == {"build_gone": 1}
    assert Approval.objects.get(pk=approval.pk).status == Status.CANCELLED


def test_never_seen_build_404_is_not_taken_as_deleted_at_once(jenkins_server, fake_jenkins, shop_rule,
                                                               make_approval):
    """服务账号没有查看权限时 Jenkins 也回 404：不能一分钟内把所有待审批都取消。"""
    approval = make_approval()  # 假 Jenkins 上看不到这个构建
    for _run in range(MIRROR_NOT_FOUND_LIMIT + 1):
        assert jenkins_build_mirror_task() == {"not_found": 1}
    watch = BuildWatch.objects.get(approval=approval)
    assert watch.not_found_count == MIRROR_NOT_FOUND_LIMIT + 1 and "404" in watch.last_error
    assert Approval.objects.get(pk=approval.pk).status == Status.PENDING
    # 连续 404 足够多次、且持续够久：才当作构建已被删除
    BuildWatch.objects.filter(pk=watch.pk).update(not_found_since=timezone.now() - timedelta(minutes=11))
    assert jenkins_build_mirror_task() == {"build_gone": 1}
    assert Approval.objects.get(pk=approval.pk).status == Status.CANCELLED


def test_404_streak_resets_when_build_becomes_visible(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval()
    assert jenkins_build_mirror_task() == {"not_found": 1}
    fake_jenkins.add_build("shop-backend", approval.build_number)  # 权限修好了
    assert jenkins_build_mirror_task() == {"waiting": 1}
    watch = BuildWatch.objects.get(approval=approval)
    assert watch.not_found_count == 0 and watch.not_found_since is None and watch.build_seen_at is not None


def test_input_approved_in_jenkins_ui_is_mirrored(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    assert jenkins_build_mirror_task() == {"input_pending": 1}
    assert BuildWatch.objects.get(approval=approval).input_seen_at is not None
    fake_jenkins.answer_input("shop-backend", approval.build_number, "Release", user="carol", approve=True)
    assert jenkins_build_mirror_task() == {"mirrored_approved": 1}
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED and approval.decided_by_name == "carol"
    assert approval.jenkins_action_state == "none"  # 不再回写 Jenkins
    assert ApprovalEvent.objects.filter(approval=approval, kind=EventKind.APPROVED, channel="jenkins").exists()


def test_input_aborted_in_jenkins_ui_is_mirrored_as_rejection(jenkins_server, fake_jenkins, shop_rule,
                                                               make_approval):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    jenkins_build_mirror_task()
    fake_jenkins.answer_input("shop-backend", approval.build_number, "Release", user="carol", approve=False)
    assert jenkins_build_mirror_task() == {"mirrored_rejected": 1}
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.decided_by_name == "carol"


def test_abort_in_jenkins_while_build_keeps_running_is_not_mirrored_as_approval(jenkins_server, fake_jenkins,
                                                                               shop_rule, make_approval):
    """有人在 Jenkins 里点了 Abort，流水线还在跑 post{}：Jenkins 要到构建结束才记下中止原因。"""
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    assert jenkins_build_mirror_task() == {"input_pending": 1}
    fake_jenkins.answer_input("shop-backend", approval.build_number, "Release", user="carol", approve=False,
                              keep_building=True)
    assert jenkins_build_mirror_task() == {"input_gone": 1}  # 证据不足：等下一轮
    assert Approval.objects.get(pk=approval.pk).status == Status.PENDING
    fake_jenkins.finish("shop-backend", approval.build_number, "ABORTED")
    assert jenkins_build_mirror_task() == {"mirrored_rejected": 1}
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.decided_by_name == "carol"


def test_rejection_recorded_while_still_building_is_mirrored_at_once(jenkins_server, fake_jenkins, shop_rule,
                                                                      make_approval):
    """catchError { input } 之类：中止原因当场记在构建上，构建继续往下跑。"""
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    jenkins_build_mirror_task()
    fake_jenkins.answer_input("shop-backend", approval.build_number, "Release", user="carol", approve=False,
                              keep_building=True, rejection_visible=True)
    assert jenkins_build_mirror_task() == {"mirrored_rejected": 1}
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.decided_by_name == "carol"


def test_input_timeout_is_not_approved_by_an_earlier_inputs_approver(jenkins_server, fake_jenkins, shop_rule,
                                                                      make_approval):
    """两个 input 的流水线：前一个由 carol 在 Jenkins 里批准；这个 input 因 timeout 被系统中止。"""
    approval = make_approval(input_id="Prod")
    build = fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Staging")])
    fake_jenkins.answer_input("shop-backend", approval.build_number, "Staging", user="carol", approve=True)
    build.inputs["Prod"] = FakeInput("Prod")
    assert jenkins_build_mirror_task() == {"input_pending": 1}
    fake_jenkins.answer_input("shop-backend", approval.build_number, "Prod", user=None, approve=False,
                              keep_building=True)
    assert jenkins_build_mirror_task() == {"input_gone": 1}
    assert Approval.objects.get(pk=approval.pk).status == Status.PENDING
    fake_jenkins.finish("shop-backend", approval.build_number, "ABORTED")
    assert jenkins_build_mirror_task() == {"mirrored_rejected": 1}
    assert Approval.objects.get(pk=approval.pk).status == Status.REJECTED


def test_input_proceeded_by_the_service_account_is_not_mirrored(jenkins_server, fake_jenkins, shop_rule,
                                                                 make_approval):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    jenkins_build_mirror_task()
    fake_jenkins.answer_input("shop-backend", approval.build_number, "Release", user="svc", approve=True)
    assert jenkins_build_mirror_task() == {"input_gone": 1}
    assert Approval.objects.get(pk=approval.pk).status == Status.PENDING


def test_unreachable_jenkins_is_skipped_for_the_rest_of_the_run(jenkins_server, fake_jenkins, shop_rule,
                                                                 make_approval):
    """被黑洞的 Jenkins：第一个超时之后本轮不再等它；另一台正常的 Jenkins 照查不误。"""
    from jenkins_bridge.models import JenkinsServer

    healthy = FakeJenkins().start()
    try:
        other = JenkinsServer.objects.create(name="other", url=healthy.url, username="svc",
                                             api_token_env="FAKE_JENKINS_TOKEN", timeout_seconds=2.0)
        jenkins_server.timeout_seconds = 0.3
        jenkins_server.save()
        slow = [make_approval(job_name=f"app-{n}") for n in range(4)]  # 不同任务：互不取代
        for approval in slow:
            fake_jenkins.add_build(approval.job_name, approval.build_number)
        fine = make_approval(jenkins_server=other)
        healthy.add_build("shop-backend", fine.build_number)
        fake_jenkins.delay, fake_jenkins.delay_on = 1.0, "/job/app-"
        started = time.monotonic()
        assert jenkins_build_mirror_task() == {"error": 1, "skipped": 3, "waiting": 1}
        assert time.monotonic() - started < 1.5
        assert len(fake_jenkins.calls("GET", "/job/app-")) == 1
        assert "超时" in BuildWatch.objects.get(approval=slow[0]).last_error
    finally:
        healthy.down()


def test_mirror_run_stops_at_its_time_budget(jenkins_server, fake_jenkins, shop_rule, make_approval, monkeypatch):
    from jenkins_bridge import tasks

    monkeypatch.setattr(tasks, "MIRROR_TIME_BUDGET_SECONDS", 0.2)
    approvals = [make_approval(job_name=f"app-{n}") for n in range(3)]
    for approval in approvals:
        fake_jenkins.add_build(approval.job_name, approval.build_number)
    fake_jenkins.delay, fake_jenkins.delay_on = 0.25, "/job/app-"  # 慢但没有超时
    assert jenkins_build_mirror_task() == {"waiting": 1, "deferred": 2}
    fake_jenkins.delay = 0
    # 下一轮先查上一轮没轮到的
    monkeypatch.setattr(tasks, "MIRROR_TIME_BUDGET_SECONDS", 40.0)
    assert jenkins_build_mirror_task() == {"waiting": 3}


def test_input_not_yet_reached_leaves_approval_alone(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number)  # 还没走到 input
    assert jenkins_build_mirror_task() == {"waiting": 1}
    assert Approval.objects.get(pk=approval.pk).status == Status.PENDING


def test_jenkins_down_is_recorded_on_watch_not_history(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval()
    fake_jenkins.down()
    assert jenkins_build_mirror_task() == {"error": 1}
    assert "无法连接" in BuildWatch.objects.get(approval=approval).last_error
    assert Approval.objects.get(pk=approval.pk).status == Status.PENDING
    assert not ApprovalEvent.objects.filter(approval=approval, kind=EventKind.JENKINS_ERROR).exists()


def test_periodic_tasks_are_declared(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"jenkins_bridge.tasks.jenkins_action_recovery_task",
            "jenkins_bridge.tasks.jenkins_build_mirror_task"} <= tasks
