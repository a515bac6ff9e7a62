"""审批服务：创建幂等、取代旧构建、N 选 M、决定只记一次、超时与取消。"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from approvals import effects
from approvals.builds import build_result_record
from approvals.errors import AlreadyDecided, AlreadyVoted, ApprovalNotFound, InvalidRequest
from approvals.models import Approval, ApprovalEvent, BuildResult, EventKind, JenkinsActionState, ResumeMode, Status
from approvals.selectors import approval_detail, approval_get, approval_stats
from approvals.services import approval_cancel, approval_create, approval_decide
from approvals.sweeps import approvals_expire_due
from jenkins_bridge.models import JenkinsServer

pytestmark = pytest.mark.django_db


def test_create_resolves_rule_and_snapshots_policy(shop_rule, make_approval):
    approval = make_approval(job_name="folder/shop-api", environment="生产", build_number=7)
    assert approval.project == "shop-backend"
    assert approval.environment == "production" and approval.environment_raw == "生产"
    assert approval.required_approvals == 2
    assert approval.chat_id == -1001234567890
    assert approval.expires_at - approval.created_at == pytest.approx(timedelta(minutes=30), abs=timedelta(seconds=2))
    assert approval.next_reminder_at is not None
    assert len(approval.public_id) == 8 and approval.public_id.isalnum()
    assert approval.resume_mode == ResumeMode.POLL
    assert ApprovalEvent.objects.filter(approval=approval, kind=EventKind.CREATED).count() == 1


def test_create_is_idempotent_per_build_and_stage(shop_rule):
    first, created = approval_create(job_name="shop-backend", build_number=5, environment="test", input_id="Deploy")
    again, created_again = approval_create(job_name="shop-backend", build_number=5, environment="test",
                                           input_id="Deploy", description="不同的描述")
    assert created and not created_again
    assert again.pk == first.pk and again.description == ""
    assert first.resume_mode == ResumeMode.INPUT
    # 同一构建的另一个审批阶段是另一条审批
    other, created_other = approval_create(job_name="shop-backend", build_number=5, environment="test",
                                           input_id="DeployProd")
    assert created_other and other.pk != first.pk
    assert Approval.objects.count() == 2


def test_newer_build_supersedes_older_pending_of_same_job_and_environment(shop_rule, make_approval):
    old = make_approval(build_number=10)
    other_env = make_approval(build_number=9, environment="production")
    new = make_approval(build_number=11)
    old.refresh_from_db()
    other_env.refresh_from_db()
    assert old.status == Status.CANCELLED and old.superseded_by == new
    assert "#11" in old.reason
    assert other_env.status == Status.PENDING  # 不同环境不受影响
    assert old.jenkins_action_state == JenkinsActionState.PENDING  # 旧构建的 input 要被中止
    assert ApprovalEvent.objects.filter(approval=old, kind=EventKind.SUPERSEDED).count() == 1


def test_invalid_create_input_writes_nothing(shop_rule):
    with pytest.raises(InvalidRequest) as exc:
        approval_create(job_name="  ", build_number=1, environment="test")
    assert exc.value.code == "missing_project"
    with pytest.raises(InvalidRequest) as exc:
        approval_create(job_name="shop-backend", build_number=1, environment="test", timeout_minutes=0)
    assert exc.value.code == "invalid_timeout"
    assert Approval.objects.count() == 0 and ApprovalEvent.objects.count() == 0


def test_x1_two_of_two_needs_both_votes(shop_rule, people, make_approval):
    approval = make_approval(environment="production")
    first = approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    assert not first.final
    approval.refresh_from_db()
    assert approval.status == Status.PENDING and approval.approvals_received == 1
    with pytest.raises(AlreadyVoted):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    second = approval_decide(approval=approval, approver=people["approver2"], decision="approve", channel="api",
                             reason="看过变更")
    assert second.final
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED and approval.decided_by == people["approver2"]
    assert approval.decided_at is not None and approval.next_reminder_at is None
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    kinds = list(approval.events.values_list("kind", flat=True))
    assert kinds.count(EventKind.APPROVED) == 1 and EventKind.VOTE in kinds


def test_first_rejection_rejects_even_after_an_approval(shop_rule, people, make_approval):
    approval = make_approval(environment="production")
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    outcome = approval_decide(approval=approval, approver=people["approver2"], decision="reject",
                              reason="数据库迁移没评审 <b>", channel="telegram")
    assert outcome.final
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.reason == "数据库迁移没评审 <b>"


def test_second_decision_is_told_who_decided_and_when(shop_rule, people, make_approval):
    approval = make_approval()
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    with pytest.raises(AlreadyDecided) as exc:
        approval_decide(approval=approval, approver=people["admin"], decision="reject", channel="api")
    assert exc.value.http_status == 409
    assert "Bob" in exc.value.message and "已同意" in exc.value.message
    assert exc.value.details["decided_by"] == "Bob"
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED and approval.votes.count() == 1


def test_expire_applies_reject_policy_and_only_once(shop_rule, make_approval):
    approval = make_approval()
    assert approvals_expire_due() == []  # 未到期
    later = approval.expires_at + timedelta(seconds=1)
    assert approvals_expire_due(now=later) == [approval.pk]
    assert approvals_expire_due(now=later) == []
    approval.refresh_from_db()
    assert approval.status == Status.TIMEOUT and approval.decided_by is None
    assert approval.jenkins_action_state == JenkinsActionState.PENDING
    assert approval.events.filter(kind=EventKind.TIMEOUT).count() == 1


def test_expire_with_mark_policy_leaves_jenkins_alone(shop_rule, make_approval):
    shop_rule.timeout_policy = "mark"
    shop_rule.save()
    approval = make_approval()
    assert approvals_expire_due(now=approval.expires_at + timedelta(seconds=1)) == [approval.pk]
    approval.refresh_from_db()
    assert approval.status == Status.TIMEOUT
    assert approval.jenkins_action_state == JenkinsActionState.NONE


def test_cancel_is_a_noop_on_decided(shop_rule, people, make_approval):
    approval = make_approval()
    approval_decide(approval=approval, approver=people["approver"], decision="reject", channel="api")
    assert not approval_cancel(approval=approval, reason="构建已结束")
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED


def test_build_result_for_pending_approval_cancels_it(shop_rule, make_approval):
    approval = make_approval(build_number=42)
    record, created = build_result_record(job_name="shop-backend", build_number=42, result="ABORTED",
                                          duration_ms=1200)
    assert created and record.approval == approval and record.project == "shop-backend"
    approval.refresh_from_db()
    assert approval.status == Status.CANCELLED
    again, created_again = build_result_record(job_name="shop-backend", build_number=42, result="ABORTED")
    assert not created_again and BuildResult.objects.count() == 1 and again.pk == record.pk


def test_public_id_lookup_is_forgiving_but_strict_on_garbage(make_approval, shop_rule):
    approval = make_approval()
    assert approval_get(approval.public_id.lower()) == approval
    for bad in ("", "x" * 40, "１２３", "ab;cd", "../etc"):
        with pytest.raises(ApprovalNotFound):
            approval_get(bad)


def test_stats_and_detail(shop_rule, people, make_approval):
    a = make_approval(environment="test")
    make_approval(environment="production")
    approval_decide(approval=a, approver=people["approver"], decision="approve", channel="api")
    stats = approval_stats()
    assert stats["total"] == 2 and stats["by_status"]["approved"] == 1 and stats["by_status"]["pending"] == 1
    assert stats["today"] == 2 and stats["median_decision_seconds"] is not None
    detail = approval_detail(a.public_id)
    assert [v.approver.username for v in detail.votes.all()] == ["bob"]
    assert [e.kind for e in detail.events.all()][:1] == ["created"]


def test_side_effects_enqueued_only_after_commit(shop_rule, people, make_approval, django_capture_on_commit_callbacks,
                                                 monkeypatch):
    sent: list[tuple[str, tuple]] = []

    class FakeTask:
        def __init__(self, name):
            self.name = name

        def delay(self, *args):
            sent.append((self.name, args))

    from approvalbot.celery import app

    monkeypatch.setattr(app.tasks, "get", lambda name, default=None: FakeTask(name))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        approval = make_approval()
    assert sent == []  # 事务内不投递
    for callback in callbacks:
        callback()
    assert sent == [(effects.ANNOUNCE_TASK, (approval.pk,))]
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
    assert (effects.REFRESH_TASK, (approval.pk,)) in sent and (effects.JENKINS_RESUME_TASK, (approval.pk,)) in sent


def test_event_history_is_append_only(make_approval, shop_rule):
    event = ApprovalEvent.objects.filter(approval=make_approval()).first()
    event.details = {"tampered": True}
    with pytest.raises(ValueError):
        event.save()


def test_pending_approval_times_are_consistent(make_approval, shop_rule):
    approval = make_approval()
    assert approval.created_at <= timezone.now() < approval.expires_at
    assert approval.decided_at is None


def test_recreated_job_reusing_a_build_number_gets_a_new_approval(shop_rule, people):
    """任务被删除重建后构建号从 1 重来：几个月前那条“已同意”决不能让新构建直接上线。"""
    with time_machine.travel(timezone.now() - timedelta(days=90)):
        old, _ = approval_create(job_name="shop-backend", build_number=1, environment="test", input_id="Release")
        approval_decide(approval=old, approver=people["approver"], decision="approve", channel="api")
        build_result_record(job_name="shop-backend", build_number=1, result="SUCCESS")
    new, created = approval_create(job_name="shop-backend", build_number=1, environment="test", input_id="Release",
                                   version="v2.0")
    assert created and new.pk != old.pk
    assert new.status == Status.PENDING and new.generation == 1 and new.version == "v2.0"
    # 同一次（新）构建再调用仍然幂等
    again, created_again = approval_create(job_name="shop-backend", build_number=1, environment="test",
                                           input_id="Release")
    assert not created_again and again.pk == new.pk
    # 新构建的结果是一条新记录（会发通知），挂在新审批上
    record, result_created = build_result_record(job_name="shop-backend", build_number=1, result="FAILURE")
    assert result_created and record.approval == new and BuildResult.objects.count() == 1


def test_recent_repeat_of_the_same_build_is_still_idempotent(shop_rule):
    with time_machine.travel(timezone.now() - timedelta(days=6)):
        first, _ = approval_create(job_name="shop-backend", build_number=2, environment="test")
    again, created = approval_create(job_name="shop-backend", build_number=2, environment="test")
    assert not created and again.pk == first.pk


def test_default_jenkins_follows_the_environment(settings):
    """先于 JENKINS_URL 配好就用过、或后来改了地址：环境变量定义的默认服务器以环境变量为准。"""
    settings.JENKINS_URL, settings.JENKINS_USER = "", ""
    first = JenkinsServer.objects.default()
    assert first.url == ""
    settings.JENKINS_URL, settings.JENKINS_USER = "https://jenkins.example.com/", "svc"
    again = JenkinsServer.objects.default()
    assert again.pk == first.pk and again.url == "https://jenkins.example.com/" and again.username == "svc"
    again.refresh_from_db()
    assert again.url == "https://jenkins.example.com/"


def test_long_job_names_and_unknown_environments_fit_their_columns(shop_rule):
    approval, _ = approval_create(job_name="folder/" + "x" * 240, build_number=1, environment="e" * 60)
    approval.refresh_from_db()
    assert len(approval.project) == 200 and len(approval.environment) == 32
