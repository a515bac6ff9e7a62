"""Jenkins 操作的租约与恢复扫描：worker 死在执行途中、broker 丢了消息（Redis 重启后是空的），
一分钟内补做，而且只做一次。"""

# covers J5, H2

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.actions import jenkins_action_claim, jenkins_action_release
from approvals.models import Approval, JenkinsActionState
from approvals.services import approval_decide
from jenkins_bridge.tasks import RECOVERY_GRACE_SECONDS, RESUME_LEASE_SECONDS, jenkins_action_recovery_task
from tests.fake_jenkins import FakeInput

pytestmark = pytest.mark.django_db


@pytest.fixture
def waiting(jenkins_server, fake_jenkins, shop_rule, make_approval):
    approval = make_approval(input_id="Release")
    fake_jenkins.add_build("shop-backend", approval.build_number, inputs=[FakeInput("Release")])
    return approval


def decide_without_tasks(approval, people, django_capture_on_commit_callbacks):
    """决定已提交，但投递的任务没有执行（broker 丢了它，或 worker 在执行前就死了）。"""
    with django_capture_on_commit_callbacks(execute=False):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    return Approval.objects.get(pk=approval.pk)


def sweep_at(seconds: float) -> int:
    return jenkins_action_recovery_task(now=(timezone.now() + timedelta(seconds=seconds)).isoformat())


def proceeds(fake_jenkins):
    return fake_jenkins.calls("POST", "/input/Release/proceed")


def test_a_lost_message_is_sent_again_after_the_grace_and_lands_once(waiting, people, fake_jenkins,
                                                                      django_capture_on_commit_callbacks):
    approval = decide_without_tasks(waiting, people, django_capture_on_commit_callbacks)
    assert approval.jenkins_action_state == JenkinsActionState.PENDING and approval.jenkins_action_due_at
    assert sweep_at(RECOVERY_GRACE_SECONDS - 2) == 0  # 正常情况下任务马上就来：先不补
    assert sweep_at(RECOVERY_GRACE_SECONDS + 1) == 1
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE and approval.jenkins_action_due_at is None
    assert len(proceeds(fake_jenkins)) == 1
    assert sweep_at(600) == 0


def test_a_worker_killed_mid_task_is_taken_over_when_its_lease_expires(waiting, people, fake_jenkins,
                                                                       django_capture_on_commit_callbacks):
    approval = decide_without_tasks(waiting, people, django_capture_on_commit_callbacks)
    dead = jenkins_action_claim(approval.pk, seconds=RESUME_LEASE_SECONDS)  # 认领后 kill -9：租约留在库里
    assert dead
    assert sweep_at(RESUME_LEASE_SECONDS - 5) == 0  # 也许它还活着
    # 租约到期（它认领在 RESUME_LEASE_SECONDS 秒之前）：下一轮扫描接手
    Approval.objects.filter(pk=approval.pk).update(jenkins_action_lease_until=timezone.now() - timedelta(seconds=1))
    assert sweep_at(RECOVERY_GRACE_SECONDS + 1) == 1
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE
    assert len(proceeds(fake_jenkins)) == 1
    jenkins_action_release(approval.pk, dead)  # 死掉的那个（假如还能醒来）放开租约也不会改动别人的结果
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE


def test_only_one_holder_at_a_time(waiting, people, django_capture_on_commit_callbacks):
    approval = decide_without_tasks(waiting, people, django_capture_on_commit_callbacks)
    first = jenkins_action_claim(approval.pk, seconds=30)
    assert first and jenkins_action_claim(approval.pk, seconds=30) is None
    later = timezone.now() + timedelta(seconds=31)
    second = jenkins_action_claim(approval.pk, seconds=30, now=later)
    assert second and second != first
    jenkins_action_release(approval.pk, first)  # 过期的持有者放不开新持有者的租约
    assert jenkins_action_claim(approval.pk, seconds=30, now=later) is None


def test_a_lost_retry_is_recovered_when_it_was_due(waiting, people, fake_jenkins, decide_eager):
    fake_jenkins.down()
    approval = decide_eager(waiting)
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    due_in = (approval.jenkins_action_due_at - timezone.now()).total_seconds()
    assert 3 <= due_in <= 6  # 第一次重试排在约 5 秒后（Redis 丢了这条延时消息也没关系）
    fake_jenkins.up()
    assert sweep_at(due_in + RECOVERY_GRACE_SECONDS - 3) == 0
    assert sweep_at(due_in + RECOVERY_GRACE_SECONDS + 1) == 1
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE and len(proceeds(fake_jenkins)) == 1


def test_a_sent_again_row_is_not_sent_every_sweep_while_the_queue_is_busy(waiting, people,
                                                                           django_capture_on_commit_callbacks):
    """队列积压时补发的那份也还在排队：下一轮不再多投一份。"""
    from approvalbot.celery import app

    approval = decide_without_tasks(waiting, people, django_capture_on_commit_callbacks)
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False  # 只投递不执行（内存 broker）：模拟 worker 正忙
    try:
        assert sweep_at(RECOVERY_GRACE_SECONDS + 1) == 1
        assert sweep_at(RECOVERY_GRACE_SECONDS + 15) == 0
        assert sweep_at(RECOVERY_GRACE_SECONDS + 45) == 1
    finally:
        app.conf.task_always_eager = eager
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.PENDING


@pytest.fixture
def decide_eager(django_capture_on_commit_callbacks, people):
    def run(approval):
        with django_capture_on_commit_callbacks(execute=True):
            approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
        return Approval.objects.get(pk=approval.pk)

    return run


def test_a_task_that_crashes_before_any_outcome_is_picked_up_again(waiting, people, fake_jenkins, monkeypatch,
                                                                   django_capture_on_commit_callbacks):
    # 数据库断开、软时限、程序错误：消息已确认（acks_late），只有恢复扫描能把它捡回来
    import jenkins_bridge.tasks as tasks

    approval = decide_without_tasks(waiting, people, django_capture_on_commit_callbacks)
    real = tasks.approval_resume_jenkins

    def crash(_approval):
        raise RuntimeError("数据库连接在执行途中断开")

    monkeypatch.setattr(tasks, "approval_resume_jenkins", crash)
    with pytest.raises(RuntimeError):
        tasks.approval_resume_task.apply(args=[approval.pk], throw=True)
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    assert approval.jenkins_action_lease == "" and approval.jenkins_action_due_at is not None
    assert proceeds(fake_jenkins) == []
    monkeypatch.setattr(tasks, "approval_resume_jenkins", real)
    assert sweep_at(RECOVERY_GRACE_SECONDS - 2) == 0
    assert sweep_at(60) == 1  # 崩溃之后一分钟内补做
    approval.refresh_from_db()
    assert approval.jenkins_action_state == JenkinsActionState.DONE and approval.jenkins_action_due_at is None
    assert len(proceeds(fake_jenkins)) == 1
