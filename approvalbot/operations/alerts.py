"""告警（O3/O4/H4）：每分钟检查各组件，持续失败 alerts.after_minutes 分钟发一次告警，恢复时发一次恢复通知。

- 状态在数据库（AlertState），每一步都是条件更新：进程重启、两个 beat 或 worker 同时检查都不会重复发；
- 告警经发件箱发到 Telegram（按任务名投递给 telegram_bot，提交之后）；worker 或 broker 正是出问题的那部分时，
  在本进程里直接执行那个任务（不经过 broker）；
- Telegram 本身不可用（或没有配置、没有可发的群）时：日志里记 ERROR，并发邮件给 ALERT_EMAILS（配置了的话）；
- 数据库不可用时无处记状态：只在本进程内记着，按同样的规则记日志、发邮件。
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.app_config import alerts_settings, app_defaults
from approvalbot.celery import app as celery_app
from approvalbot.text import join_names
from approvals.display import format_time

from .effects import ALERT_NOTIFY_TASK
from .health import health_report
from .models import AlertState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """一个组件这一次的结果：failing 为 None 表示不知道（不改变状态）。"""

    name: str
    failing: bool | None
    problem: str = ""


def component_label(name: str) -> str:
    if name.startswith("jenkins:"):
        return _("Jenkins「%(name)s」") % {"name": name.split(":", 1)[1]}
    labels = {
        "database": _("数据库"), "broker": _("消息队列（broker）"), "beat": _("定时调度（beat）"),
        "worker": _("后台任务（worker）"), "jenkins": "Jenkins", "telegram": "Telegram", "backup": _("备份"),
        "approvals": _("审批超时处理"), "jenkins_actions": _("Jenkins 继续/中止操作"),
    }
    return labels.get(name, name)


def _problem(name: str, data: dict[str, Any]) -> str:
    """给人看的一句话：什么坏了、可能的后果。"""
    error = str(data.get("error") or "")
    if name == "database":
        return _("连不上数据库（%(e)s）") % {"e": error}
    if name == "broker":
        return _("连不上消息队列（%(e)s）：后台任务发不出去") % {"e": error}
    if name == "beat":
        return _("beat 心跳 %(s)s 秒没有更新：提醒、超时、补发等周期任务可能停了") % {"s": data.get("age_seconds")}
    if name == "worker":
        last = data.get("last_seen")
        when = format_time(datetime.fromisoformat(last)) if last else _("从未")
        return _("没有在运行的 worker（最近一次心跳：%(t)s）：消息与 Jenkins 操作都在排队") % {"t": when}
    if name.startswith("jenkins:"):
        return _("连不上（%(kind)s）：%(message)s") % {"kind": error, "message": data.get("message") or ""}
    if name == "telegram":
        if data.get("api") == "error":
            return _("Bot API 调用失败：%(e)s") % {"e": data.get("api_error") or ""}
        return _("24 小时内 %(n)s 条消息永久发送失败，%(chats)s 个群不可用，%(denied)s 个群不在允许列表里") % {
            "n": data.get("failed_messages_24h", 0), "chats": len(data.get("failed_chats") or []),
            "denied": len(data.get("chats_not_allowed") or [])}
    if name == "backup":
        if data["status"] == "error":
            return _("最近一次备份失败：%(e)s") % {"e": data.get("last_error") or ""}
        return _("最近一次成功的备份在 %(h)s 小时前") % {"h": int(data.get("age_seconds", 0)) // 3600}
    if name == "approvals":
        return _("%(n)s 个待审批已过截止时间仍未关闭（最早的 %(id)s 已过 %(m)s 分钟）：超时扫描可能停了") % {
            "n": data.get("overdue"), "id": data.get("oldest_overdue"), "m": int(data.get("overdue_seconds", 0)) // 60}
    if name == "jenkins_actions":
        return _("%(stuck)s 个 Jenkins 操作卡在等待执行，%(failed)s 个在 24 小时内失败（如 %(ids)s）") % {
            "stuck": data.get("stuck"), "failed": data.get("failed_24h"), "ids": join_names(data.get("examples") or [])}
    return str(data.get("status"))


def _judge(name: str, data: dict[str, Any]) -> Check:
    status = data.get("status")
    if status in ("error", "stale", "degraded"):
        return Check(name, True, _problem(name, data))
    if status in ("ok", "not_configured", "disabled", "none"):
        return Check(name, False)
    return Check(name, None)  # unknown：这次不知道


def component_checks(report: dict[str, Any]) -> list[Check]:
    """health_report 的结果 → 每个要告警的组件一条（每台 Jenkins 单独一条）。"""
    components = report["components"]
    checks = []
    for name, data in components.items():
        if name == "jenkins":
            checks += [_judge(f"jenkins:{server}", result) for server, result in (data.get("servers") or {}).items()]
        elif name == "beat" and components.get("worker", {}).get("status") == "error":
            checks.append(Check(name, None))  # beat 心跳由 worker 写：worker 停了时心跳旧是必然的，只报 worker
        else:
            checks.append(_judge(name, data))
    return checks


# ---------------------------------------------------------------- 发出去


def _key(name: str, since: datetime, event: str) -> str:
    digest = hashlib.sha256(f"{name}|{since.isoformat()}".encode()).hexdigest()[:16]
    return f"alert:{digest}:{event}"


def telegram_usable(report: dict[str, Any]) -> bool:
    """能不能经 Telegram 告警：配置了 token、有可发的群、Bot API 这次没有失败。"""
    telegram = report["components"].get("telegram") or {}
    chat = settings.TELEGRAM_ADMIN_CHAT_ID or app_defaults().get("chat_id")
    return bool(settings.TELEGRAM_BOT_TOKEN and chat and telegram.get("status") != "error")


def _email(subject: str, body: str) -> None:
    if not settings.ALERT_EMAILS:
        return
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, list(settings.ALERT_EMAILS))
    except Exception:
        logger.exception("告警邮件发送失败（收件人 %s）：%s", ", ".join(settings.ALERT_EMAILS), subject)


def _deliver_telegram(key: str, payload: dict[str, Any], *, local: bool) -> None:
    task = celery_app.tasks.get(ALERT_NOTIFY_TASK)  # 按名字找任务：不在导入时依赖 telegram_bot
    if task is None:
        logger.error("任务 %s 未注册，告警只记在日志里：%s", ALERT_NOTIFY_TASK, payload.get("problem"))
        return
    try:
        if local:
            # worker 或 broker 不可用：不经过 broker，在本进程里执行（失败的留在发件箱里等补发）
            task.apply(args=[key, payload], kwargs={"retry": False})
        else:
            task.delay(key, payload)
    except Exception:
        logger.exception("投递告警通知失败：%s", key)


def alert_dispatch(*, event: str, name: str, since: datetime, at: datetime, problem: str, usable: bool,
                   local: bool) -> None:
    """记日志、（提交后）经发件箱发 Telegram；Telegram 不可用或出问题的就是它时另发邮件。"""
    label = component_label(name)
    if event == "alert":
        logger.error("告警：%s 自 %s 起失败：%s", label, format_time(since), problem)
        subject = _("【告警】%(label)s 失败") % {"label": label}
        body = _("%(label)s 自 %(since)s 起失败：%(problem)s") % {"label": label, "since": format_time(since),
                                                                 "problem": problem}
    else:
        logger.warning("已恢复：%s（%s 至 %s）", label, format_time(since), format_time(at))
        subject = _("【已恢复】%(label)s") % {"label": label}
        body = _("%(label)s 已恢复：故障时段 %(since)s 至 %(at)s。当时的问题：%(problem)s") % {
            "label": label, "since": format_time(since), "at": format_time(at), "problem": problem}
    payload = {"event": event, "component": name, "label": label, "problem": problem,
               "since": since.isoformat(), "at": at.isoformat()}
    key = _key(name, since, event)
    if usable:
        transaction.on_commit(lambda: _deliver_telegram(key, payload, local=local))
    if not usable or name == "telegram":
        transaction.on_commit(lambda: _email(subject, body))


# ---------------------------------------------------------------- 状态


def _failing(check: Check, *, now: datetime, after: timedelta, usable: bool, local: bool) -> bool:
    row, _created = AlertState.objects.get_or_create(component=check.name)
    AlertState.objects.filter(pk=row.pk, failing_since__isnull=True).update(failing_since=now, alerted_at=None)
    AlertState.objects.filter(pk=row.pk).update(problem=check.problem, checked_at=now)
    row.refresh_from_db()
    if row.alerted_at is not None or row.failing_since > now - after:
        return False
    with transaction.atomic():
        # 认领“发告警”：只有把 alerted_at 从空改成时间的那一方发
        if not AlertState.objects.filter(pk=row.pk, failing_since=row.failing_since,
                                         alerted_at__isnull=True).update(alerted_at=now):
            return False
        alert_dispatch(event="alert", name=check.name, since=row.failing_since, at=now, problem=check.problem,
                       usable=usable, local=local)
    return True


def _recovered(row: AlertState, *, now: datetime, usable: bool, local: bool) -> bool:
    with transaction.atomic():
        # 认领“恢复”：只有把 failing_since 从这个值改成空的那一方处理；没发过告警的（短暂故障）不发恢复通知
        if not AlertState.objects.filter(pk=row.pk, failing_since=row.failing_since).update(
                failing_since=None, alerted_at=None, recovered_at=now, checked_at=now):
            return False
        if row.alerted_at is None:
            return False
        alert_dispatch(event="recovery", name=row.component, since=row.failing_since, at=now, problem=row.problem,
                       usable=usable, local=local)
    return True


class _DatabaseDown:
    """数据库不可用时的告警状态（只在本进程里；数据库回来后照常用 AlertState）。"""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: datetime | None = None
        self.alerted = False
        self.problem = ""

    def failing(self, problem: str, now: datetime) -> bool:
        with self.lock:
            self.since = self.since or now
            self.problem = problem
            if self.alerted or now - self.since < timedelta(minutes=settings.ALERT_AFTER_MINUTES):
                return False
            self.alerted = True
            since = self.since
        label = component_label("database")
        logger.error("告警：%s 自 %s 起失败：%s", label, format_time(since), problem)
        _email(_("【告警】%(label)s 失败") % {"label": label},
               _("%(label)s 自 %(since)s 起失败：%(problem)s") % {"label": label, "since": format_time(since),
                                                                "problem": problem})
        return True

    def ok(self, now: datetime) -> bool:
        with self.lock:
            since, alerted, self.since, self.alerted = self.since, self.alerted, None, False
        if not (since and alerted):
            return False
        label = component_label("database")
        logger.warning("已恢复：%s（%s 至 %s）", label, format_time(since), format_time(now))
        _email(_("【已恢复】%(label)s") % {"label": label},
               _("%(label)s 已恢复：故障时段 %(since)s 至 %(at)s。当时的问题：%(problem)s") % {
                   "label": label, "since": format_time(since), "at": format_time(now), "problem": self.problem})
        return True


database_down = _DatabaseDown()


def alerts_evaluate(*, now: datetime | None = None, report: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """检查一轮：返回 {"failing": […], "alerted": […], "recovered": […]}（组件名）。"""
    now = now or timezone.now()
    report = report if report is not None else health_report()
    checks = {c.name: c for c in component_checks(report)}
    result: dict[str, list[str]] = {"failing": [], "alerted": [], "recovered": []}
    database = checks.pop("database")
    if database.failing:
        result["failing"].append("database")
        if database_down.failing(database.problem, now):
            result["alerted"].append("database")
        return result
    if database_down.ok(now):
        result["recovered"].append("database")
    after = timedelta(minutes=int(alerts_settings()["after_minutes"]))
    # worker 或 broker 不可用时，经 broker 投递的告警送不到：在本进程里直接发
    local = any(checks.get(name, Check(name, False)).failing for name in ("worker", "broker"))
    usable = telegram_usable(report)
    for check in checks.values():
        if check.failing:
            result["failing"].append(check.name)
            if _failing(check, now=now, after=after, usable=usable, local=local):
                result["alerted"].append(check.name)
    known_bad = {name for name, c in checks.items() if c.failing is None or c.failing}
    # 恢复了的，以及已经不存在的组件（删掉的 Jenkins）
    for row in AlertState.objects.filter(failing_since__isnull=False).exclude(component__in=known_bad):
        if _recovered(row, now=now, usable=usable, local=local):
            result["recovered"].append(row.component)
    return result
