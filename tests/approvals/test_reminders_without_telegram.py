"""没有配置 Telegram 时不“假装”提醒过：不加提醒次数、不写提醒历史，日志里说一次；配置后照常提醒。"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import time_machine

from approvals import sweeps
from approvals.models import ApprovalEvent, EventKind
from approvals.tasks import reminder_sweep_task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    # “说一次”是每个进程一次：每个测试当作新进程
    monkeypatch.setattr(sweeps, "_told_no_notifier", False)


def test_no_bot_token_means_no_reminder_is_claimed(settings, shop_rule, make_approval, caplog):
    settings.TELEGRAM_BOT_TOKEN = ""
    approval = make_approval()
    due = approval.next_reminder_at

    with caplog.at_level(logging.INFO, logger="approvals"):
        for minutes in (1, 10, 20):
            with time_machine.travel(due + timedelta(minutes=minutes), tick=False):
                assert reminder_sweep_task() == 0

    approval.refresh_from_db()
    assert approval.reminder_count == 0 and approval.next_reminder_at == due
    assert not ApprovalEvent.objects.filter(kind=EventKind.REMINDER).exists()
    told = [r for r in caplog.records if "TELEGRAM_BOT_TOKEN" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.WARNING
    assert "提醒不发送" in told[0].getMessage()


def test_once_telegram_is_configured_the_due_reminder_goes_out(settings, shop_rule, make_approval):
    settings.TELEGRAM_BOT_TOKEN = ""
    approval = make_approval()
    due = approval.next_reminder_at
    with time_machine.travel(due + timedelta(minutes=1), tick=False):
        assert reminder_sweep_task() == 0

        settings.TELEGRAM_BOT_TOKEN = "123456:test-token"
        assert reminder_sweep_task() == 1

    approval.refresh_from_db()
    assert approval.reminder_count == 1
    assert ApprovalEvent.objects.get(kind=EventKind.REMINDER).details["number"] == 1
