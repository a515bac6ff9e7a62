"""config/app.json 的生效值。顺序（从高到低）：显式设置的环境变量 > 已加载的 config/app.json > 内置默认值。

环境变量优先：运维在 .env 里写的 TELEGRAM_DEFAULT_CHAT_ID 不会被仓库里复制来的示例文件悄悄盖掉；
没设置环境变量的项由文件决定，文件也没写的用内置默认值。所有读默认群、默认期限的地方都经过 app_defaults()。
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

from .models import ConfigState, FreezePending

# app_defaults() 的键 → 环境变量（同名的 settings 是它解析后的值）。变量出现在进程环境（或 .env）里才算“显式设置”：
# 这几项在 settings 里总有内置默认值，光看 settings 分不出是谁给的
ENV_OVERRIDES: dict[str, str] = {
    "timeout_minutes": "APPROVAL_DEFAULT_TIMEOUT_MINUTES",
    "timeout_policy": "APPROVAL_TIMEOUT_POLICY",
    "reminder_interval_minutes": "APPROVAL_REMINDER_INTERVAL_MINUTES",
    "reminder_backoff": "APPROVAL_REMINDER_BACKOFF",
    "reminder_max_count": "APPROVAL_REMINDER_MAX_COUNT",
}


def _env_values() -> dict[str, Any]:
    """显式设置了的环境变量（已由 settings 解析成正确的类型）。"""
    values = {key: getattr(settings, name) for key, name in ENV_OVERRIDES.items() if os.environ.get(name, "").strip()}
    # 默认群没有内置默认值：settings 里不是 None 就是设置过（测试也直接改 settings）
    if settings.TELEGRAM_DEFAULT_CHAT_ID is not None:
        values["chat_id"] = settings.TELEGRAM_DEFAULT_CHAT_ID
    return values


def _app_state() -> dict[str, Any]:
    """数据库里“最后一个好配置”的 app.json（一条查询）。每次都读：热加载无需重启进程（C6）。"""
    return ConfigState.objects.filter(name="app").values_list("data", flat=True).first() or {}


def _app_section(name: str) -> dict[str, Any]:
    return _app_state().get(name) or {}


def app_defaults() -> dict[str, Any]:
    """审批相关默认值，一次读取。显式设置的环境变量优先于文件（见模块说明）；chat_id 是项目规则没指定群时的默认群，
    allowed_chat_ids 见 allowed_chat_ids()，freeze_pending 是规则没写时封版开始时待审批怎么办（默认 wait）。
    """
    values: dict[str, Any] = {
        "timeout_minutes": settings.APPROVAL_DEFAULT_TIMEOUT_MINUTES,
        "timeout_policy": settings.APPROVAL_TIMEOUT_POLICY,
        "stop_build": False,
        "reminder_interval_minutes": settings.APPROVAL_REMINDER_INTERVAL_MINUTES,
        "reminder_backoff": settings.APPROVAL_REMINDER_BACKOFF,
        "reminder_max_count": settings.APPROVAL_REMINDER_MAX_COUNT,
        "chat_id": None,
    }
    state = _app_state()
    ids = (state.get("telegram") or {}).get("allowed_chat_ids")
    values["allowed_chat_ids"] = frozenset(int(i) for i in ids) if ids else None
    pending = (state.get("freeze") or {}).get("pending")
    values["freeze_pending"] = pending if pending in FreezePending.values else FreezePending.WAIT
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
    values.update(_env_values())
    return values


def allowed_chat_ids() -> frozenset[int] | None:
    """config/app.json 的 telegram.allowed_chat_ids：设置了（非空）时机器人只在这些群里回答、只往这些群发消息。"""
    return app_defaults()["allowed_chat_ids"]


# 保留期（D8）的默认天数：审批与历史够做一年审计；日志体积大，一个月后归档；构建结果留半年做统计
RETENTION_DEFAULT_DAYS: dict[str, int] = {"approvals": 365, "events": 365, "build_logs": 30, "build_results": 180}


def retention_days() -> dict[str, int]:
    """各类数据的保留天数，键为 approvals / events / build_logs / build_results。

    缺省键用默认值（缺省不等于永久保留：不配置也不会无限增长）；显式写 0 表示永久保留、从不删除。
    """
    values = dict(RETENTION_DEFAULT_DAYS)
    retention = _app_section("retention")
    for kind in values:
        raw = retention.get(f"{kind}_days")
        # 加载器已校验过；这里仍只认非负整数，防止手改数据库写进奇怪的值
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            values[kind] = raw
    return values


def backup_settings() -> dict[str, Any]:
    """每日备份：keep（保留最近几份）、time（"HH:MM"，TIME_ZONE 的本地时间）。app.json 的 backup 覆盖环境变量。"""
    values: dict[str, Any] = {"keep": settings.BACKUP_KEEP, "time": settings.BACKUP_TIME}
    values.update({k: v for k, v in _app_section("backup").items() if k in values and v is not None})
    return values


def alerts_settings() -> dict[str, Any]:
    """告警：after_minutes（组件持续失败多少分钟才告警）。app.json 的 alerts 覆盖环境变量。"""
    values: dict[str, Any] = {"after_minutes": settings.ALERT_AFTER_MINUTES}
    values.update({k: v for k, v in _app_section("alerts").items() if k in values and v is not None})
    return values
