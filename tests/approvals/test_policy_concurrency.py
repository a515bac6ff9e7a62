"""委托双方同时投票（X16、H7）：真实线程、真实事务，只落一个结果。只在 MySQL/MariaDB 上跑。"""

# covers X16

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.delegations import delegation_grant
from approvals.errors import AlreadyDecided, AlreadyVoted, ApprovalError
from approvals.models import ApprovalEvent, EventKind, Status, Vote
from approvals.services import approval_create, approval_decide
from tests.concurrency import run_together

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.mysql,
    pytest.mark.skipif(connection.vendor != "mysql", reason="行锁竞争只在 MySQL/MariaDB 上有意义"),
]


@pytest.fixture
def delegated(shop_rule, people):
    now = timezone.now()
    delegation_grant(delegator=people["approver"], delegate=people["outsider"], starts_at=now - timedelta(hours=1),
                     ends_at=now + timedelta(days=3), channel="telegram")
    return people


def decide(approval, person, decision="approve"):
    return lambda: approval_decide(approval=approval.pk, approver=person, decision=decision, channel="telegram")


@pytest.mark.parametrize("rounds", range(3))
def test_delegator_and_delegate_voting_at_once_count_once(delegated, rounds):
    approval, _ = approval_create(job_name="shop-backend", build_number=100 + rounds, environment="production")
    calls = [decide(approval, delegated["approver"]), decide(approval, delegated["outsider"])] * 3
    results = run_together(calls, expected=(ApprovalError,))

    assert Vote.objects.filter(approval=approval).count() == 1
    ok = [r for r in results if r[0] == "ok"]
    assert len(ok) == 1 and not ok[0][1].final  # 生产要两票：合算一人的两人只算一票
    assert all(isinstance(r[1], AlreadyVoted) for r in results if r[0] == "error")
    approval.refresh_from_db()
    assert approval.status == Status.PENDING


def test_approve_and_reject_by_delegator_and_delegate_give_one_outcome(delegated):
    approval, _ = approval_create(job_name="shop-backend", build_number=200, environment="test")
    calls = [decide(approval, delegated["approver"], "approve"), decide(approval, delegated["outsider"], "reject"),
             decide(approval, delegated["outsider"], "approve"), decide(approval, delegated["approver"], "reject")]
    results = run_together(calls, expected=(ApprovalError,))

    approval.refresh_from_db()
    assert approval.status in (Status.APPROVED, Status.REJECTED)
    assert Vote.objects.filter(approval=approval).count() == 1
    terminal = ApprovalEvent.objects.filter(approval=approval, kind__in=[EventKind.APPROVED, EventKind.REJECTED])
    assert terminal.count() == 1
    assert len([r for r in results if r[0] == "ok"]) == 1
    assert all(isinstance(r[1], (AlreadyDecided, AlreadyVoted)) for r in results if r[0] == "error")
