"""/stats：审批分析的几个大数字（最近 30 天）和统计页的链接（X18）。

只给管理员角色的审批人，或关联了后台 staff 账号的审批人：统计页本身也只给 staff 看。
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext as _
from telegram import Update
from telegram.ext import ContextTypes

from accounts.models import Approver
from accounts.permissions import check_bot_access
from approvals.analytics import approval_analytics, stats_filters
from approvals.models import Status

from ..identity import telegram_identify
from ..rendering import duration_text, esc, render_telegram
from .common import db, safe_reply


def may_see_stats(approver: Approver) -> bool:
    user = approver.user
    return approver.role.is_admin or bool(user is not None and user.is_active and user.is_staff)


def _duration(seconds: float | None) -> str:
    return duration_text(seconds) if seconds is not None else "-"


def render_stats_headline(data: dict[str, Any], *, url: str) -> str:
    """Python 决定说哪几行，templates/telegram/stats_headline.html 决定样子。"""
    by_status = data["by_status"]
    decisions = data["decisions"]
    pending = data["pending_now"]
    share = data["decided_without_reminder"]
    period = data["period"]
    rows = [
        _("新建：%(n)s（✅ %(a)s ❌ %(r)s ⌛ %(t)s 🚫 %(c)s）") % {
            "n": data["created"], "a": by_status[Status.APPROVED], "r": by_status[Status.REJECTED],
            "t": by_status[Status.TIMEOUT], "c": by_status[Status.CANCELLED]},
        _("决定耗时：中位数 %(median)s，P90 %(p90)s") % {
            "median": _duration(decisions["median_seconds"]), "p90": _duration(decisions["p90_seconds"])},
        _("当前待审批：%(n)s，最久已等 %(age)s") % {"n": pending["count"], "age": _duration(pending["oldest_seconds"])},
        _("超时：%(t)s，封版拒绝：%(f)s") % {"t": data["timeouts"], "f": data["freezes"]},
        _("无需提醒即决定：%(p)s") % {"p": "-" if share is None else f"{round(share * 100)}%"},
    ]
    title = _("审批分析（最近 %(days)s 天，截至 %(until)s）") % {"days": period["days"],
                                                                  "until": period["until"].isoformat()}
    return render_telegram("telegram/stats_headline.html", {"title": title, "rows": rows, "url": url})


def stats_text(*, user_id: int, username: str | None, chat_id: int) -> str:
    approver = telegram_identify(user_id=user_id, username=username, chat_id=chat_id).approver
    access = check_bot_access(approver)
    if not access:
        return esc("⚠️ " + access.reason)
    if not may_see_stats(approver):
        return esc("⚠️ " + _("只有管理员，或关联了后台 staff 账号的审批人，才能查看审批分析。"))
    url = settings.PUBLIC_BASE_URL + reverse("stats:page")
    return render_stats_headline(approval_analytics(stats_filters()), url=url)


async def cmd_stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    user = update.effective_user
    text = await db(stats_text)(user_id=user.id, username=user.username, chat_id=update.effective_chat.id)
    await safe_reply(update, text)
