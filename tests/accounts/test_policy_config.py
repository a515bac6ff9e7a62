"""发布策略的配置（X1、X4、X15、X16 的配置部分）：users.json 的兼任角色、必需角色、升级与 freeze_pending，
app.json 的 freeze 分区。每个新键写错都被拒绝并说清楚（中文，写明文件、键路径与问题），数据库一行不变；
封版窗口按键从文件同步，文件里删掉的停用，后台建的永不被动。"""

# covers X1, X4, X15

from __future__ import annotations

import copy
from datetime import UTC, datetime, time

import pytest

from accounts.config import ConfigError, app_validate, users_validate
from accounts.models import Approver, ConfigState, FreezeKind, FreezeWindow, ProjectRule, Source, Weekday
from accounts.rules import resolve_rule
from tests.accounts.test_config_loader import GOOD, Files, load, load_fails, snapshot

POLICY_USERS = copy.deepcopy(GOOD)
POLICY_USERS["roles"]["tech_lead"] = {"name": "技术负责人"}
POLICY_USERS["users"]["dan"] = {"role": "tech_lead", "roles": ["ops_lead", "项目经理"], "telegram_id": 2004}
POLICY_USERS["projects"]["shop"].update({
    "required_roles": ["tech_lead", "运维负责人"],
    "escalation": {"approvers": ["alice"], "roles": ["ops_lead"], "after_reminders": 3,
                   "before_deadline_minutes": 10},
    "freeze_pending": "refuse",
})
POLICY_USERS["projects"]["shop"]["approvers"] = ["bob", "carol", "dan"]

FREEZE = {
    "pending": "wait",
    "windows": {
        "weekend": {"name": "周末封版", "environments": ["生产"], "weekly": {"start": "周五 18:00", "end": "mon 09:00"}},
        "spring": {"name": "春节封版", "environments": ["production", "staging"], "projects": ["shop-*"],
                   "start": "2027-02-05 18:00", "end": "2027-02-13 09:00", "reason": "春节值班人少"},
        "ny": {"environments": ["*"], "timezone": "America/New_York",
               "weekly": {"start": "Friday 17:00", "end": "sat 00:00"}},
    },
}


@pytest.fixture
def files(settings, tmp_path, db) -> Files:
    settings.USERS_CONFIG_FILE = tmp_path / "users.json"
    settings.APP_CONFIG_FILE = tmp_path / "app.json"
    settings.CONFIG_BACKUP_DIR = tmp_path / "backups"
    return Files(tmp_path)


def full_snapshot() -> dict:
    base = snapshot()
    base["policy"] = [
        (r.project, r.environment, sorted(r.required_roles.values_list("key", flat=True)),
         sorted(r.escalation_approvers.values_list("username", flat=True)),
         sorted(r.escalation_roles.values_list("key", flat=True)), r.escalate_after_reminders,
         r.escalate_before_minutes, r.freeze_pending)
        for r in ProjectRule.objects.order_by("project", "environment")]
    base["extra_roles"] = [(a.username, sorted(a.extra_roles.values_list("key", flat=True)))
                           for a in Approver.objects.order_by("username")]
    base["freeze"] = list(FreezeWindow.objects.order_by("pk").values())
    return base


# ---------------------------------------------------------------- users.json


def test_policy_keys_of_users_json_are_applied(files):
    files.write_users(POLICY_USERS)
    load()

    dan = Approver.objects.get(username="dan")
    assert dan.role.key == "tech_lead"
    assert sorted(dan.extra_roles.values_list("key", flat=True)) == ["ops_lead", "项目经理"]
    rule = resolve_rule("shop", "production")
    assert {r.key for r in rule.required_roles} == {"tech_lead", "ops_lead"}
    assert [a.username for a in rule.escalation_approvers] == ["alice"]
    assert [r.key for r in rule.escalation_roles] == ["ops_lead"]
    assert (rule.escalate_after_reminders, rule.escalate_before_minutes, rule.freeze_pending) == (3, 10, "refuse")
    assert resolve_rule("pay", "test").freeze_pending == "wait"

    # 从文件里去掉：规则与人的这些设置一并清掉
    files.write_users(GOOD)
    load()
    rule = ProjectRule.objects.get(project="shop", environment="")
    assert not rule.required_roles.exists() and not rule.escalation_approvers.exists()
    assert rule.escalate_after_reminders is None and rule.freeze_pending == ""


def _users_with(path: str, value: object) -> dict:
    data = copy.deepcopy(POLICY_USERS)
    target = data
    *parents, last = path.split("/")
    for part in parents:
        target = target[part]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return data


BAD_USERS = [
    pytest.param(_users_with("users/dan/roles", ["技术 负责人"]),
                 "users.dan.roles[0]: 角色名「技术 负责人」不合法：只能包含文字、数字、下划线或连字符，不能有空格",
                 id="extra-role-with-space"),
    pytest.param(_users_with("users/dan/roles", [7]), "users.dan.roles[0]: 必须是字符串，实际是 7", id="extra-role-int"),
    pytest.param(_users_with("projects/shop/required_roles", ["架构师"]),
                 "projects.shop.required_roles[0]: 未知角色「架构师」：既没有在 roles 中定义，也没有用户使用它",
                 id="unknown-required-role"),
    pytest.param(_users_with("projects/shop/escalation", {}),
                 "projects.shop.escalation: 升级至少要写 approvers（人）或 roles（角色）中的一项", id="escalation-nobody"),
    pytest.param(_users_with("projects/shop/escalation", {"approvers": ["alice"]}),
                 "projects.shop.escalation: 升级至少要写 after_reminders（提醒几次后）或 before_deadline_minutes"
                 "（截止前几分钟）中的一项", id="escalation-when"),
    pytest.param(_users_with("projects/shop/escalation", {"approvers": ["ghost"], "after_reminders": 2}),
                 "projects.shop.escalation.approvers[0]: 用户「ghost」未在 users 中定义（也不是后台创建的审批人）",
                 id="escalation-unknown-person"),
    pytest.param(_users_with("projects/shop/escalation", {"roles": ["ops_lead"], "after_reminders": 0}),
                 "projects.shop.escalation.after_reminders: 不能小于 1，实际是 0", id="escalation-zero"),
    pytest.param(_users_with("projects/shop/escalation", {"roles": ["ops_lead"], "after_reminders": "3"}),
                 'projects.shop.escalation.after_reminders: 必须是整数（提醒次数），实际是 "3"（不要加引号）',
                 id="escalation-quoted-number"),
    pytest.param(_users_with("projects/shop/escalation", {"roles": ["ops_lead"], "before_deadline_minutes": 10081}),
                 "projects.shop.escalation.before_deadline_minutes: 不能大于 10080，实际是 10081",
                 id="escalation-minutes-too-big"),
    pytest.param(_users_with("projects/shop/escalation", {"roles": ["ops_lead"], "after": 3}),
                 "projects.shop.escalation.after: 未知的键「after」，可用的键：approvers、roles、after_reminders、"
                 "before_deadline_minutes", id="escalation-typo"),
    pytest.param(_users_with("projects/shop/freeze_pending", "block"),
                 'projects.shop.freeze_pending: 未知的封版待审批策略 "block"，只能是 wait（继续等待）或 refuse'
                 "（封版开始时拒绝）", id="freeze-pending"),
    pytest.param(_users_with("projects/shop/approvers", ["bob", "carol"]),
                 "projects.shop.required_roles[0]: 要求角色「tech_lead」的一票，但可审批的人（bob、carol）里没有人"
                 "担任这个角色，审批永远无法通过", id="required-role-nobody-holds"),
    pytest.param(_users_with("projects/shop/approvers", ["dan"]),
                 "projects.shop.required_roles[1]: 角色「ops_lead」只能由已占用其他必需角色的人担任（一人只算一个角色），"
                 "审批永远无法通过", id="required-roles-one-person-two-roles"),
]


@pytest.mark.parametrize(("content", "expected"), BAD_USERS)
def test_each_new_users_key_is_validated_in_chinese_and_nothing_changes(files, content, expected):
    files.write_users(POLICY_USERS)
    load()
    before = full_snapshot()

    files.write_users(content)
    err = load_fails()

    assert f"{files.users}: {expected}" in err
    assert full_snapshot() == before


# ---------------------------------------------------------------- app.json 的 freeze


def test_freeze_windows_are_synced_from_app_json_and_admin_ones_are_never_touched(files):
    admin_window = FreezeWindow.objects.create(
        name="后台的窗口", kind=FreezeKind.ONCE, environments=["production"], source=Source.ADMIN, key="weekend",
        starts_at=datetime(2026, 1, 1, tzinfo=UTC), ends_at=datetime(2026, 1, 2, tzinfo=UTC))
    files.write_app({"freeze": FREEZE})
    out, _err = load()

    assert "新建封版窗口 3" in out
    weekend = FreezeWindow.objects.get(source=Source.FILE, key="weekend")
    assert (weekend.kind, weekend.environments, weekend.start_day, weekend.start_time, weekend.end_day,
            weekend.end_time) == (FreezeKind.WEEKLY, ["production"], Weekday.FRIDAY, time(18, 0), Weekday.MONDAY,
                                  time(9, 0))
    spring = FreezeWindow.objects.get(key="spring")
    # 不带时区的时间按 TIME_ZONE（上海）理解
    assert spring.starts_at == datetime(2027, 2, 5, 10, 0, tzinfo=UTC)
    assert spring.projects == ["shop-*"] and spring.reason == "春节值班人少"
    ny = FreezeWindow.objects.get(key="ny")
    assert ny.name == "ny" and ny.timezone == "America/New_York" and ny.environments == ["*"]
    assert ConfigState.objects.get(name="app").data["freeze"]["pending"] == "wait"

    changed = copy.deepcopy(FREEZE)
    del changed["windows"]["spring"]
    changed["windows"]["weekend"]["weekly"]["end"] = "mon 10:00"
    files.write_app({"freeze": changed})
    out, _err = load()
    assert "更新封版窗口 1" in out and "停用封版窗口 1" in out
    spring.refresh_from_db()
    weekend.refresh_from_db()
    assert not spring.is_active and weekend.end_time == time(10, 0)

    files.write_app({"freeze": FREEZE})  # 加回来：同一行重新启用
    load()
    spring.refresh_from_db()
    assert spring.is_active and FreezeWindow.objects.filter(key="spring").count() == 1

    files.write_app({"approval": {"timeout_minutes": 30}})  # 整个 freeze 分区删掉：文件窗口全部停用
    load()
    assert not FreezeWindow.objects.filter(source=Source.FILE, is_active=True).exists()
    admin_window.refresh_from_db()
    assert admin_window.is_active and admin_window.name == "后台的窗口"


def _freeze_with(window: dict | None = None, **section: object) -> dict:
    data = {"freeze": {**copy.deepcopy(FREEZE), **section}}
    if window is not None:
        data["freeze"]["windows"] = {"w": window}
    return data


WEEKLY = {"environments": ["production"], "weekly": {"start": "fri 18:00", "end": "mon 09:00"}}

BAD_APP = [
    pytest.param(_freeze_with({**WEEKLY, "weekly": {"start": "friday 25:00", "end": "mon 09:00"}}),
                 'freeze.windows.w.weekly.start: 「friday 25:00」不是合法的每周时间，要写成“星期 时:分”，'
                 '如 "fri 18:00" 或 "周五 18:00"', id="weekly-time"),
    pytest.param(_freeze_with({**WEEKLY, "weekly": {"start": "fri 18:00", "end": "周五 18:00"}}),
                 "freeze.windows.w.weekly: 每周窗口的开始与结束不能是同一时刻", id="weekly-same"),
    pytest.param(_freeze_with({"environments": ["production"], "start": "2026-12-26 09:00", "end": "2026-12-24 18:00"}),
                 "freeze.windows.w: 结束时间 2026-12-24T18:00 必须晚于开始时间 2026-12-26T09:00", id="range"),
    pytest.param(_freeze_with({"environments": ["production"], "start": "2026-12-24", "end": "2026-12-26 09:00"}),
                 'freeze.windows.w.start: 「2026-12-24」不是合法的时间，要写成 "2026-12-24 18:00"'
                 "（按 timezone 的本地时间）或带时区的 ISO 8601", id="date-only"),
    pytest.param(_freeze_with({**WEEKLY, "start": "2026-12-24 18:00", "end": "2026-12-26 09:00"}),
                 "freeze.windows.w: 要么写 weekly（每周重复），要么同时写 start 与 end（一次性），只能二选一",
                 id="both-forms"),
    pytest.param(_freeze_with({"environments": ["production"], "start": "2026-12-24 18:00"}),
                 "freeze.windows.w: 要么写 weekly（每周重复），要么同时写 start 与 end（一次性），只能二选一",
                 id="half-a-range"),
    pytest.param(_freeze_with({**WEEKLY, "timezone": "Mars/Olympus"}),
                 'freeze.windows.w.timezone: 未知的时区「Mars/Olympus」，要写 IANA 时区名，如 "Asia/Shanghai"',
                 id="timezone"),
    pytest.param(_freeze_with({**WEEKLY, "environments": []}),
                 'freeze.windows.w.environments: 至少写一个环境，如 ["production"]；"*" 表示所有环境', id="no-env"),
    pytest.param(_freeze_with({"weekly": WEEKLY["weekly"]}), "freeze.windows.w: 缺少 environments", id="missing-env"),
    pytest.param(_freeze_with({**WEEKLY, "title": "x"}),
                 "freeze.windows.w.title: 未知的键「title」，可用的键：name、environments、projects、timezone、reason、"
                 "weekly、start、end", id="typo"),
    pytest.param(_freeze_with(pending="stop"),
                 'freeze.pending: 未知的封版待审批策略 "stop"，只能是 wait（继续等待）或 refuse（封版开始时拒绝）',
                 id="pending"),
    pytest.param({"freeze": {"windows": {"周 末!": WEEKLY}}},
                 "freeze.windows.周 末!: 窗口标识只能包含字母、数字、下划线、点或连字符（最多 64 个字符）", id="bad-key"),
    pytest.param({"freeze": {"windows": {"w": {**WEEKLY, "name": 3}}}}, "freeze.windows.w.name: 必须是字符串，实际是 3",
                 id="name-not-text"),
]


@pytest.mark.parametrize(("content", "expected"), BAD_APP)
def test_each_freeze_key_is_validated_in_chinese_and_last_good_stays(files, content, expected):
    files.write_app({"freeze": FREEZE})
    load()
    before = full_snapshot()

    files.write_app(content)
    err = load_fails()

    assert f"{files.app}: {expected}" in err
    assert full_snapshot() == before


def test_validators_can_be_called_without_files(db):
    with pytest.raises(ConfigError) as caught:
        app_validate({"freeze": {"windows": {"w": {"environments": ["x"]}}}})
    assert caught.value.errors == ["app.json: freeze.windows.w: 要么写 weekly（每周重复），要么同时写 start 与 end"
                                   "（一次性），只能二选一"]
    config, warnings = users_validate(copy.deepcopy(POLICY_USERS))
    assert warnings == [] and {u.username: u.extra_roles for u in config.users.values()}["dan"] == [
        "ops_lead", "项目经理"]
