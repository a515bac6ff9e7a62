"""H7：无论怎样赛跑（连点、两个审批人、超时扫描），决定只落库一次。

真实线程 + 真实事务，只在 MySQL/MariaDB 上跑：SQLite 会把写事务整体串行化，证明不了行锁与条件更新。
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals.errors import AlreadyDecided, ApprovalError
from approvals.models import Approval, ApprovalEvent, EventKind, Status, Vote
from approvals.services import approval_create, approval_decide
from approvals.sweeps import approvals_expire_due
from tests.concurrency import run_together

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.mysql,
    pytest.mark.skipif(connection.vendor != "mysql", reason="行锁竞争只在 MySQL/MariaDB 上有意义"),
]

TERMINAL_EVENTS = {EventKind.APPROVED, EventKind.REJECTED, EventKind.TIMEOUT, EventKind.CANCELLED}


def run_concurrently(calls: list) -> list:
    return run_together(calls, expected=(ApprovalError,))


def terminal_events(approval: Approval) -> list[ApprovalEvent]:
    return list(ApprovalEvent.objects.filter(approval=approval, kind__in=TERMINAL_EVENTS))


def test_twenty_threads_mixed_approve_reject_two_approvers_one_outcome(shop_rule, people):
    shop_rule.approvers.add(people["approver2"])
    approval, _ = approval_create(job_name="shop-backend", build_number=1, environment="test")
    who = [people["approver"], people["approver2"]]
    calls = [
        (lambda i=i: approval_decide(approval=approval.pk, approver=who[i % 2],
                                     decision="approve" if i % 3 else "reject", channel="telegram"))
        for i in range(20)
    ]
    results = run_concurrently(calls)

    approval.refresh_from_db()
    assert approval.status in (Status.APPROVED, Status.REJECTED)
    assert len(terminal_events(approval)) == 1
    assert Vote.objects.filter(approval=approval).count() == 1
    winners = [r for r in results if r[0] == "ok"]
    assert len(winners) == 1 and winners[0][1].final
    losers = [r[1] for r in results if r[0] == "error"]
    assert len(losers) == 19
    # 输家都被告知谁、何时决定的（“已由 X 于 T …”）
    assert all(isinstance(e, AlreadyDecided) and approval.decided_by_name in e.message for e in losers)


def test_two_of_two_with_concurrent_votes_records_both_votes_once(shop_rule, people):
    approval, _ = approval_create(job_name="shop-backend", build_number=2, environment="production")
    who = [people["approver"], people["approver2"]]
    calls = [
        (lambda i=i: approval_decide(approval=approval.pk, approver=who[i % 2], decision="approve",
                                     channel="telegram"))
        for i in range(20)
    ]
    results = run_concurrently(calls)
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED
    assert Vote.objects.filter(approval=approval).count() == 2
    assert len(terminal_events(approval)) == 1
    assert Counter(r[0] for r in results)["ok"] == 2


def test_decisions_racing_the_timeout_sweep_one_winner(shop_rule, people):
    shop_rule.approvers.add(people["approver2"])
    who = [people["approver"], people["approver2"]]
    for attempt in range(5):
        approval, _ = approval_create(job_name="shop-backend", build_number=100 + attempt, environment="test")
        # 截止时间就在此刻：决定与超时扫描同时抢
        deadline = timezone.now() + timedelta(milliseconds=50)
        Approval.objects.filter(pk=approval.pk).update(expires_at=deadline)
        pk, sweep_time = approval.pk, deadline + timedelta(seconds=1)
        calls = []
        for i in range(20):
            if i % 2:
                calls.append(lambda i=i, pk=pk: approval_decide(approval=pk, approver=who[i % 4 // 2],
                                                                decision="approve", channel="telegram"))
            else:
                calls.append(lambda at=sweep_time: approvals_expire_due(now=at))  # 生产用的超时扫描
        run_concurrently(calls)
        approval.refresh_from_db()
        assert approval.status in (Status.APPROVED, Status.TIMEOUT)
        assert len(terminal_events(approval)) == 1
        if approval.status == Status.TIMEOUT:
            assert not Vote.objects.filter(approval=approval).exists()


def test_concurrent_identical_create_calls_make_one_approval(shop_rule):
    calls = [
        (lambda: approval_create(job_name="shop-backend", build_number=77, environment="test", input_id="Deploy"))
        for _ in range(10)
    ]
    results = run_concurrently(calls)
    assert Approval.objects.filter(build_number=77).count() == 1
    ids = {r[1][0].pk for r in results}
    assert len(ids) == 1
    assert sum(1 for r in results if r[1][1]) == 1  # 恰好一个调用者看到 created=True


def test_chinese_and_emoji_round_trip(shop_rule):
    text = "修复 🚀 支付回调；𠮷野家 ✅ 「生产」发布\n第二行"
    approval, _ = approval_create(job_name="商城/后端-服务", build_number=3, environment="生产",
                                  description=text, operation="灰度发布 🔥", version="v2.0-β")
    fresh = Approval.objects.get(pk=approval.pk)
    assert fresh.description == text and fresh.operation == "灰度发布 🔥" and fresh.version == "v2.0-β"
    assert fresh.job_name == "商城/后端-服务"


@pytest.mark.parametrize("trial", range(3))
def test_twenty_concurrent_identical_creates_all_succeed_with_one_row(shop_rule, trial):
    """20 个相同的创建同时到达（流水线重试、两个 Jenkins 副本）：一行，人人拿到同一条，没有死锁、没有错误。"""
    calls = [
        (lambda: approval_create(job_name="shop-backend", build_number=500 + trial, environment="production"))
        for _ in range(20)
    ]
    results = run_together(calls)  # 任何异常（含 MariaDB 的死锁 1213）都让测试失败
    assert Approval.objects.filter(build_number=500 + trial).count() == 1
    assert len({r[1][0].pk for r in results}) == 1
    assert sum(1 for r in results if r[1][1]) == 1


@pytest.mark.parametrize("trial", range(3))
def test_twenty_concurrent_builds_leave_only_the_newest_pending(shop_rule, trial):
    """同一任务同一环境的构建 1..20 同时申请：只有最新的那条待审批，其余都被取代并指向取代它的更新构建。"""
    job = f"shop-backend-{trial}"
    calls = [(lambda n=n: approval_create(job_name=job, build_number=n, environment="test")) for n in range(1, 21)]
    run_together(calls)
    rows = list(Approval.objects.filter(job_name=job).select_related("superseded_by"))
    assert len(rows) == 20
    pending = [a for a in rows if a.status == Status.PENDING]
    assert [a.build_number for a in pending] == [20]
    for approval in rows:
        if approval.build_number == 20:
            continue
        assert approval.status == Status.CANCELLED
        assert approval.superseded_by is not None and approval.superseded_by.build_number > approval.build_number
        assert ApprovalEvent.objects.filter(approval=approval, kind=EventKind.SUPERSEDED).count() == 1
