"""封版窗口（X4）：什么时候算封版、封到几点；封版中的申请被记录并拒绝；紧急发布要多一位管理员；
封版开始时的待审批按规则继续等待或被拒绝。"""

# covers X4

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
import time_machine

from accounts.freeze import freeze_find, freeze_overview
from accounts.models import FreezeKind, FreezeWindow, PolicyEvent, PolicyEventKind, Source, Weekday
from approvals.errors import AlreadyDecided, InvalidRequest, PermissionDenied
from approvals.models import Approval, ApprovalEvent, EventKind, JenkinsActionState, Status
from approvals.policy_sweeps import approvals_refuse_frozen, policy_sweep
from approvals.services import approval_create, approval_decide
from approvals.tasks import policy_sweep_task

pytestmark = pytest.mark.django_db

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def weekend(**overrides) -> FreezeWindow:
    """周五 18:00 → 周一 09:00（默认按 TIME_ZONE，即上海时间），只管生产。"""
    values = {"name": "周末封版", "kind": FreezeKind.WEEKLY, "environments": ["production"],
              "start_day": Weekday.FRIDAY, "start_time": time(18, 0), "end_day": Weekday.MONDAY,
              "end_time": time(9, 0), "source": Source.FILE, "key": "weekend"}
    values.update(overrides)
    return FreezeWindow.objects.create(**values)


def once(name: str, start: datetime, end: datetime, **overrides) -> FreezeWindow:
    values = {"name": name, "kind": FreezeKind.ONCE, "environments": ["production"], "starts_at": start,
              "ends_at": end}
    values.update(overrides)
    return FreezeWindow.objects.create(**values)


def local(*args: int, tz: ZoneInfo = SHANGHAI) -> datetime:
    return datetime(*args, tzinfo=tz)


def frozen_at(at: datetime, *, project: str = "shop-backend", environment: str = "production"):
    return freeze_find(names=[project], environment=environment, at=at)


# ---------------------------------------------------------------- 窗口的计算


@pytest.mark.parametrize(("at", "inside"), [
    (local(2026, 11, 27, 17, 59), False),  # 周五 17:59
    (local(2026, 11, 27, 18, 0), True),  # 周五 18:00 开始（含）
    (local(2026, 11, 28, 12, 0), True),  # 周六
    (local(2026, 11, 30, 8, 59), True),  # 周一 08:59
    (local(2026, 11, 30, 9, 0), False),  # 周一 09:00 结束（不含）
    (local(2026, 12, 2, 12, 0), False),  # 周三
])
def test_weekly_window_across_the_weekend_in_shanghai(at, inside):
    weekend()
    hit = frozen_at(at)
    assert (hit is not None) is inside
    if inside:
        assert hit.name == "周末封版" and hit.ends_at == local(2026, 11, 30, 9, 0)


def test_window_in_another_time_zone_uses_its_own_wall_clock_across_a_dst_change():
    # 纽约 2026-11-01（周日）夏令时结束：周五 18:00 是 EDT（UTC-4），周一 09:00 是 EST（UTC-5）
    weekend(timezone="America/New_York")
    shanghai_friday_evening = local(2026, 10, 30, 20, 0)  # 上海周五晚上，纽约才周五早上 08:00
    assert frozen_at(shanghai_friday_evening) is None
    hit = frozen_at(local(2026, 10, 30, 18, 0, tz=NEW_YORK))
    assert hit is not None and hit.starts_at == datetime(2026, 10, 30, 22, 0, tzinfo=UTC)
    assert hit.ends_at == datetime(2026, 11, 2, 14, 0, tzinfo=UTC)  # 墙上的 09:00 EST
    assert frozen_at(local(2026, 11, 2, 8, 59, tz=NEW_YORK)) is not None
    assert frozen_at(local(2026, 11, 2, 9, 0, tz=NEW_YORK)) is None
    # 上海没有夏令时：同一个窗口按上海时间每周都是同样的 UTC 时刻
    weekend(key="sh", name="上海周末")
    sh = freeze_find(names=["x"], environment="production", at=local(2026, 3, 9, 8, 0),
                     windows=list(FreezeWindow.objects.filter(key="sh")))
    assert sh.ends_at == datetime(2026, 3, 9, 1, 0, tzinfo=UTC)


def test_one_off_inside_a_recurring_window_reports_the_whole_freeze():
    weekend()
    christmas = once("圣诞封版", local(2026, 12, 26, 0, 0), local(2026, 12, 27, 0, 0))
    hit = frozen_at(local(2026, 12, 26, 12, 0))
    assert hit.name == "周末封版" and hit.ends_at == local(2026, 12, 28, 9, 0)
    assert set(hit.names) == {"周末封版", "圣诞封版"}
    # 一次性窗口比每周窗口结束得晚：报它，封版到它结束
    christmas.ends_at = local(2026, 12, 29, 18, 0)
    christmas.save()
    hit = frozen_at(local(2026, 12, 26, 12, 0))
    assert hit.name == "圣诞封版" and hit.ends_at == local(2026, 12, 29, 18, 0)


def test_windows_that_touch_are_one_freeze():
    weekend()
    once("周一起的发布冻结", local(2026, 11, 30, 9, 0), local(2026, 12, 2, 18, 0))
    hit = frozen_at(local(2026, 11, 28, 12, 0))
    assert hit.ends_at == local(2026, 12, 2, 18, 0) and hit.name == "周一起的发布冻结"


def test_environment_and_project_scope(shop_rule):
    weekend(projects=["shop-*"])
    saturday = local(2026, 11, 28, 12, 0)
    assert frozen_at(saturday) is not None
    assert frozen_at(saturday, project="folder/shop-web") is not None  # 带文件夹的任务名用最后一段
    assert frozen_at(saturday, project="pay-api") is None
    assert frozen_at(saturday, environment="test") is None
    weekend(key="all", name="全员封版", environments=["*"], projects=["pay-*"])
    assert frozen_at(saturday, project="pay-api", environment="test").name == "全员封版"


def test_inactive_windows_do_not_freeze_and_overview_lists_current_and_next():
    weekend()
    once("旧的", local(2026, 11, 28, 0, 0), local(2026, 11, 29, 0, 0), is_active=False)
    current, upcoming = freeze_overview(at=local(2026, 11, 28, 12, 0))
    assert [s.window.name for s in current] == ["周末封版"]
    assert upcoming[0].window.name == "周末封版" and upcoming[0].starts_at == local(2026, 12, 4, 18, 0)


# ---------------------------------------------------------------- 封版中的申请


def test_request_inside_a_freeze_is_recorded_and_refused_at_once(shop_rule, people):
    weekend()
    with time_machine.travel(local(2026, 11, 28, 12, 0), tick=False):
        approval, created = approval_create(job_name="shop-backend", build_number=7, environment="生产",
                                            requested_by="dave")
        again, created_again = approval_create(job_name="shop-backend", build_number=7, environment="生产")
    assert created and not created_again and again.pk == approval.pk
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.reason_code == "frozen"
    assert approval.freeze_name == "周末封版" and approval.freeze_ends_at == local(2026, 11, 30, 9, 0)
    assert "周末封版" in approval.reason and "2026-11-30 09:00" in approval.reason
    # 与拒绝一样中止 Jenkins
    assert approval.jenkins_action_state == JenkinsActionState.PENDING and approval.decided_at is not None
    kinds = list(approval.events.values_list("kind", flat=True))
    assert kinds == [EventKind.CREATED, EventKind.FROZEN]
    with pytest.raises(AlreadyDecided):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")


def test_request_outside_the_freeze_or_for_another_environment_waits(shop_rule):
    weekend()
    with time_machine.travel(local(2026, 11, 27, 17, 0), tick=False):
        before, _ = approval_create(job_name="shop-backend", build_number=1, environment="production")
    with time_machine.travel(local(2026, 11, 28, 12, 0), tick=False):
        test_env, _ = approval_create(job_name="shop-backend", build_number=2, environment="test")
    assert before.status == test_env.status == Status.PENDING
    assert before.reason_code == test_env.reason_code == ""


# ---------------------------------------------------------------- 紧急发布


def test_emergency_needs_a_reason_and_nothing_is_written(shop_rule):
    with pytest.raises(InvalidRequest) as caught:
        approval_create(job_name="shop-backend", build_number=9, environment="production", emergency=True,
                        emergency_reason="   ")
    assert caught.value.code == "emergency_reason_required" and caught.value.http_status == 400
    assert not ApprovalEvent.objects.exists()


def test_emergency_inside_a_freeze_needs_the_rule_approvals_plus_an_admin(shop_rule, people):
    weekend()
    with time_machine.travel(local(2026, 11, 28, 12, 0), tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=11, environment="production",
                                      requested_by="dave", emergency=True, emergency_reason="支付回调故障")
        assert approval.status == Status.PENDING and approval.emergency and approval.admin_approval_required
        assert approval.required_approvals == 3  # 生产规则 2 票 + 1 位管理员
        assert approval.freeze_name == "周末封版"
        bob = approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
        erin = approval_decide(approval=approval, approver=people["approver2"], decision="approve", channel="api")
        assert not bob.final and not erin.final and erin.missing == ("管理员",)
        alice = approval_decide(approval=approval, approver=people["admin"], decision="approve", channel="api")
    assert alice.final and alice.approval.status == Status.APPROVED
    override = ApprovalEvent.objects.get(approval=approval, kind=EventKind.EMERGENCY)
    assert override.details["reason"] == "支付回调故障" and override.details["window"] == "周末封版"
    audit = PolicyEvent.objects.get(kind=PolicyEventKind.FREEZE_OVERRIDE)
    assert audit.approval_public_id == approval.public_id and audit.actor == people["requester"]


def test_emergency_admin_slot_is_not_filled_by_the_requester_or_a_non_admin(shop_rule, people, roles):
    weekend()
    shop_rule.approvers.add(people["admin"])
    with time_machine.travel(local(2026, 11, 28, 12, 0), tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=12, environment="test",
                                      requested_by="alice", emergency=True, emergency_reason="回滚")
        # 测试环境不在封版里：紧急发布照常，只要规则的一票
        assert not approval.admin_approval_required and approval.required_approvals == 1
        prod, _ = approval_create(job_name="shop-backend", build_number=13, environment="production",
                                  requested_by="alice", emergency=True, emergency_reason="回滚")
        with pytest.raises(PermissionDenied) as caught:
            approval_decide(approval=prod, approver=people["admin"], decision="approve", channel="api")
        assert caught.value.code == "self_approval"
        approval_decide(approval=prod, approver=people["approver"], decision="approve", channel="api")
        outcome = approval_decide(approval=prod, approver=people["approver2"], decision="approve", channel="api")
    assert not outcome.final and outcome.missing == ("管理员",)  # 票数够了，管理员那一票还没有


# ---------------------------------------------------------------- 封版开始时的待审批


@pytest.mark.parametrize(("setting", "refused"), [("", False), ("wait", False), ("refuse", True)])
def test_pending_request_when_a_freeze_begins_follows_the_rule(shop_rule, people, setting, refused):
    shop_rule.freeze_pending = setting
    shop_rule.save()
    weekend()
    with time_machine.travel(local(2026, 11, 27, 17, 50), tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=21, environment="production")
        emergency, _ = approval_create(job_name="folder/shop-web", build_number=22, environment="production",
                                       emergency=True, emergency_reason="热修复")
        assert approvals_refuse_frozen() == []  # 还没封版
    with time_machine.travel(local(2026, 11, 27, 18, 1), tick=False):
        counts = policy_sweep_task()
        assert policy_sweep() == {"refused": 0, "escalated": 0}  # 再扫一次什么也不做
        approval.refresh_from_db()
        emergency.refresh_from_db()
        assert emergency.status == Status.PENDING  # 紧急发布不被拒绝
        assert counts["refused"] == int(refused)
        if refused:
            assert approval.status == Status.REJECTED and approval.reason_code == "frozen"
            assert approval.freeze_name == "周末封版"
            assert approval.jenkins_action_state == JenkinsActionState.PENDING
            assert approval.events.get(kind=EventKind.FROZEN).details["pending"] is True
        else:
            # wait：继续等待，照常可以决定
            assert approval.status == Status.PENDING and approval.reason_code == ""
            outcome = approval_decide(approval=approval, approver=people["approver"], decision="reject",
                                      channel="api")
            assert outcome.final


def test_app_default_for_pending_applies_when_the_rule_says_nothing(shop_rule, settings):
    from accounts.models import ConfigState

    ConfigState.objects.create(name="app", data={"freeze": {"pending": "refuse"}})
    weekend()
    with time_machine.travel(local(2026, 11, 27, 17, 50), tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=31, environment="production")
    assert approval.freeze_pending == "refuse"
    with time_machine.travel(local(2026, 11, 27, 18, 5), tick=False):
        assert approvals_refuse_frozen() == [approval.pk]


def test_a_second_vote_after_a_freeze_refusal_is_already_decided(shop_rule, people):
    shop_rule.freeze_pending = "refuse"
    shop_rule.save()
    weekend()
    with time_machine.travel(local(2026, 11, 27, 17, 50), tick=False):
        approval, _ = approval_create(job_name="shop-backend", build_number=41, environment="production")
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
    with time_machine.travel(local(2026, 11, 27, 18, 5), tick=False):
        approvals_refuse_frozen()
        with pytest.raises(AlreadyDecided) as caught:
            approval_decide(approval=approval, approver=people["approver2"], decision="approve", channel="api")
    assert "封版期间不能发布" in caught.value.message


def test_adhoc_freeze_from_the_service_is_audited_and_refuses(shop_rule, people):
    from accounts.errors import PolicyError
    from accounts.freeze import freeze_end, freeze_start

    with pytest.raises(PolicyError) as caught:
        freeze_start(actor=people["approver"], environment="production", minutes=60, reason="x", channel="telegram")
    assert caught.value.code == "not_admin" and not FreezeWindow.objects.exists()
    with time_machine.travel(local(2026, 11, 25, 10, 0), tick=False):
        window = freeze_start(actor=people["admin"], environment="生产", minutes=120, reason="数据库迁移",
                              channel="telegram")
        assert window.environments == ["production"] and window.ends_at == local(2026, 11, 25, 12, 0)
        refused, _ = approval_create(job_name="shop-backend", build_number=51, environment="production")
        assert refused.status == Status.REJECTED and refused.freeze_name == "临时封版"
    with time_machine.travel(local(2026, 11, 25, 11, 0), tick=False):
        assert [w.pk for w in freeze_end(actor=people["admin"], environment="production", channel="telegram")] == [
            window.pk]
        allowed, _ = approval_create(job_name="shop-backend", build_number=52, environment="production")
        assert allowed.status == Status.PENDING
    kinds = list(PolicyEvent.objects.order_by("id").values_list("kind", "actor__username"))
    assert kinds == [(PolicyEventKind.FREEZE_STARTED, "alice"), (PolicyEventKind.FREEZE_ENDED, "alice")]



def test_emergency_admin_slot_is_not_filled_through_a_delegation_from_an_admin(shop_rule, people):
    # 紧急发布要的是一位管理员本人点头：管理员把审批权委托给非管理员，受托人的票只算审批票，不算这一位
    from datetime import timedelta

    from accounts.delegations import delegation_grant

    weekend()
    at = local(2026, 11, 28, 12, 0)
    with time_machine.travel(at, tick=False):
        delegation_grant(delegator=people["admin"], delegate=people["outsider"], starts_at=at - timedelta(hours=1),
                         ends_at=at + timedelta(days=2), channel="telegram")
        approval, _ = approval_create(job_name="shop-backend", build_number=14, environment="production",
                                      requested_by="dave", emergency=True, emergency_reason="支付回调故障")
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
        approval_decide(approval=approval, approver=people["approver2"], decision="approve", channel="api")
        outcome = approval_decide(approval=approval, approver=people["outsider"], decision="approve",
                                  channel="telegram")
    assert outcome.vote.on_behalf_of == people["admin"]  # 代管理员投的票照样记下
    assert not outcome.final and outcome.missing == ("管理员",)
    assert outcome.approval.status == Status.PENDING


def test_refuse_sweep_is_not_starved_by_pending_requests_outside_any_window(shop_rule):
    # 以前每轮只看前 limit 条（并把它们都锁住）：前面的都不在封版里时，后面真在封版里的永远轮不到
    shop_rule.freeze_pending = "refuse"
    shop_rule.save()
    weekend()  # 只封生产
    with time_machine.travel(local(2026, 11, 27, 17, 50), tick=False):
        outside = [approval_create(job_name=f"folder/shop-{n}", build_number=n, environment="test")[0]
                   for n in range(1, 6)]
        inside, _ = approval_create(job_name="folder/shop-9", build_number=9, environment="production")
    with time_machine.travel(local(2026, 11, 27, 18, 1), tick=False):
        assert approvals_refuse_frozen(limit=3) == [inside.pk]
    assert all(a.status == Status.PENDING for a in Approval.objects.filter(pk__in=[a.pk for a in outside]))
