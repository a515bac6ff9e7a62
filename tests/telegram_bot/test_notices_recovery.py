"""构建结果通知至少送达一次：投递丢了、worker 死在发送途中，补发扫描都会补上，而且只补一次；
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
from jenkins_bridge.models import JenkinsServer
from telegram_bot import notices
from telegram_bot.models import MessageKind, TelegramMessage
from telegram_bot.notices import (
    RESULT_MAX_RECOVERIES,
    build_result_notice_send,
    build_result_notify_task,
    build_result_recover,
)
from telegram_bot.sender import TelegramSendError
from telegram_bot.tasks import MAX_RETRIES, telegram_recovery_sweep_task
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


def worker_claims_and_dies(result: BuildResult) -> None:
    """通知任务认领了这条结果（与真实任务同一个认领），随后 worker 被杀：既没发出，也没放开认领。"""
    assert notices._result_claim(result.pk) is not None


def age(result: BuildResult, *, received: timedelta, notified: timedelta | None = None) -> None:
    """把“收到”与“认领”挪到过去，代替真的等上几分钟。"""
    now = timezone.now()
    values = {"received_at": now - received}
    if notified is not None:
        values["notified_at"] = now - notified
    BuildResult.objects.filter(pk=result.pk).update(**values)


def result_notices(fake) -> list:
    return [m for m in fake.chat_messages(GROUP_ID) if "耗时" in m.text]


@pytest.fixture
def sweep(django_capture_on_commit_callbacks):
    """跑一次 Telegram 补发扫描；execute=False 时投递的任务留在“队列”里（回调收集起来不执行）。"""

    def run(*, execute: bool = True) -> list[int]:
        with django_capture_on_commit_callbacks(execute=execute):
            found = telegram_recovery_sweep_task()
        return found["build_results"]

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
    result.refresh_from_db()
    delivered = result.details["notice"]
    assert (delivered["chat_id"], delivered["message_id"]) == (GROUP_ID, notice.message["message_id"])
    assert delivered["sent_at"]
    assert ApprovalEvent.objects.filter(approval=approved, kind=EventKind.NOTIFIED,
                                        details__notice="build_result").count() == 1

    # 之后的扫描、迟到的原任务都不会再发
    assert sweep() == []
    build_result_notify_task.delay(result.pk)
    assert len(result_notices(fake_tg)) == 1


def test_a_notice_whose_worker_died_is_resent_once_after_ten_minutes(fake_tg, shop_rule, sweep):
    result = lost_enqueue(job_name="folder/shop-nightly", build_number=77, result="SUCCESS")
    worker_claims_and_dies(result)

    # 5 分钟前的认领：任务可能还活着（硬超时 90 秒，不过不做假设），不动
    age(result, received=timedelta(minutes=6), notified=timedelta(minutes=5))
    assert sweep() == []
    assert result_notices(fake_tg) == []

    age(result, received=timedelta(minutes=16), notified=timedelta(minutes=15))
    assert sweep() == [result.pk]
    [notice] = result_notices(fake_tg)
    assert notice.text.startswith("✅ 构建成功 · shop-backend #77")
    assert sweep() == []
    assert len(result_notices(fake_tg)) == 1
    result.refresh_from_db()
    assert result.details["notice"]["message_id"] == notice.message["message_id"]
    assert (result.details["notice_attempt"]["attempts"], result.details["notice_attempt"]["recovered"]) == (2, 1)


def test_a_delivered_notice_is_never_resent(fake_tg, approved, sweep, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result, _created = build_result_record(job_name="shop-backend", build_number=321, result="FAILURE")
    assert len(result_notices(fake_tg)) == 1
    # Jenkins 对同一构建又回报了一次（更新而不是新建）：送达记录不会被冲掉
    with django_capture_on_commit_callbacks(execute=True):
        build_result_record(job_name="shop-backend", build_number=321, result="FAILURE")
    age(result, received=timedelta(hours=1), notified=timedelta(hours=1))
    result.refresh_from_db()
    assert result.details["notice"]["chat_id"] == GROUP_ID

    # 升级前就通知过的结果只有 notified_at、没有任何记录：那不是死掉的认领，不补发
    legacy = BuildResult.objects.create(jenkins_server=JenkinsServer.objects.default(), job_name="folder/shop-old",
                                        build_number=5, result="SUCCESS", notified_at=timezone.now())
    age(legacy, received=timedelta(hours=2), notified=timedelta(hours=2))
    # 一天前的结果从没通知过（当时还没配置 Telegram）：已过时，不补发
    stale = lost_enqueue(job_name="folder/shop-older", build_number=6, result="SUCCESS")
    age(stale, received=timedelta(days=2))

    assert sweep() == [] and sweep() == []
    assert len(result_notices(fake_tg)) == 1
    assert len(fake_tg.calls_to("sendMessage")) == 2  # 审批消息 + 这一条结果通知


@pytest.mark.parametrize("fault", ["kicked", "gave_up"])
def test_a_permanently_failed_or_given_up_notice_is_not_retried(fake_tg, shop_rule, make_approval, sweep, fault,
                                                                django_capture_on_commit_callbacks):
    approval = make_approval(build_number=40)
    if fault == "kicked":
        fake_tg.kick(GROUP_ID)
    else:
        fake_tg.server_error("sendMessage", times=100)
    with django_capture_on_commit_callbacks(execute=True):
        result, _created = build_result_record(job_name="shop-backend", build_number=40, result="SUCCESS")
    calls = len(fake_tg.calls_to("sendMessage"))
    assert calls == (1 if fault == "kicked" else MAX_RETRIES + 1)
    result.refresh_from_db()
    error = result.details["notify_error"]
    if fault == "kicked":
        assert (error["code"], error["permanent"]) == ("forbidden", True)
    else:
        assert (error["code"], error["gave_up"]) == ("server_error", True)
    assert ApprovalEvent.objects.get(approval=approval, kind=EventKind.NOTIFY_FAILED).details["code"] == error["code"]

    # Telegram 恢复了，时间也过去了很久：扫描仍不重试（永久失败不可能成功；重试用尽已经说明过）
    fake_tg.faults.clear()
    fake_tg.kicked.clear()
    age(result, received=timedelta(hours=1), notified=timedelta(hours=1))
    assert sweep() == []
    assert len(fake_tg.calls_to("sendMessage")) == calls


def test_back_to_back_sweeps_requeue_and_send_once(fake_tg, shop_rule, django_capture_on_commit_callbacks):
    result = lost_enqueue(job_name="folder/shop-nightly", build_number=78, result="SUCCESS")
    age(result, received=timedelta(minutes=3))
    # 第一次扫描投递的任务还在队列里，下一次扫描（30 秒后）就到了：不再投递第二个
    with django_capture_on_commit_callbacks(execute=False) as first:
        assert telegram_recovery_sweep_task()["build_results"] == [result.pk]
    with django_capture_on_commit_callbacks(execute=False) as second:
        assert telegram_recovery_sweep_task()["build_results"] == []
    assert (len(first), len(second)) == (1, 0)
    first[0]()
    # 原来那个丢了的任务其实也只是迟到了：认领保证只发一次
    build_result_notify_task.delay(result.pk)
    assert len(result_notices(fake_tg)) == 1


def test_a_notice_waiting_for_its_own_retry_is_left_alone_until_the_retry_is_overdue(fake_tg, shop_rule, sweep):
    result = lost_enqueue(job_name="folder/shop-nightly", build_number=79, result="SUCCESS")
    fake_tg.server_error("sendMessage", times=1)
    with pytest.raises(TelegramSendError) as failure:
        build_result_notice_send(result_id=result.pk)  # 任务的第一次尝试：502，任务会退避重试
    assert not failure.value.permanent
    age(result, received=timedelta(minutes=5))
    assert sweep() == []  # 重试在路上：扫描再投一个只会多一条重试链

    # 重试始终没来（例如 broker 丢了重试消息）：过了最长的退避时间，扫描接手
    with time_machine.travel(timezone.now() + timedelta(minutes=25), tick=False):
        assert sweep() == [result.pk]
    assert len(result_notices(fake_tg)) == 1
    assert [c.status for c in fake_tg.calls_to("sendMessage")] == [502, 200]


def test_recovery_gives_up_after_a_bounded_number_of_requeues(fake_tg, approved, sweep):
    result = lost_enqueue(job_name="shop-backend", build_number=321, result="SUCCESS")
    age(result, received=timedelta(minutes=3))
    start = timezone.now()
    for round_ in range(RESULT_MAX_RECOVERIES):
        with time_machine.travel(start + round_ * timedelta(minutes=11), tick=False):
            assert sweep(execute=False) == [result.pk]
            worker_claims_and_dies(result)  # 每次都死在发送途中
    with time_machine.travel(start + RESULT_MAX_RECOVERIES * timedelta(minutes=11), tick=False):
        assert build_result_recover() == {"requeued": [], "abandoned": [result.pk]}
    with time_machine.travel(start + (RESULT_MAX_RECOVERIES + 3) * timedelta(minutes=11), tick=False):
        assert build_result_recover() == {"requeued": [], "abandoned": []}

    result.refresh_from_db()
    error = result.details["notify_error"]
    assert (error["code"], error["gave_up"], error["recovered"]) == ("recovery_exhausted", True, RESULT_MAX_RECOVERIES)
    event = ApprovalEvent.objects.get(approval=approved, kind=EventKind.NOTIFY_FAILED)
    assert event.details["code"] == "recovery_exhausted"
    assert result_notices(fake_tg) == []


@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="并发只在 MySQL/MariaDB 上有意义")
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_resend_a_dead_claim_once(fake_tg, shop_rule, settings):
    settings.TELEGRAM_BOT_TOKEN = ""  # 收到结果时 Telegram 还没配置：通知任务跳过
    result = lost_enqueue(job_name="folder/shop-nightly", build_number=80, result="SUCCESS")
    settings.TELEGRAM_BOT_TOKEN = fake_tg.token
    worker_claims_and_dies(result)
    age(result, received=timedelta(minutes=20), notified=timedelta(minutes=15))
    fake_tg.delay("sendMessage", 0.3)  # 让竞争窗口足够大
    results = run_together([lambda: build_result_recover()["requeued"]] * 6)
    assert [pk for _status, requeued in results for pk in requeued] == [result.pk]
    assert len(fake_tg.ok_calls("sendMessage")) == 1
    assert BuildResult.objects.get(pk=result.pk).details["notice"]["chat_id"] == GROUP_ID
