"""/health 用的 Telegram 状态、周期任务声明、后台页面。"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from telegram_bot.health import telegram_health
from telegram_bot.models import TelegramMessage

pytestmark = pytest.mark.django_db


def test_health_is_disabled_without_token(settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    assert telegram_health(check_api=True)["status"] == "disabled"


def test_health_checks_the_api_when_asked(fake_tg, settings):
    health = telegram_health(check_api=True)
    assert (health["status"], health["api"], health["bot_username"]) == ("ok", "ok", "approval_test_bot")
    settings.TELEGRAM_BOT_TOKEN = "987654:WrongWrongWrongWrongWrongWrong12"
    health = telegram_health(check_api=True)
    assert health["status"] == "error" and health["api"] == "error"
    assert "987654:Wrong" not in str(health)


def test_periodic_recovery_sweep_is_declared(settings):
    from celery.schedules import crontab

    specs = settings.CELERY_BEAT_SCHEDULE
    assert specs["[auto] telegram_bot.recovery_sweep"]["task"] == "telegram_bot.tasks.telegram_recovery_sweep_task"
    assert isinstance(specs["[auto] telegram_bot.processed_updates_cleanup"]["schedule"], crontab)


def test_admin_pages_render(client, fake_tg, shop_rule, make_approval, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        make_approval()
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    for name in ("telegrammessage", "telegramchat", "identityevent", "processedupdate", "reasonprompt"):
        response = client.get(f"/admin/telegram_bot/{name}/")
        assert response.status_code == 200, name
    row = TelegramMessage.objects.get()
    assert client.get(f"/admin/telegram_bot/telegrammessage/{row.pk}/change/").status_code == 200


def test_health_endpoint_reports_a_blocked_chat_as_degraded(fake_tg, db):
    """被踢出/拉黑的群要在 /health 里看得见（整体 degraded，仍是 200：不让负载均衡摘掉服务）。"""
    from django.test import Client

    from approvalbot.operations.health import cache_clear
    from telegram_bot.models import TelegramChat

    cache_clear()
    TelegramChat.objects.create(chat_id=-100777, error_permanent=True, error_code="forbidden",
                                last_error="Forbidden: bot was kicked from the supergroup chat")
    response = Client().get("/health")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    telegram = body["components"]["telegram"]
    assert telegram["status"] == "degraded" and telegram["api"] == "ok"
    # 未登录的探测只看到数量，不看到群 ID 与错误原文
    assert telegram["failed_chats_count"] == 1 and "failed_chats" not in telegram
    assert "-100777" not in response.content.decode() and fake_tg.token not in response.content.decode()
    # 后台用户看到明细
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_user("ops", password="x", is_staff=True)
    client = Client()
    client.force_login(staff)
    detailed = client.get("/health").json()["components"]["telegram"]
    assert detailed["failed_chats"][0]["chat_id"] == -100777
    cache_clear()
