"""发件箱的补发（构建结果通知为例）：投递丢了、worker 死在发送途中，补发扫描都会补上，而且只补一次；
已送达、永久失败、重试用尽的不再打扰 Telegram。全部对着假 Bot API 的真实 HTTP。"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from approvals.builds import build_result_record
from approvals.models import Approval, ApprovalEvent, BuildResult, EventKind
from approvals.services import approval_decide
from telegram_bot.models import MessageKind, MessageState, TelegramMessage
from telegram_bot.notices.build_results import build_result_enqueue
from telegram_bot.outbox import LEASE_SECONDS, MAX_ATTEMPTS, outbox_claim
from telegram_bot.tasks import build_result_notify_task, outbox_deliver, telegram_recovery_sweep_task
from tests.concurrency import run_together
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved(shop_rule, people, make_approval, django_capture_on_commit_callbacks):
    """一条已同意的测试环境审批，审批消息已在群里。"""
    with django_capture_on_commit_callbacks(execute=True):
        approval = make_approval(build_number=321)
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    return Approval.objects.get(pk=approval.pk)


def lost_enqueue(**kwargs) -> BuildResult:
    """Jenkins 回报了结果，但提交后投递通知任务时 broker 不可用：任务丢了（on_commit 回调没有执行）。"""
    result, created = build_result_record(**kwargs)
    assert created
    return result


def worker_claims_and_dies(result: BuildResult) -> TelegramMessage:
    """通知任务把结果放进发件箱、认领了它（与真实任务同一个认领），随后 worker 被杀：既没发出，也没放开。"""
    row = build_result_enqueue(result.pk)
    [claimed] = outbox_claim([row.pk], due_only=False)
    return claimed


def age(result: BuildResult, *, received: timedelta) -> None:
    """把“收到”挪到过去，代替真的等上几分钟。"""
    BuildResult.objects.filter(pk=result.pk).update(received_at=timezone.now() - received)


def result_notices(fake) -> list:
    return [m for m in fake.chat_messages(GROUP_ID) if "耗时" in m.text]


def row_of(result: BuildResult) -> TelegramMessage:
    return TelegramMessage.objects.get(kind=MessageKind.BUILD_RESULT, build_result=result)


@pytest.fixture
def sweep(django_capture_on_commit_callbacks):
    """跑一次 Telegram 补发扫描，返回它处理了哪些构建结果（补建的与补发的）。"""

    def run(*, execute: bool = True) -> list[int]:
        with django_capture_on_commit_callbacks(execute=execute):
            found = telegram_recovery_sweep_task()
        redelivered = TelegramMessage.objects.filter(pk__in=found["deliver"], kind=MessageKind.BUILD_RESULT)
        return found["build_results"] + list(redelivered.values_list("build_result_id", flat=True))

    return run


def test_a_lost_notice_is_delivered_by_the_sweep_exactly_once(fake_tg, approved, sweep):
    result = lost_enqueue(job_name="shop-backend", build_number=321, result="SUCCESS", duration_ms=1000)
    assert result_notices(fake_tg) == []
    # 刚收到的不动：提交后投递的任务可能还在路上
    assert sweep() == []

    age(result, received=timedelta(minutes=3))
    assert sweep() == [result.pk]
    [notice] = result_notices(fake_tg)
    approval_message = TelegramMessage.objects.get(approval=approved, kind=MessageKind.APPROVAL)
    assert notice.message["reply_to_message"]["message_id"] == approval_message.message_id
    assert notice.text.startswith("✅ 构建成功 · shop-backend #321")
    row = row_of(result)
    assert (row.state, row.chat_id, row.message_id) == (MessageState.SENT, GROUP_ID, notice.message["message_id"])
    assert row.sent_at and row.attempts == 1
    # 投递的来龙去脉在发件箱里，审批历史里没有
    assert not ApprovalEvent.objects.filter(approval=approved, kind__in=[EventKind.NOTIFIED,
                                                                         EventKind.NOTIFY_FAILED]).exists()

    # 之后的扫描、迟到的原任务都不会再发
    assert sweep() == []
    build_result_notify_task.delay(result.pk)
    assert len(result_notices(fake_tg)) == 1


def test_a_notice_whose_worker_died_is_resent_once_after_its_lease_expires(fake_tg, shop_rule, sweep):
    result = lost_enqueue(job_name="folder/shop-nightly", build_number=77, result="SUCCESS")
    worker_claims_and_dies(result)

    # 租约还没到期：任务可能还活着，不动
    with time_machine.travel(timezone.now() + timedelta(seconds=LEASE_SECONDS - 5), tick=False):
        assert sweep() == []
    assert result_notices(fake_tg) == []

    with time_machine.travel(timezone.now() + timedelta(seconds=LEASE_SECONDS + 5), tick=False):
        assert sweep() == [result.pk]
        [notice] = result_notices(fake_tg)
        assert notice.text.startswith("✅ 构建成功 · shop-backend #77")
        assert sweep() == []
    assert len(result_notices(fake_tg)) == 1
    row = row_of(result)
    assert (row.message_id, row.attempts) == (notice.message["message_id"], 2)  # 死掉的那次也算一次尝试


def test_a_delivered_notice_is_never_resent(fake_tg, approved, sweep, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result, _created = build_result_record(job_name="shop-backend", build_number=321, result="FAILURE")
    assert len(result_notices(fake_tg)) == 1
    # Jenkins 对同一构建又回报了一次（更新而不是新建）：送达记录不受影响
    with django_capture_on_commit_callbacks(execute=True):
        build_result_record(job_name="shop-backend", build_number=321, result="FAILURE")
    age(result, received=timedelta(hours=1))
    assert row_of(result).state == MessageState.SENT

    # 一天前的结果从没通知过（当时还没配置 Telegram）：已过时，不补发
    stale = lost_enqueue(job_name="folder/shop-older", build_number=6, result="SUCCESS")
    age(stale, received=timedelta(days=2))

    assert sweep() == [] and sweep() == []
    assert len(result_notices(fake_tg)) == 1
    assert len(fake_tg.calls_to("sendMessage")) == 2  # 审批消息 + 这一条结果通知


@pytest.mark.parametrize("fault", ["kicked", "gave_up"])
def test_a_permanently_failed_or_given_up_notice_is_not_retried(fake_tg, shop_rule, make_approval, sweep, fault,
                                                                django_capture_on_commit_callbacks):
    make_approval(build_number=40)
    if fault == "kicked":
        fake_tg.kick(GROUP_ID)
    else:
        fake_tg.server_error("sendMessage", times=100)
    with django_capture_on_commit_callbacks(execute=True):
        result, _created = build_result_record(job_name="shop-backend", build_number=40, result="SUCCESS")
    calls = len(fake_tg.calls_to("sendMessage"))
    assert calls == (1 if fault == "kicked" else MAX_ATTEMPTS)
    row = row_of(result)
    assert row.state == MessageState.FAILED
    if fault == "kicked":
        assert (row.error_code, row.permanent) == ("forbidden", True)
    else:
        assert (row.error_code, row.permanent, row.attempts) == ("server_error", False, MAX_ATTEMPTS)

    # Telegram 恢复了，时间也过去了很久：扫描仍不重试（永久失败不可能成功；重试用尽已经说明过）
    fake_tg.faults.clear()
    fake_tg.kicked.clear()
    age(result, received=timedelta(hours=1))
    with time_machine.travel(timezone.now() + timedelta(hours=1), tick=False):
        assert sweep() == []
    assert len(fake_tg.calls_to("sendMessage")) == calls


def test_back_to_back_sweeps_requeue_and_send_once(fake_tg, shop_rule, django_capture_on_commit_callbacks):
    result = lost_enqueue(job_name="folder/shop-nightly", build_number=78, result="SUCCESS")
    age(result, received=timedelta(minutes=3))
    # 第一次扫描投递的任务还在队列里，下一次扫描（30 秒后）就到了：不再投递第二个
    with django_capture_on_commit_callbacks(execute=False) as first:
        assert telegram_recovery_sweep_task()["build_results"] == [result.pk]
    with django_capture_on_commit_callbacks(execute=False) as second:
        found = telegram_recovery_sweep_task()
        assert found["build_results"] == [] and found["deliver"] == []
    assert (len(first), len(second)) == (1, 0)
    first[0]()
    # 原来那个丢了的任务其实也只是迟到了：认领保证只发一次
    build_result_notify_task.delay(result.pk)
    assert len(result_notices(fake_tg)) == 1


def test_a_notice_waiting_for_its_own_retry_is_left_alone_until_the_retry_is_due(fake_tg, shop_rule, sweep):
    result = lost_enqueue(job_name="folder/shop-nightly", build_number=79, result="SUCCESS")
    fake_tg.server_error("sendMessage", times=1)
    row = build_result_enqueue(result.pk)
    countdown = outbox_deliver(outbox_claim([row.pk], due_only=False))  # 任务的第一次尝试：502
    assert countdown is not None and countdown >= 4
    row.refresh_from_db()
    assert (row.state, row.error_code, row.attempts) == (MessageState.PENDING, "server_error", 1)
    age(result, received=timedelta(minutes=5))
    assert sweep() == []  # 重试在路上：扫描再投一个只会多一条重试链

    # 重试始终没来（例如 broker 丢了重试消息）：到了行上记的重试时间，扫描接手
    with time_machine.travel(row.next_attempt_at + timedelta(seconds=1), tick=False):
        assert sweep() == [result.pk]
    assert len(result_notices(fake_tg)) == 1
    assert [c.status for c in fake_tg.calls_to("sendMessage")] == [502, 200]


def test_recovery_gives_up_when_workers_keep_dying(fake_tg, approved, sweep):
    result = lost_enqueue(job_name="shop-backend", build_number=321, result="SUCCESS")
    worker_claims_and_dies(result)
    moment = timezone.now()
    for _round in range(MAX_ATTEMPTS - 1):
        moment += timedelta(seconds=LEASE_SECONDS + 1)
        with time_machine.travel(moment, tick=False):
            assert sweep(execute=False) == [result.pk]  # 再交给一个任务……它也死了
    assert row_of(result).attempts == MAX_ATTEMPTS
    with time_machine.travel(moment + timedelta(seconds=LEASE_SECONDS + 1), tick=False):
        assert sweep() == []
    row = row_of(result)
    assert (row.state, row.error_code, row.permanent) == (MessageState.FAILED, "attempts_exhausted", False)
    assert result_notices(fake_tg) == []


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="并发只在 MySQL/MariaDB 上有意义")
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_resend_a_dead_claim_once(fake_tg, shop_rule, settings):
    settings.TELEGRAM_BOT_TOKEN = ""  # 收到结果时 Telegram 还没配置：通知任务跳过
    result = lost_enqueue(job_name="folder/shop-nightly", build_number=80, result="SUCCESS")
    settings.TELEGRAM_BOT_TOKEN = fake_tg.token
    worker_claims_and_dies(result)
    # 认领是几分钟前的事，租约早已过期
    TelegramMessage.objects.filter(build_result=result).update(created_at=timezone.now() - timedelta(minutes=5),
                                                                lease_until=timezone.now() - timedelta(seconds=1))
    fake_tg.delay("sendMessage", 0.3)  # 让竞争窗口足够大
    results = run_together([lambda: telegram_recovery_sweep_task()["deliver"]] * 6)
    assert [pk for _status, delivered in results for pk in delivered] == [row_of(result).pk]
    assert len(fake_tg.ok_calls("sendMessage")) == 1
    assert row_of(result).chat_id == GROUP_ID
