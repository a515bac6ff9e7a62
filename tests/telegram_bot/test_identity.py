"""身份（X13）：按数字 id 识别；只配了用户名的人首次联系时绑定；之后改用户名不影响，冒用用户名得不到任何东西。"""

from __future__ import annotations

import pytest

from accounts.models import Approver
from accounts.services import approver_for_telegram_user
from telegram_bot.identity import telegram_identify
from telegram_bot.models import IdentityEvent, IdentityEventKind

pytestmark = pytest.mark.django_db


def test_numeric_id_wins_and_username_is_ignored(people):
    identity = approver_for_telegram_user(telegram_id=1002, username="someone_else")
    assert identity.approver == people["approver"] and not identity.bound


def test_username_only_approver_is_bound_once(roles):
    frank = Approver.objects.create(username="frank", role=roles["pm"], telegram_username="@Frank")
    identity = telegram_identify(user_id=3001, username="FRANK", chat_id=-100)
    assert identity.approver == frank and identity.bound
    frank.refresh_from_db()
    assert frank.telegram_id == 3001 and frank.telegram_bound_at is not None
    assert approver_for_telegram_user(telegram_id=3001, username="frank").bound is False
    event = IdentityEvent.objects.get()
    assert (event.kind, event.approver, event.telegram_id, event.chat_id) == (IdentityEventKind.BOUND, frank, 3001, -100)


def test_takeover_by_a_second_account_is_refused_and_audited(people):
    identity = telegram_identify(user_id=9999, username="bob")
    assert identity.approver is None and identity.conflict == people["approver"]
    people["approver"].refresh_from_db()
    assert people["approver"].telegram_id == 1002
    assert IdentityEvent.objects.get().kind == IdentityEventKind.TAKEOVER_REFUSED


def test_ambiguous_username_is_not_bound(roles):
    Approver.objects.create(username="g1", role=roles["pm"], telegram_username="gina")
    Approver.objects.create(username="g2", role=roles["pm"], telegram_username="gina")
    identity = telegram_identify(user_id=3100, username="gina")
    assert identity.approver is None and identity.ambiguous
    assert not Approver.objects.filter(telegram_id=3100).exists()
    assert IdentityEvent.objects.get().kind == IdentityEventKind.AMBIGUOUS


def test_inactive_approver_is_not_bound(roles):
    Approver.objects.create(username="hank", role=roles["pm"], telegram_username="hank", is_active=False)
    assert approver_for_telegram_user(telegram_id=3200, username="hank").approver is None
    assert not Approver.objects.filter(telegram_id=3200).exists()


def test_user_without_username_and_unknown_id_is_nobody(people):
    assert approver_for_telegram_user(telegram_id=5555, username=None).approver is None
    assert not IdentityEvent.objects.exists()
