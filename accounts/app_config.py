"""config/app.json 的生效值：已加载的配置覆盖环境变量给出的默认值。"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .models import ConfigState


def app_defaults() -> dict[str, Any]:
    """审批相关默认值。每次读取数据库里“最后一个好配置”，热加载无需重启进程（C6）。"""
    values: dict[str, Any] = {
        "timeout_minutes": settings.APPROVAL_DEFAULT_TIMEOUT_MINUTES,
        "timeout_policy": settings.APPROVAL_TIMEOUT_POLICY,
        "stop_build": False,
        "reminder_interval_minutes": settings.APPROVAL_REMINDER_INTERVAL_MINUTES,
        "reminder_backoff": settings.APPROVAL_REMINDER_BACKOFF,
        "reminder_max_count": settings.APPROVAL_REMINDER_MAX_COUNT,
        "chat_id": settings.TELEGRAM_DEFAULT_CHAT_ID,
    }
    state = ConfigState.objects.filter(name="app").values_list("data", flat=True).first()
    if state:
        approval = state.get("approval", {})
        reminders = state.get("reminders", {})
        telegram = state.get("telegram", {})
        mapping = {
            "timeout_minutes": approval.get("timeout_minutes"),
            "timeout_policy": approval.get("timeout_policy"),
            "stop_build": approval.get("stop_build"),
            "reminder_interval_minutes": reminders.get("interval_minutes"),
            "reminder_backoff": reminders.get("backoff"),
            "reminder_max_count": reminders.get("max_count"),
            "chat_id": telegram.get("default_chat_id"),
        }
        values.update({k: v for k, v in mapping.items() if v is not None})
    return values


def allowed_chat_ids() -> frozenset[int] | None:
    """config/app.json 的 telegram.allowed_chat_ids：设置了（非空）时机器人只在这些群里回答、只往这些群发消息。"""
    state = ConfigState.objects.filter(name="app").values_list("data", flat=True).first() or {}
    ids = (state.get("telegram") or {}).get("allowed_chat_ids")
    return frozenset(int(i) for i in ids) if ids else None


# 保留期（D8）的默认天数：审批与历史够做一年审计；日志体积大，一个月后归档；构建结果留半年做统计
RETENTION_DEFAULT_DAYS: dict[str, int] = {"approvals": 365, "events": 365, "build_logs": 30, "build_results": 180}


def retention_days() -> dict[str, int]:
    """各类数据的保留天数，键为 approvals / events / build_logs / build_results。

    缺省键用默认值（缺省不等于永久保留：不配置也不会无限增长）；显式写 0 表示永久保留、从不删除。
    """
    values = dict(RETENTION_DEFAULT_DAYS)
    state = ConfigState.objects.filter(name="app").values_list("data", flat=True).first() or {}
    retention = state.get("retention") or {}
    for kind in values:
        raw = retention.get(f"{kind}_days")
        # 加载器已校验过；这里仍只认非负整数，防止手改数据库写进奇怪的值
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            values[kind] = raw
    return values
