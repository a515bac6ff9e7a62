"""把校验过的 users.json（与 app.json 的封版窗口）写进数据库。调用方负责事务（与校验同一个事务，C8）。

文件来的记录标记 source=file；从文件里删掉的只停用不删除；后台手工建的（source=admin）只被引用，永不被改动。
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from ..models import Approver, FreezeKind, FreezeWindow, ProjectRule, Role, Source
from . import timespec
from .specs import UsersConfig


def users_apply(config: UsersConfig) -> dict[str, int]:
    """把已校验的配置写进数据库。调用方负责事务；只动 source=file 的记录。"""
    summary = dict.fromkeys(
        ("roles_created", "roles_updated", "roles_deactivated", "users_created", "users_updated",
         "users_deactivated", "rules_created", "rules_updated", "rules_deactivated"), 0)
    roles = _apply_roles(config, summary)
    approvers = _apply_approvers(config, roles, summary)
    _apply_rules(config, roles, approvers, summary)
    # 角色最后停用：仍有启用的审批人（包括后台建的）在用的文件角色不停用
    in_use = set(Approver.objects.filter(is_active=True).values_list("role_id", flat=True))
    in_use |= set(Approver.extra_roles.through.objects.filter(approver__is_active=True)
                  .values_list("role_id", flat=True))
    for role in Role.objects.filter(source=Source.FILE, is_active=True).exclude(key__in=list(config.roles)):
        if role.pk not in in_use:
            role.is_active = False
            role.save(update_fields=["is_active"])
            summary["roles_deactivated"] += 1
    return summary


def _save_changes(obj: Any, values: dict[str, Any]) -> bool:
    changed = [k for k, v in values.items() if getattr(obj, k) != v]
    for key in changed:
        setattr(obj, key, values[key])
    if changed:
        obj.save()
    return bool(changed)


def _apply_roles(config: UsersConfig, summary: dict[str, int]) -> dict[str, Role]:
    existing = {r.key: r for r in Role.objects.all()}
    result: dict[str, Role] = {}
    for key, spec in config.roles.items():
        role = existing.get(key)
        values = {"name": spec.name, "is_admin": spec.is_admin, "can_use_bot": spec.can_use_bot,
                  "can_approve": spec.can_approve, "is_active": True}
        if role is None:
            role = Role.objects.create(key=key, source=Source.FILE, **values)
            summary["roles_created"] += 1
        elif role.source == Source.FILE:
            if _save_changes(role, values):
                summary["roles_updated"] += 1
        # 后台建的角色只被引用，不被修改
        result[key] = role
    return result


def _apply_approvers(config: UsersConfig, roles: dict[str, Role], summary: dict[str, int]) -> dict[str, Approver]:
    existing = {a.username.lower(): a for a in Approver.objects.all()}
    # telegram_id 唯一：先把要被别的文件用户占用的 id 从原持有者（文件记录）上摘下来，避免唯一约束冲突
    wanted_ids = {u.telegram_id: name for name, u in config.users.items() if u.telegram_id is not None}
    released: set[int] = set()
    for holder in Approver.objects.filter(telegram_id__in=list(wanted_ids), source=Source.FILE):
        if holder.username.lower() != wanted_ids[holder.telegram_id]:
            holder.telegram_id = None
            holder.save(update_fields=["telegram_id"])
            released.add(holder.pk)
    result: dict[str, Approver] = {}
    for username, spec in config.users.items():
        values: dict[str, Any] = {
            "role": roles[spec.role], "display_name": spec.display_name, "telegram_username": spec.telegram_username,
            "email": spec.email, "jenkins_user": spec.jenkins_user, "projects": spec.projects,
            "environments": spec.environments, "is_active": True,
        }
        # 运行时按用户名绑定的 telegram_id 要保留：文件没写 id 时不动它
        if spec.telegram_id is not None:
            values["telegram_id"] = spec.telegram_id
        approver = existing.get(username)
        changed = False
        if approver is None:
            approver = Approver.objects.create(username=username, source=Source.FILE, **values)
            summary["users_created"] += 1
        else:
            if approver.pk in released:
                approver.refresh_from_db(fields=["telegram_id"])  # 内存里的旧 id 不能再写回去
            changed = _save_changes(approver, values)
        extra = {roles[k].pk for k in spec.extra_roles}
        if set(approver.extra_roles.values_list("pk", flat=True)) != extra:
            approver.extra_roles.set(extra)
            changed = True
        if changed and username in existing:
            summary["users_updated"] += 1
        result[username] = approver
    for approver in Approver.objects.filter(source=Source.FILE, is_active=True):
        if approver.username.lower() not in config.users:
            approver.is_active = False
            approver.save(update_fields=["is_active", "updated_at"])
            summary["users_deactivated"] += 1
    return result


def _apply_rules(config: UsersConfig, roles: dict[str, Role], approvers: dict[str, Approver],
                 summary: dict[str, int]) -> None:
    existing = {(r.project.lower(), r.environment): r for r in ProjectRule.objects.all()}
    admin_people = {a.username.lower(): a for a in Approver.objects.filter(source=Source.ADMIN)}

    def person(name: str) -> Approver:
        return approvers.get(name) or admin_people[name]

    kept: set[int] = set()
    for spec in config.rules:
        values: dict[str, Any] = {
            "project": spec.project, "environment": spec.environment, "is_default": spec.is_default,
            "aliases": spec.aliases, "patterns": spec.patterns, "chat_id": spec.chat_id,
            "required_approvals": spec.required_approvals, "timeout_minutes": spec.timeout_minutes,
            "timeout_policy": spec.timeout_policy, "stop_build": spec.stop_build,
            "reminder_interval_minutes": spec.reminder_interval_minutes, "reminder_backoff": spec.reminder_backoff,
            "reminder_max_count": spec.reminder_max_count, "is_active": True,
            "escalate_after_reminders": spec.escalate_after_reminders,
            "escalate_before_minutes": spec.escalate_before_minutes, "freeze_pending": spec.freeze_pending,
        }
        rule = existing.get((spec.project.lower(), spec.environment))
        created = rule is None
        if rule is None:
            rule = ProjectRule.objects.create(source=Source.FILE, **values)
            summary["rules_created"] += 1
            changed = False
        else:
            changed = _save_changes(rule, values)
        m2m = {
            "approvers": {person(n).pk for n in spec.approvers},
            "owners": {person(n).pk for n in spec.owners},
            "approver_roles": {roles[k].pk for k in spec.approver_roles},
            "required_roles": {roles[k].pk for k in spec.required_roles},
            "escalation_approvers": {person(n).pk for n in spec.escalation_approvers},
            "escalation_roles": {roles[k].pk for k in spec.escalation_roles},
        }
        for attr, wanted in m2m.items():
            manager = getattr(rule, attr)
            if set(manager.values_list("pk", flat=True)) != wanted:
                manager.set(wanted)
                changed = True
        if changed and not created:
            summary["rules_updated"] += 1
        kept.add(rule.pk)
    for rule in ProjectRule.objects.filter(source=Source.FILE, is_active=True).exclude(pk__in=kept):
        rule.is_active = False
        rule.save(update_fields=["is_active", "updated_at"])
        summary["rules_deactivated"] += 1


# ---------------------------------------------------------------- app.json：封版窗口（X4）


def app_apply(config: dict[str, Any]) -> dict[str, int]:
    """把校验过的 app.json 里需要落库的部分写进数据库（目前是封版窗口）。调用方负责事务。"""
    return freeze_windows_apply(config.get("freeze") or {})


def _window_values(key: str, entry: dict[str, Any]) -> dict[str, Any]:
    tz_name = entry.get("timezone") or ""
    values: dict[str, Any] = {
        "name": entry.get("name") or key, "environments": entry["environments"],
        "projects": entry.get("projects") or [], "timezone": tz_name, "reason": entry.get("reason") or "",
        "start_day": None, "start_time": None, "end_day": None, "end_time": None, "starts_at": None,
        "ends_at": None, "is_active": True,
    }
    weekly = entry.get("weekly")
    if weekly:
        (start_day, start_time), (end_day, end_time) = (timespec.parse_weekly(weekly["start"]),
                                                        timespec.parse_weekly(weekly["end"]))
        values.update(kind=FreezeKind.WEEKLY, start_day=start_day, start_time=start_time, end_day=end_day,
                      end_time=end_time)
    else:
        tz = timespec.zone(tz_name or settings.TIME_ZONE)
        values.update(kind=FreezeKind.ONCE, starts_at=timespec.aware(timespec.parse_local(entry["start"]), tz),
                      ends_at=timespec.aware(timespec.parse_local(entry["end"]), tz))
    return values


def freeze_windows_apply(section: dict[str, Any]) -> dict[str, int]:
    """按键同步 source=file 的封版窗口：新的建、变了的改、文件里没有了的停用；后台与 Telegram 建的不动。"""
    summary = dict.fromkeys(("freeze_created", "freeze_updated", "freeze_deactivated"), 0)
    windows = section.get("windows") or {}
    existing = {w.key: w for w in FreezeWindow.objects.filter(source=Source.FILE)}
    for key, entry in windows.items():
        values = _window_values(key, entry)
        window = existing.get(key)
        if window is None:
            FreezeWindow.objects.create(key=key, source=Source.FILE, **values)
            summary["freeze_created"] += 1
        elif _save_changes(window, values):
            summary["freeze_updated"] += 1
    for key, window in existing.items():
        if key not in windows and window.is_active:
            window.is_active = False
            window.save(update_fields=["is_active", "updated_at"])
            summary["freeze_deactivated"] += 1
    return summary
