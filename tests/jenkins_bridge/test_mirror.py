"""X12/J7：在 Jenkins 里结束或处理掉的构建被发现，审批随之关闭，不再在 Telegram 上显示过期请求。"""

from __future__ import annotations

import pytest

from approvals.models import Approval, ApprovalEvent, EventKind, Status
from jenkins_bridge.models import BuildWatch
from jenkins_bridge.tasks import jenkins_build_mirror_task
from tests.fake_jenkins import FakeInput

pytestmark = pytest.mark.django_db


def test_build_finished_cancels_pending(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval()
    fake_jenkins.add_build("shop-backend", approval.build_number, building=False, result="FAILURE")
    assert jenkins_build_mirror_task() == {"build_finished": 1}
    approval.refresh_from_db()
    assert approval.status == Status.CANCELLED and "FAILURE" in approval.reason
    assert approval.decision_channel == "jenkins"


def test_deleted_build_cancels_pending(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval()
    assert jenkins_build_mirror_task() == {"build_gone": 1}
    assert Approval.objects.get(pk=approval.pk).status == Status.CANCELLED


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


def test_periodic_tasks_are_declared():
    from django.utils.module_loading import autodiscover_modules

    from approvalbot.periodic import registered

    autodiscover_modules("schedules")
    tasks = {spec.task for spec in registered()}
    assert {"jenkins_bridge.tasks.jenkins_action_recovery_task",
            "jenkins_bridge.tasks.jenkins_build_mirror_task"} <= tasks
