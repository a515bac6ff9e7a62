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
from django.db import connection
from django.utils import timezone

from jenkins_bridge.client import server_status
from jenkins_bridge.models import ENV_SERVER_NAME, ENV_SERVER_TOKEN_VARIABLE, JenkinsServer

from .models import Heartbeat

logger = logging.getLogger(__name__)

EXTERNAL_CHECK_TTL = 30.0
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
    return {"status": "ok" if age <= max_age else "stale", "last_run": beat.at.isoformat(),
            "age_seconds": int(age.total_seconds())}


CRITICAL = ("database", "broker")


def health_report() -> dict[str, Any]:
    """全部组件的状态：数据库与 broker 是关键组件（任一失败 status=error），其余的问题是 degraded。"""
    components: dict[str, dict[str, Any]] = {"database": check_database(), "broker": check_broker()}
    if components["database"]["status"] == "ok":
        components["beat"] = check_beat()
        components["jenkins"] = check_jenkins()
        components["telegram"] = check_telegram()
    else:
        components.update({name: {"status": "unknown"} for name in ("beat", "jenkins", "telegram")})
    critical_ok = all(components[name]["status"] == "ok" for name in CRITICAL)
    degraded = any(c["status"] in ("error", "stale", "degraded") for name, c in components.items()
                   if name not in CRITICAL)
    overall = "error" if not critical_ok else ("degraded" if degraded else "ok")
    return {"status": overall, "components": components, "time": timezone.now().isoformat()}
