"""封版窗口（X4）：某一刻是否封版、封到几点，以及 /freeze 的临时封版与提前结束。

每周窗口按窗口自己的时区的墙上时间计算（周五 18:00 → 周一 09:00 在夏令时切换那周也是墙上的 18:00 与 09:00）；
库里与比较一律用 UTC。相连或重叠的窗口算一次封版：结束时间取整段连续封版的结束。
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .audit import policy_event_record
from .config.timespec import zone
from .environments import normalize_environment
from .errors import PolicyError
from .models import (
    ALL_ENVIRONMENTS,
    Approver,
    FreezeKind,
    FreezeWindow,
    PolicyEventKind,
    Source,
)
from .permissions import check_bot_access, matches_any

WEEK_MINUTES = 7 * 24 * 60
MAX_ADHOC_MINUTES = 30 * 24 * 60  # 临时封版最长 30 天；更长的请写进配置
MAX_CHAIN = 20  # 连着的窗口最多追这么多段（每周窗口首尾相接时避免无限追下去）


@dataclass(frozen=True)
class FreezeHit:
    """一次封版：window 是结束得最晚的那个窗口（消息里报它的名字），ends_at 是整段连续封版的结束。"""

    window: FreezeWindow
    starts_at: datetime
    ends_at: datetime
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.window.name


def window_zone(window: FreezeWindow) -> ZoneInfo:
    # 配置与后台都校验过时区；库里被手改成坏值时按 TIME_ZONE 算，而不是让每次申请都 500
    return zone(window.timezone or settings.TIME_ZONE) or ZoneInfo(settings.TIME_ZONE)


def _weekly_minutes(day: int, at: time) -> int:
    return day * 24 * 60 + at.hour * 60 + at.minute


def _weekly_bounds(window: FreezeWindow, at: datetime, weeks: Iterable[int]) -> list[tuple[datetime, datetime]]:
    """at 所在那周前后各周的这次窗口（UTC）。"""
    zone = window_zone(window)
    start = _weekly_minutes(window.start_day, window.start_time) * 60 + window.start_time.second
    end = _weekly_minutes(window.end_day, window.end_time) * 60 + window.end_time.second
    length = (end - start) % (WEEK_MINUTES * 60)
    if not length:
        return []
    local = at.astimezone(zone)
    monday = datetime.combine(local.date() - timedelta(days=local.weekday()), time())
    bounds = []
    for week in weeks:
        begin = monday + timedelta(weeks=week, seconds=start)
        finish = begin + timedelta(seconds=length)
        # 墙上时间加时区再转 UTC：夏令时那周照样是墙上的开始与结束时刻
        bounds.append((begin.replace(tzinfo=zone).astimezone(UTC), finish.replace(tzinfo=zone).astimezone(UTC)))
    return bounds


def occurrence_at(window: FreezeWindow, at: datetime) -> tuple[datetime, datetime] | None:
    """at 落在这个窗口的哪一次里（开始含、结束不含）；不在窗口里返回 None。"""
    if window.kind == FreezeKind.ONCE:
        if window.starts_at and window.ends_at and window.starts_at <= at < window.ends_at:
            return window.starts_at, window.ends_at
        return None
    for begin, finish in _weekly_bounds(window, at, (-1, 0)):
        if begin <= at < finish:
            return begin, finish
    return None


def next_occurrence(window: FreezeWindow, after: datetime) -> tuple[datetime, datetime] | None:
    """after 之后下一次开始的这个窗口。"""
    if window.kind == FreezeKind.ONCE:
        if window.starts_at and window.ends_at and window.starts_at > after:
            return window.starts_at, window.ends_at
        return None
    upcoming = [b for b in _weekly_bounds(window, after, (0, 1)) if b[0] > after]
    return min(upcoming) if upcoming else None


def _names_match(names: Iterable[str], patterns: list[str]) -> bool:
    """与项目规则相同的匹配（permissions.matches_any）：项目名、别名或通配模式，带文件夹的任务名也用最后一段比。"""
    cleaned = ((name or "").strip().strip("/") for name in names)
    return any(matches_any(name, patterns) for name in cleaned if name)


def window_covers(window: FreezeWindow, *, environment: str, names: Iterable[str]) -> bool:
    """窗口是否管这个环境与项目（projects 为空即所有项目）。"""
    envs = {normalize_environment(e) for e in window.environments or []}
    if ALL_ENVIRONMENTS not in envs and normalize_environment(environment) not in envs:
        return False
    return not window.projects or _names_match(names, window.projects)


def windows_in_force() -> list[FreezeWindow]:
    """所有启用的窗口（一条查询；一次扫描或一次申请只查一次）。"""
    return list(FreezeWindow.objects.filter(is_active=True).order_by("pk"))


def freeze_find(*, names: Iterable[str], environment: str, at: datetime | None = None,
                windows: list[FreezeWindow] | None = None) -> FreezeHit | None:
    """此刻这个项目/环境是否在封版中。names 是项目名、任务名与规则别名。"""
    at = at or timezone.now()
    names = list(names)
    covering = [w for w in (windows_in_force() if windows is None else windows)
                if window_covers(w, environment=environment, names=names)]
    hits = [(w, occ) for w in covering if (occ := occurrence_at(w, at))]
    if not hits:
        return None
    primary, (starts_at, ends_at) = max(hits, key=lambda hit: (hit[1][1], -hit[0].pk))
    seen = [w.name for w, _occ in hits]
    for _step in range(MAX_CHAIN):
        # 结束那一刻另一个窗口正封着：封版还没完
        more = [(w, occ) for w in covering if (occ := occurrence_at(w, ends_at))]
        if not more:
            break
        window, (_begin, finish) = max(more, key=lambda hit: hit[1][1])
        if finish <= ends_at:
            break
        primary, ends_at = window, finish
        seen += [w.name for w, _occ in more]
    return FreezeHit(window=primary, starts_at=min(occ[0] for _w, occ in hits), ends_at=ends_at,
                     names=tuple(dict.fromkeys(seen)))


@dataclass(frozen=True)
class WindowSpan:
    """/freeze 列表的一行：某个窗口的一次。"""

    window: FreezeWindow
    starts_at: datetime
    ends_at: datetime


def freeze_overview(*, at: datetime | None = None, horizon_days: int = 30,
                    limit: int = 8) -> tuple[list[WindowSpan], list[WindowSpan]]:
    """(正在生效的, 接下来 horizon_days 天内开始的)，各按时间排序。"""
    at = at or timezone.now()
    current, upcoming = [], []
    for window in windows_in_force():
        occ = occurrence_at(window, at)
        if occ:
            current.append(WindowSpan(window, *occ))
        nxt = next_occurrence(window, at)
        if nxt and nxt[0] <= at + timedelta(days=horizon_days):
            upcoming.append(WindowSpan(window, *nxt))
    current.sort(key=lambda s: (s.ends_at, s.window.pk))
    upcoming.sort(key=lambda s: (s.starts_at, s.window.pk))
    return current[:limit], upcoming[:limit]


# ---------------------------------------------------------------- 临时封版（/freeze、/unfreeze）


def _require_admin(actor: Approver | None, message: str) -> Approver:
    access = check_bot_access(actor)
    if not access:
        raise PolicyError(access.reason, code=access.code)
    assert actor is not None
    if not actor.role.is_admin:
        raise PolicyError(message, code="not_admin")
    return actor


@transaction.atomic
def freeze_start(*, actor: Approver | None, environment: str, minutes: int, reason: str,
                 channel: str) -> FreezeWindow:
    """管理员立即开始一次临时封版（一次性窗口，source=admin：配置加载不会动它）。"""
    actor = _require_admin(actor, _("只有管理员可以开始临时封版。"))
    env = normalize_environment(environment)
    if not env or len(env) > 32:
        raise PolicyError(_("请写明要封版的环境，如 production。"), code="invalid_environment")
    if not 1 <= minutes <= MAX_ADHOC_MINUTES:
        raise PolicyError(_("临时封版的时长必须在 1 分钟到 30 天之间。"), code="invalid_duration")
    reason = (reason or "").strip()
    if not reason:
        raise PolicyError(_("请写明封版原因。"), code="missing_reason")
    now = timezone.now()
    window = FreezeWindow.objects.create(
        name=_("临时封版"), kind=FreezeKind.ONCE, environments=[env], projects=[], starts_at=now,
        ends_at=now + timedelta(minutes=minutes), reason=reason[:1000], source=Source.ADMIN, created_by=actor,
    )
    policy_event_record(kind=PolicyEventKind.FREEZE_STARTED, channel=channel, actor=actor, freeze_window=window,
                        details={"environment": env, "minutes": minutes, "ends_at": window.ends_at.isoformat(),
                                 "reason": window.reason})
    return window


@transaction.atomic
def freeze_end(*, actor: Approver | None, environment: str | None, channel: str) -> list[FreezeWindow]:
    """管理员提前结束正在生效的临时封版（后台或 Telegram 建的一次性窗口）；不给环境时结束全部。

    配置文件里的窗口与每周窗口不在此列：它们是长期策略，改配置才算数（紧急发布另有 emergency 通道）。
    """
    actor = _require_admin(actor, _("只有管理员可以结束临时封版。"))
    env = normalize_environment(environment) if environment else None
    now = timezone.now()
    candidates = FreezeWindow.objects.select_for_update().filter(
        is_active=True, kind=FreezeKind.ONCE, source=Source.ADMIN, starts_at__lte=now, ends_at__gt=now)
    ended = []
    for window in candidates.order_by("pk"):
        envs = {normalize_environment(e) for e in window.environments}
        if env is not None and env not in envs and ALL_ENVIRONMENTS not in envs:
            continue
        if window.starts_at >= now:  # 同一刻刚开始的：ends_at 不能等于 starts_at，直接停用
            window.is_active = False
        else:
            window.ends_at = now
        window.save(update_fields=["ends_at", "is_active", "updated_at"])
        policy_event_record(kind=PolicyEventKind.FREEZE_ENDED, channel=channel, actor=actor, freeze_window=window,
                            details={"environment": env, "ended_at": now.isoformat()})
        ended.append(window)
    return ended
