"""提醒与超时扫描：冻结时钟、批量查询数有上限、并发扫描只发一次、决定与超时只一个赢。"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from approvals.models import Approval, ApprovalEvent, EventKind, JenkinsActionState, Status
from approvals.sweeps import approvals_claim_due_reminders, approvals_expire_due
from approvals.tasks import reminder_sweep_task, timeout_sweep_task
from jenkins_bridge.models import JenkinsServer
from tests.concurrency import run_together
from tests.fake_telegram import FakeTelegram


def bulk_pending(n: int, *, chat_id: int | None = -100, due_in: timedelta = timedelta(0), expires_in=timedelta(hours=1),
                 policy: str = "reject") -> list[Approval]:
    server = JenkinsServer.objects.default()
    now = timezone.now()
    Approval.objects.bulk_create(
        [
            Approval(public_id=f"B{i:07d}", jenkins_server=server, job_name="bulk-job", build_number=i,
                     project="bulk", environment="test", expires_at=now + expires_in,
                     next_reminder_at=now + due_in, chat_id=chat_id if i % 3 else -200,
                     reminder_policy={"interval_minutes": 5, "backoff": 1.5, "max_count": 6},
                     timeout_policy=policy)
            for i in range(n)
        ],
        batch_size=500,
    )
    return list(Approval.objects.filter(job_name="bulk-job"))


@pytest.mark.django_db
def test_reminder_sweep_sends_due_ones_once_and_reschedules(shop_rule, make_approval):
    approval = make_approval()
    first_due = approval.next_reminder_at
    assert approvals_claim_due_reminders() == {}  # 还没到时间
    with time_machine.travel(first_due + timedelta(seconds=1), tick=False):
        claimed = approvals_claim_due_reminders()
        assert claimed == {approval.chat_id: [approval.pk]}
        assert approvals_claim_due_reminders() == {}  # 同一时刻再扫一次不重复
    approval.refresh_from_db()
    assert approval.reminder_count == 1
    assert approval.next_reminder_at == first_due + timedelta(minutes=7.5)
    event = ApprovalEvent.objects.get(approval=approval, kind=EventKind.REMINDER)
    assert event.details["number"] == 1


@pytest.mark.django_db
def test_reminders_grouped_per_chat_for_a_digest():
    bulk_pending(9)
    claimed = approvals_claim_due_reminders()
    assert sorted(claimed) == [-200, -100]
    assert len(claimed[-200]) == 3 and len(claimed[-100]) == 6


@pytest.mark.django_db
def test_decided_or_expired_approvals_are_never_reminded(shop_rule, people, make_approval):
    from approvals.services import approval_decide

    decided = make_approval()
    approval_decide(approval=decided, approver=people["approver"], decision="approve", channel="api")
    decided.refresh_from_db()
    assert decided.next_reminder_at is None
    expired = make_approval()
    with time_machine.travel(expired.expires_at + timedelta(minutes=1), tick=False):
        assert approvals_claim_due_reminders() == {}


@pytest.mark.django_db
def test_max_count_respected_over_the_whole_lifetime(shop_rule, make_approval):
    approval = make_approval(timeout_minutes=24 * 60)
    sent = 0
    moment = approval.created_at
    for _ in range(200):
        moment += timedelta(minutes=1)
        with time_machine.travel(moment, tick=False):
            sent += sum(len(ids) for ids in approvals_claim_due_reminders().values())
    approval.refresh_from_db()
    assert sent == 6 == approval.reminder_count
    assert approval.next_reminder_at is None


@pytest.mark.django_db
def test_timeout_sweep_reject_and_mark_policies(shop_rule, make_approval):
    reject = make_approval()
    shop_rule.timeout_policy = "mark"
    shop_rule.save()
    mark = make_approval(environment="staging")
    with time_machine.travel(reject.expires_at + timedelta(seconds=1), tick=False):
        expired = approvals_expire_due()
        assert sorted(expired) == sorted([reject.pk, mark.pk])
        assert approvals_expire_due() == []
    reject.refresh_from_db()
    mark.refresh_from_db()
    assert reject.status == mark.status == Status.TIMEOUT
    assert reject.jenkins_action_state == JenkinsActionState.PENDING
    assert mark.jenkins_action_state == JenkinsActionState.NONE
    assert reject.decided_at is not None and reject.next_reminder_at is None
    assert ApprovalEvent.objects.filter(kind=EventKind.TIMEOUT).count() == 2


@pytest.mark.django_db
def test_one_sweep_over_2000_due_rows_has_bounded_query_count(django_assert_max_num_queries, settings):
    settings.TELEGRAM_BOT_TOKEN = "123456:test"  # 没有机器人时不提醒（见 test_reminders_without_telegram）
    bulk_pending(2000)
    # 每批 500 行只用 3 条查询（锁行、批量更新、批量写历史），与行数无关；
    # 测试事务里每批另有 SAVEPOINT/RELEASE 两条，末尾还有一次空批确认：4×5 + 3 = 23
    with django_assert_max_num_queries(23):
        assert reminder_sweep_task() == 2000
    with time_machine.travel(timezone.now() + timedelta(hours=2), tick=False):
        with django_assert_max_num_queries(23):
            assert timeout_sweep_task() == 2000
    assert Approval.objects.filter(status=Status.TIMEOUT).count() == 2000


mysql_only = pytest.mark.skipif(connection.vendor != "mysql", reason="并发扫描只在 MySQL/MariaDB 上有意义")


def _run_threads(target, n: int = 2) -> None:
    run_together([target] * n)


@mysql_only
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_reminder_sweeps_send_each_once(settings):
    # 摘要真的发出去（对着假 Bot API）：每个群都收到了，没有哪条审批被提醒两次
    from telegram_bot.sender import close_http_clients

    fake = FakeTelegram().start()
    try:
        settings.TELEGRAM_BOT_TOKEN = fake.token
        settings.TELEGRAM_API_URL = fake.url
        settings.TELEGRAM_PROXY_URL = ""
        settings.TELEGRAM_PACING_GROUP_SECONDS = settings.TELEGRAM_PACING_GLOBAL_SECONDS = 0
        for chat in (-100, -200):
            fake.add_group(chat, f"群 {chat}")
        bulk_pending(1200)
        _run_threads(reminder_sweep_task)
        assert set(Approval.objects.values_list("reminder_count", flat=True)) == {1}
        assert ApprovalEvent.objects.filter(kind=EventKind.REMINDER).count() == 1200
        assert fake.chat_messages(-100) and fake.chat_messages(-200)
    finally:
        fake.stop()
        close_http_clients()


@mysql_only
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_timeout_sweeps_expire_each_once():
    bulk_pending(1200, expires_in=timedelta(seconds=-1), due_in=timedelta(hours=1))
    _run_threads(timeout_sweep_task)
    assert Approval.objects.filter(status=Status.TIMEOUT).count() == 1200
    assert ApprovalEvent.objects.filter(kind=EventKind.TIMEOUT).count() == 1200
