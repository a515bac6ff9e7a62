"""提醒时间表（R1–R4）：纯函数，精确到分钟。"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from approvals.reminders import first_reminder_at, next_reminder_after, schedule

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def minutes_after_start(times: list[datetime]) -> list[float]:
    return [(t - T0).total_seconds() / 60 for t in times]


def test_default_schedule_grows_sparser_and_stops_at_six():
    times = schedule({}, created_at=T0, expires_at=T0 + timedelta(days=1))
    # 间隔 5、7.5、11.25、16.875、25.3125、37.96875 分钟
    assert minutes_after_start(times) == [5, 12.5, 23.75, 40.625, 65.9375, 103.90625]


def test_custom_policy_and_max_count():
    times = schedule({"interval_minutes": 10, "backoff": 2, "max_count": 3}, created_at=T0,
                     expires_at=T0 + timedelta(days=1))
    assert minutes_after_start(times) == [10, 30, 70]


def test_constant_interval_when_backoff_is_one():
    times = schedule({"interval_minutes": 2, "backoff": 1, "max_count": 4}, created_at=T0,
                     expires_at=T0 + timedelta(hours=1))
    assert minutes_after_start(times) == [2, 4, 6, 8]


def test_no_reminder_at_or_after_the_deadline():
    times = schedule({}, created_at=T0, expires_at=T0 + timedelta(minutes=30))
    assert minutes_after_start(times) == [5, 12.5, 23.75]
    assert first_reminder_at({}, created_at=T0, expires_at=T0 + timedelta(minutes=5)) is None


def test_zero_max_count_means_no_reminders():
    assert schedule({"max_count": 0}, created_at=T0, expires_at=T0 + timedelta(days=1)) == []


def test_next_after_follows_the_same_schedule():
    expires = T0 + timedelta(days=1)
    expected = schedule({}, created_at=T0, expires_at=expires)
    due, sent = expected[0], 1
    seen = [due]
    while True:
        nxt = next_reminder_after({}, sent_count=sent, due_at=due, expires_at=expires)
        if nxt is None:
            break
        seen.append(nxt)
        due, sent = nxt, sent + 1
    assert seen == expected
