"""提醒时间表（R1–R4）：纯函数，便于单测。

第 k 次提醒距上一次的间隔 = interval × backoff^(k-1)：默认 5、7.5、11.25… 分钟，越往后越稀疏（R2），
最多 max_count 次（R3）；截止时间之后不再提醒，决定之后 next_reminder_at 被清空（R4）。
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

DEFAULT_POLICY = {"interval_minutes": 5, "backoff": 1.5, "max_count": 6}


def policy_values(policy: dict[str, Any] | None) -> tuple[float, float, int]:
    merged = {**DEFAULT_POLICY, **{k: v for k, v in (policy or {}).items() if v is not None}}
    interval = max(float(merged["interval_minutes"]), 0.1)
    backoff = max(float(merged["backoff"]), 1.0)
    return interval, backoff, max(int(merged["max_count"]), 0)


def gap_minutes(policy: dict[str, Any] | None, reminder_number: int) -> float:
    """第 reminder_number 次（从 1 数）提醒与前一个时间点的间隔。"""
    interval, backoff, _max = policy_values(policy)
    return interval * backoff ** (reminder_number - 1)


def schedule(policy: dict[str, Any] | None, *, created_at: datetime, expires_at: datetime) -> list[datetime]:
    """完整的提醒时间表（用于展示与测试）。"""
    _interval, _backoff, max_count = policy_values(policy)
    times: list[datetime] = []
    current = created_at
    for number in range(1, max_count + 1):
        current = current + timedelta(minutes=gap_minutes(policy, number))
        if current >= expires_at:
            break
        times.append(current)
    return times


def first_reminder_at(policy: dict[str, Any] | None, *, created_at: datetime, expires_at: datetime) -> datetime | None:
    times = schedule(policy, created_at=created_at, expires_at=expires_at)
    return times[0] if times else None


def next_reminder_after(
    policy: dict[str, Any] | None, *, sent_count: int, due_at: datetime, expires_at: datetime
) -> datetime | None:
    """已发出 sent_count 次（含刚发的这次，其计划时间为 due_at）后，下一次的时间；没有则 None。"""
    _interval, _backoff, max_count = policy_values(policy)
    if sent_count >= max_count:
        return None
    nxt = due_at + timedelta(minutes=gap_minutes(policy, sent_count + 1))
    return nxt if nxt < expires_at else None
