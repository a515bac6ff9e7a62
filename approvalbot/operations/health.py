"""组件检查（A9/A10/O1）：/health 与告警共用。

/health：数据库与 broker 是关键组件，任一失败回 503；Jenkins、Telegram、beat 的问题报告为 degraded（仍 200），
因为此时 API 照常收单、操作排队补做——负载均衡不该因为 Jenkins 宕机就把本服务摘掉。
外部检查（Jenkins、Telegram）结果缓存一小段时间且超时很短，/health 被频繁探测也不会拖慢或打爆外部系统。
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from approvals.models import Approval, JenkinsActionState, Status
from jenkins_bridge.client import server_status
from jenkins_bridge.models import ENV_SERVER_NAME, ENV_SERVER_TOKEN_VARIABLE, JenkinsServer

from .models import BackupRun, BackupStatus, Heartbeat, Lease

logger = logging.getLogger(__name__)

EXTERNAL_CHECK_TTL = 30.0
WORKER_HEARTBEAT_PREFIX = "worker:"
# worker 每 WORKER_HEARTBEAT_SECONDS 写一次心跳；三次没写算停了
WORKER_HEARTBEAT_SECONDS = 20
WORKER_MAX_AGE = timedelta(seconds=3 * WORKER_HEARTBEAT_SECONDS)
# 每日备份：最近一次成功的备份超过一天多两小时就算过期（留出备份本身与重试的时间）
BACKUP_MAX_AGE = timedelta(hours=26)
# Jenkins 操作决定后这么久仍在“等待执行”算卡住（重试退避封顶 10 分钟，再留余量）
JENKINS_ACTION_STUCK_AFTER = timedelta(minutes=15)
JENKINS_ACTION_FAILED_WINDOW = timedelta(hours=24)
EXTERNAL_CHECK_TIMEOUT = 3.0
BROKER_TIMEOUT = 2.0

_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def cached(key: str, compute: Callable[[], dict[str, Any]], ttl: float = EXTERNAL_CHECK_TTL) -> dict[str, Any]:
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < ttl:
            return hit[1]
    value = compute()
    with _cache_lock:
        _cache[key] = (time.monotonic(), value)
    return value


def cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"status": "ok", "vendor": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - 健康检查要报告而不是抛出
        logger.warning("健康检查：数据库不可用：%s", exc)
        return {"status": "error", "error": exc.__class__.__name__}


def check_broker() -> dict[str, Any]:
    from kombu import Connection

    url = settings.CELERY_BROKER_URL
    transport = url.split("://", 1)[0]
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT,
                        transport_options=getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})) as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
        return {"status": "ok", "transport": transport}
    except Exception as exc:  # noqa: BLE001 - 报告 broker 故障；不把 URL（可能含密码）写进结果
        logger.warning("健康检查：broker 不可用：%s", exc.__class__.__name__)
        return {"status": "error", "transport": transport, "error": exc.__class__.__name__}


def _check_one_jenkins(server: JenkinsServer) -> dict[str, Any]:
    status = server_status(server, timeout=EXTERNAL_CHECK_TIMEOUT)
    if status["reachable"]:
        return {"status": "ok", "version": status["version"]}
    return {"status": "error", "error": status["kind"], "message": status["error"]}


def check_jenkins() -> dict[str, Any]:
    # 环境变量定义的默认 Jenkins 在读出时已换成当前的 JENKINS_URL（JenkinsServer.from_db），缓存键里也有地址
    servers = [s for s in JenkinsServer.objects.filter(is_active=True) if s.base_url]
    if not servers and settings.JENKINS_URL:
        # 还没有任何审批、默认服务器那一行尚未建立：按环境变量检查（GET /health 不写库）
        servers = [JenkinsServer(name=ENV_SERVER_NAME, api_token_env=ENV_SERVER_TOKEN_VARIABLE,
                                 url=settings.JENKINS_URL, username=settings.JENKINS_USER, is_default=True)]
    if not servers:
        return {"status": "not_configured", "servers": {}}
    result: dict[str, Any] = {}
    for server in servers:
        result[server.name] = cached(f"jenkins:{server.pk}:{server.base_url}", lambda s=server: _check_one_jenkins(s))
    ok = all(v["status"] == "ok" for v in result.values())
    return {"status": "ok" if ok else "error", "servers": result}


def check_telegram() -> dict[str, Any]:
    """Telegram：getMe 是否通（缓存 60 秒），以及记录在库里的永久发送失败（被踢、被拉黑、群不存在）。"""
    from telegram_bot.health import telegram_health

    if not settings.TELEGRAM_BOT_TOKEN:
        return {"status": "not_configured"}
    return cached("telegram", lambda: telegram_health(check_api=True, timeout=EXTERNAL_CHECK_TIMEOUT), ttl=60.0)


def check_beat() -> dict[str, Any]:
    beat = Heartbeat.objects.filter(name="beat").first()
    if beat is None:
        return {"status": "unknown", "last_run": None}
    # 心跳每个扫描周期一次；三个周期（至少 2 分钟）没有新的，说明 beat 或 worker 停了
    max_age = timedelta(seconds=max(3 * settings.SWEEP_INTERVAL_SECONDS, 120))
    age = timezone.now() - beat.at
    result = {"status": "ok" if age <= max_age else "stale", "last_run": beat.at.isoformat(),
              "age_seconds": int(age.total_seconds())}
    lease = Lease.objects.filter(name="beat", expires_at__gt=timezone.now()).first()
    if lease is not None:
        result["scheduler"] = lease.holder  # 多个 beat 时正在调度的那个
    return result


def check_worker() -> dict[str, Any]:
    """worker 自己写的心跳（每个 worker 一行）：最近 WORKER_MAX_AGE 内有一个就算可用。"""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return {"status": "ok", "mode": "eager"}  # 任务在调用方进程里同步执行，没有 worker
    now = timezone.now()
    beats = list(Heartbeat.objects.filter(name__startswith=WORKER_HEARTBEAT_PREFIX).order_by("-at")[:50])
    alive = [b for b in beats if now - b.at <= WORKER_MAX_AGE]
    result: dict[str, Any] = {"alive": len(alive), "last_seen": beats[0].at.isoformat() if beats else None}
    result["status"] = "ok" if alive else "error"
    if beats and not alive:
        result["age_seconds"] = int((now - beats[0].at).total_seconds())
    return result


def check_backup() -> dict[str, Any]:
    """最近一次成功备份的时间与年龄；最近一次结束的备份失败了是 error，成功的太旧是 stale，从没备份过是 none。"""
    now = timezone.now()
    last_ok = BackupRun.objects.filter(status=BackupStatus.OK).order_by("-finished_at").first()
    last = BackupRun.objects.exclude(status=BackupStatus.RUNNING).order_by("-finished_at", "-id").first()
    result: dict[str, Any] = {"last_ok_at": last_ok.finished_at.isoformat() if last_ok else None}
    if last_ok is not None:
        result["age_seconds"] = int((now - last_ok.finished_at).total_seconds())
        result["file"] = last_ok.file_name
    if last is not None and last.status == BackupStatus.FAILED:
        result.update(status="error", last_error=last.error[:300], failed_at=last.finished_at.isoformat())
    elif last_ok is None:
        result["status"] = "none"
    else:
        result["status"] = "ok" if now - last_ok.finished_at <= BACKUP_MAX_AGE else "stale"
    return result


def check_approvals() -> dict[str, Any]:
    """最老的待审批与截止时间：过了截止时间还没被超时扫描关掉（多等几个扫描周期），说明扫描停了。"""
    now = timezone.now()
    grace = timedelta(seconds=max(3 * settings.SWEEP_INTERVAL_SECONDS, 120))
    pending = Approval.objects.filter(status=Status.PENDING)
    oldest = pending.order_by("created_at", "id").only("public_id", "created_at", "expires_at").first()
    overdue = pending.filter(expires_at__lt=now - grace)
    result: dict[str, Any] = {"pending": pending.count(), "overdue": overdue.count()}
    if oldest is not None:
        result.update(oldest=oldest.public_id, oldest_created_at=oldest.created_at.isoformat(),
                      oldest_expires_at=oldest.expires_at.isoformat())
    if result["overdue"]:
        first = overdue.order_by("expires_at", "id").only("public_id", "expires_at").first()
        result.update(oldest_overdue=first.public_id,
                      overdue_seconds=int((now - first.expires_at).total_seconds()))
    result["status"] = "error" if result["overdue"] else "ok"
    return result


def check_jenkins_actions() -> dict[str, Any]:
    """决定之后的 Jenkins 继续/中止：卡在“等待执行”太久（不含在等 input 出现的）或最近一天内彻底失败的。"""
    now = timezone.now()
    stuck = (Approval.objects.filter(jenkins_action_state=JenkinsActionState.PENDING,
                                     decided_at__lte=now - JENKINS_ACTION_STUCK_AFTER)
             .exclude(jenkins_watch__awaiting_input_since__isnull=False))
    failed = Approval.objects.filter(jenkins_action_state=JenkinsActionState.FAILED,
                                     jenkins_action_at__gte=now - JENKINS_ACTION_FAILED_WINDOW)
    result: dict[str, Any] = {"stuck": stuck.count(), "failed_24h": failed.count()}
    examples: list[str] = []
    if result["stuck"] or result["failed_24h"]:  # 正常时（几乎总是）不为空列表多查两次
        examples = [*stuck.values_list("public_id", flat=True)[:5], *failed.values_list("public_id", flat=True)[:5]]
    result["examples"] = list(dict.fromkeys(examples))[:5]
    result["status"] = "error" if result["stuck"] or result["failed_24h"] else "ok"
    return result


CRITICAL = ("database", "broker")
# 这些组件的检查要读数据库：数据库不可用时是 unknown
DATABASE_COMPONENTS = ("beat", "worker", "jenkins", "telegram", "backup", "approvals", "jenkins_actions")
FAILING = ("error", "stale", "degraded")


def health_report() -> dict[str, Any]:
    """全部组件的状态：数据库与 broker 是关键组件（任一失败 status=error），其余的问题是 degraded。"""
    components: dict[str, dict[str, Any]] = {"database": check_database(), "broker": check_broker()}
    if components["database"]["status"] == "ok":
        checks = (("beat", check_beat), ("worker", check_worker), ("jenkins", check_jenkins),
                  ("telegram", check_telegram), ("backup", check_backup), ("approvals", check_approvals),
                  ("jenkins_actions", check_jenkins_actions))
        for name, check in checks:
            try:
                components[name] = check()
            except DatabaseError as exc:
                # 连接在检查途中断开（数据库重启、故障切换）：如实报告数据库失败，仍然回答 JSON
                logger.warning("健康检查：检查 %s 时数据库出错：%s", name, exc)
                components["database"] = {"status": "error", "error": exc.__class__.__name__}
                break
        components.update({name: {"status": "unknown"} for name in DATABASE_COMPONENTS if name not in components})
    else:
        components.update({name: {"status": "unknown"} for name in DATABASE_COMPONENTS})
    critical_ok = all(components[name]["status"] == "ok" for name in CRITICAL)
    degraded = any(c["status"] in FAILING for name, c in components.items() if name not in CRITICAL)
    overall = "error" if not critical_ok else ("degraded" if degraded else "ok")
    return {"status": overall, "components": components, "time": timezone.now().isoformat()}
