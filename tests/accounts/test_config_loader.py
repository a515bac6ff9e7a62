"""config/users.json 与 config/app.json 的加载（P1–P4、C1–C11）。

坏文件的每一种情况都断言：命令失败、报出写明文件/键路径/问题的中文错误、数据库一行没变（C8）。
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.app_config import app_defaults
from accounts.environments import normalize_environment
from accounts.models import Approver, ConfigState, ProjectRule, Role, Source
from accounts.permissions import check_can_approve
from accounts.rules import resolve_rule
from accounts.tasks import CONFIG_CHANGED_NOTIFY_TASK, config_reload_task
from tests.concurrency import run_together

GOOD = {
    "roles": {"admin": {"name": "管理员", "is_admin": True}, "ops_lead": {"name": "运维负责人"}},
    "users": {
        "alice": "admin",
        "bob": {"role": "ops_lead", "telegram_id": 2002, "name": "Bob", "email": "bob@example.com"},
        "carol": {"role": "项目经理", "telegram_id": 2003, "name": "Carol"},
    },
    "projects": {
        "shop": {
            "aliases": ["商城后端"],
            "approvers": ["bob", "carol"],
            "chat_id": -100111,
            "environments": {"production": {"required_approvals": 2}},
        },
        "pay": {"aliases": ["支付"], "approvers": ["bob"]},
    },
    "default_approvers": ["alice"],
}


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.users = root / "users.json"
        self.app = root / "app.json"
        self.backups = root / "backups"

    @staticmethod
    def _write(path: Path, data: object) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, indent=2)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o640)

    def write_users(self, data: object) -> None:
        self._write(self.users, data)

    def write_app(self, data: object) -> None:
        self._write(self.app, data)


@pytest.fixture
def files(settings, tmp_path, db):
    settings.USERS_CONFIG_FILE = tmp_path / "users.json"
    settings.APP_CONFIG_FILE = tmp_path / "app.json"
    settings.CONFIG_BACKUP_DIR = tmp_path / "backups"
    return Files(tmp_path)


def load(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("load_config", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def load_fails(*args: str) -> str:
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("load_config", *args, stdout=StringIO(), stderr=err)
    return err.getvalue()


def snapshot() -> dict:
    """数据库里权限相关的全部内容（含多对多），用来证明“什么都没变”。"""
    rules = []
    for rule in ProjectRule.objects.order_by("project", "environment"):
        values = {k: v for k, v in rule.__dict__.items() if not k.startswith("_")}
        values["approvers"] = sorted(rule.approvers.values_list("username", flat=True))
        values["owners"] = sorted(rule.owners.values_list("username", flat=True))
        values["approver_roles"] = sorted(rule.approver_roles.values_list("key", flat=True))
        rules.append(values)
    return {
        "roles": list(Role.objects.order_by("key").values()),
        "approvers": list(Approver.objects.order_by("username").values()),
        "rules": rules,
        # 只记错误、还没有过好配置的状态行不算“配置”
        "states": list(ConfigState.objects.exclude(checksum="").order_by("name")
                       .values("name", "data", "checksum", "loaded_at")),
    }


# ---------------------------------------------------------------- 正常加载


def test_simple_form_creates_roles_and_approvers_from_file(files):
    files.write_users({"alice": "admin", "@Bob": "运维负责人", "carol_pm": "项目经理"})

    out, _err = load()

    assert "已加载" in out
    alice = Approver.objects.get(username="alice")
    assert alice.role.is_admin and alice.role.key == "admin" and alice.role.source == Source.FILE
    bob = Approver.objects.get(username="bob")  # @ 去掉、不区分大小写
    assert bob.telegram_username == "bob" and bob.telegram_id is None
    assert bob.source == Source.FILE and bob.is_active
    # 未定义的角色名成为可审批的自定义角色（P3）
    custom = Role.objects.get(key="运维负责人")
    assert custom.can_approve and not custom.is_admin and custom.name == "运维负责人"
    assert Approver.objects.get(username="carol_pm").role.key == "项目经理"
    state = ConfigState.objects.get(name="users")
    assert state.checksum and state.loaded_at and state.last_error == ""


def test_detailed_form_applies_users_projects_environments_and_default(files):
    data = copy.deepcopy(GOOD)
    data["users"]["bob"].update({"projects": ["shop*"], "environments": ["生产", "test"], "jenkins_user": "bob.j"})
    data["projects"]["shop"]["patterns"] = ["mall/shop-*"]
    data["projects"]["shop"]["owners"] = ["alice"]
    data["projects"]["shop"]["environments"] = {
        "生产": {"approvers": ["bob", "carol"], "required_approvals": 2, "timeout_minutes": 30,
                 "timeout_policy": "mark", "stop_build": True,
                 "reminders": {"interval_minutes": 3, "backoff": 2, "max_count": 4}},
    }
    files.write_users(data)

    load()

    bob = Approver.objects.get(username="bob")
    assert (bob.telegram_id, bob.display_name, bob.email, bob.jenkins_user) == (2002, "Bob", "bob@example.com", "bob.j")
    assert bob.projects == ["shop*"] and bob.environments == ["production", "test"]
    assert bob.role.name == "运维负责人"
    base = ProjectRule.objects.get(project="shop", environment="")
    assert base.aliases == ["商城后端"] and base.patterns == ["mall/shop-*"] and base.chat_id == -100111
    assert base.source == Source.FILE
    prod = ProjectRule.objects.get(project="shop", environment="production")  # 生产 → production
    assert (prod.required_approvals, prod.timeout_minutes, prod.timeout_policy, prod.stop_build) == (2, 30, "mark", True)
    assert (prod.reminder_interval_minutes, prod.reminder_backoff, prod.reminder_max_count) == (3, 2.0, 4)
    default = ProjectRule.objects.get(is_default=True)
    assert default.project == "*" and default.environment == ""
    assert list(default.approvers.values_list("username", flat=True)) == ["alice"]

    # 规则真的生效：别名匹配、生产要两票、carol（自定义角色）能批、默认审批人兜底
    rule = resolve_rule("商城后端", "production")
    assert rule.project == "shop" and rule.required_approvals == 2
    assert {a.username for a in rule.approvers} == {"bob", "carol"}
    assert rule.owners[0].username == "alice"
    carol = Approver.objects.get(username="carol")
    assert check_can_approve(carol, project="mall/shop-web", environment="prod").allowed
    unknown = resolve_rule("something-else", "test")
    assert not unknown.matched and [a.username for a in unknown.approvers] == ["alice"]
    assert not check_can_approve(carol, project="something-else", environment="test").allowed


def test_reloading_same_file_changes_nothing(files):
    files.write_users(GOOD)
    load()
    before = snapshot()

    out, _err = load()

    assert "无变化" in out
    after = snapshot()
    # loaded_at 会刷新（表示这次确实加载过），其余一切相同
    for state in before["states"] + after["states"]:
        state.pop("loaded_at")
    assert before == after


# ---------------------------------------------------------------- 坏文件：整份拒绝，数据库不变


def _bad(mutate):
    data = copy.deepcopy(GOOD)
    mutate(data)
    return data


def _set(path: str, value):
    def mutate(data):
        target = data
        keys = path.split("/")
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


BAD_USERS = [
    pytest.param(
        '{\n  "users": {\n    "bob": "ops_lead",\n  }\n}\n',
        "{file}: 第 4 行第 3 列：JSON 格式错误",
        id="bad-json",
    ),
    pytest.param('{"alice": "admin", "alice": "pm"}', "{file}: 重复的键「alice」", id="duplicate-json-key"),
    pytest.param('["alice"]', "{file}: 顶层必须是 JSON 对象", id="top-level-list"),
    pytest.param(
        _bad(_set("projects/shop/approvers", ["bob", "zed"])),
        "{file}: projects.shop.approvers[1]: 用户「zed」未在 users 中定义（也不是后台创建的审批人）",
        id="unknown-user-in-project",
    ),
    pytest.param(
        _bad(_set("default_approvers", ["nobody"])),
        "{file}: default_approvers[0]: 用户「nobody」未在 users 中定义",
        id="unknown-default-approver",
    ),
    pytest.param(
        _bad(_set("projects/shop/chat_id", "-100111")),
        "{file}: projects.shop.chat_id: 必须是整数（Telegram 群 ID，群组是负数，如 -1001234567890），实际是 \"-100111\"（不要加引号）",
        id="chat-id-string",
    ),
    pytest.param(
        _bad(_set("projects/pay/chat_id", 1.5)),
        "{file}: projects.pay.chat_id: 必须是整数",
        id="chat-id-float",
    ),
    pytest.param(
        _bad(_set("projects/pay/aliases", ["商城后端"])),
        "{file}: projects.pay.aliases[0]: 别名「商城后端」已被项目「shop」使用",
        id="duplicate-alias",
    ),
    pytest.param(
        _bad(_set("projects/pay/aliases", ["SHOP"])),
        "{file}: projects.pay.aliases[0]: 别名「SHOP」与项目「shop」的名称或别名相同",
        id="alias-equals-other-project",
    ),
    pytest.param(
        _bad(_set("users/carol/role", "项目 经理")),
        "{file}: users.carol.role: 角色名「项目 经理」不合法",
        id="bad-role",
    ),
    pytest.param(
        _bad(_set("projects/shop/approver_roles", ["tester"])),
        "{file}: projects.shop.approver_roles[0]: 未知角色「tester」",
        id="unknown-approver-role",
    ),
    pytest.param(
        _bad(_set("users/bob/telegram_id", -5)),
        "{file}: users.bob.telegram_id: 不能小于 1，实际是 -5",
        id="negative-telegram-id",
    ),
    pytest.param(
        _bad(_set("users/bob/telegram_id", "bob")),
        "{file}: users.bob.telegram_id: 必须是整数（Telegram 数字用户 ID，正数）",
        id="text-telegram-id",
    ),
    pytest.param(
        _bad(_set("users/carol/telegram_id", 2002)),
        "{file}: users.carol.telegram_id: telegram_id 2002 已被用户「bob」使用",
        id="duplicate-telegram-id",
    ),
    pytest.param(
        _bad(_set("users/bob/email", "not-an-email")),
        "{file}: users.bob.email: 「not-an-email」不是合法的邮箱地址",
        id="bad-email",
    ),
    pytest.param(
        _bad(_set("users/bob/telegramid", 1)),
        "{file}: users.bob.telegramid: 未知的键「telegramid」",
        id="unknown-user-key",
    ),
    pytest.param(
        _bad(_set("projects/shop/environments/production/required_approvals", 0)),
        "{file}: projects.shop.environments.production.required_approvals: 不能小于 1",
        id="required-approvals-zero",
    ),
    pytest.param(
        _bad(_set("projects/shop/environments/production/required_approvals", 3)),
        "{file}: projects.shop.environments.production.required_approvals: 需要 3 票同意，但只有 2 位可用审批人（bob、carol）",
        id="required-approvals-more-than-approvers",
    ),
    pytest.param(
        _bad(_set("projects/pay/timeout_policy", "abort")),
        "{file}: projects.pay.timeout_policy: 未知的超时策略 \"abort\"",
        id="unknown-timeout-policy",
    ),
    pytest.param(
        _bad(_set("projects/pay/timeout_minutes", 0)),
        "{file}: projects.pay.timeout_minutes: 不能小于 1",
        id="timeout-zero",
    ),
    pytest.param(
        _bad(_set("projects/shop/environments", {"prod": {}, "生产": {}})),
        "{file}: projects.shop.environments.生产: 环境「生产」与「prod」是同一个环境（production）",
        id="same-environment-twice",
    ),
    pytest.param(
        _bad(_set("projects/shop/environments/production/aliases", ["x"])),
        "{file}: projects.shop.environments.production.aliases: 只能写在项目一级",
        id="alias-in-environment",
    ),
    pytest.param(
        _bad(_set("projects/pay/reminders", {"interval_minutes": 5, "backoff": 0.5})),
        "{file}: projects.pay.reminders.backoff: 必须是 1 到 10 之间的数字",
        id="bad-backoff",
    ),
    pytest.param(
        _bad(_set("projects/Shop", {"approvers": ["bob"]})),
        "{file}: projects.Shop: 项目「Shop」与「shop」重复",
        id="duplicate-project-case",
    ),
    pytest.param(
        _bad(_set("users/Bob", "admin")),
        "{file}: users.Bob: 用户「bob」重复定义",
        id="duplicate-user-case",
    ),
    pytest.param(
        _bad(_set("projets", {})),
        "{file}: projets: 未知的键「projets」",
        id="typo-top-level",
    ),
    # 类型严格：true 不是整数，"2002" 也不是，1 不是布尔值
    pytest.param(
        _bad(_set("users/bob/telegram_id", "2002")),
        "{file}: users.bob.telegram_id: 必须是整数（Telegram 数字用户 ID，正数），实际是 \"2002\"（不要加引号）",
        id="quoted-telegram-id",
    ),
    pytest.param(
        _bad(_set("projects/shop/environments/production/required_approvals", True)),
        "{file}: projects.shop.environments.production.required_approvals: 必须是整数，实际是 true",
        id="bool-is-not-an-integer",
    ),
    pytest.param(
        _bad(_set("projects/pay/stop_build", "yes")),
        "{file}: projects.pay.stop_build: 必须是 true 或 false，实际是 \"yes\"",
        id="string-is-not-a-bool",
    ),
    pytest.param(
        _bad(_set("roles/ops_lead/can_approve", 1)),
        "{file}: roles.ops_lead.can_approve: 必须是 true 或 false，实际是 1",
        id="int-is-not-a-bool",
    ),
    pytest.param(
        _bad(_set("users/carol", {"telegram_id": 2003})),
        "{file}: users.carol: 缺少 role（角色）",
        id="missing-role",
    ),
    pytest.param(
        _bad(_set("projects/pay/reminders", {"interval": 5})),
        "{file}: projects.pay.reminders.interval: 未知的键「interval」，可用的键：interval_minutes、backoff、max_count",
        id="typo-in-reminders",
    ),
]


@pytest.mark.parametrize(("content", "expected"), BAD_USERS)
def test_invalid_users_file_is_refused_and_nothing_changes(files, content, expected):
    files.write_users(GOOD)
    load()
    before = snapshot()
    good_checksum = ConfigState.objects.get(name="users").checksum

    files.write_users(content)
    err = load_fails()

    message = expected.format(file=files.users)
    assert message in err
    assert "继续使用上一次的好配置" in err
    assert snapshot() == before
    state = ConfigState.objects.get(name="users")
    assert state.checksum == good_checksum
    assert message in state.last_error and state.last_error_at is not None


def test_shorthand_forms_are_normalised(files):
    files.write_users({
        "roles": {"ops_lead": "运维负责人"},
        "users": {"bob": "运维负责人", "carol": {"role": "ops_lead", "environments": "生产", "projects": "shop*"}},
        "projects": {"shop": ["bob", "carol"], "pay": {"approvers": "bob", "aliases": "支付"}},
        "default_approvers": "bob",
    })

    load()

    assert Role.objects.get(key="ops_lead").name == "运维负责人"
    assert Approver.objects.get(username="bob").role.key == "ops_lead"  # 按名称引用简写定义的角色
    carol = Approver.objects.get(username="carol")
    assert carol.environments == ["production"] and carol.projects == ["shop*"]
    shop = ProjectRule.objects.get(project="shop")
    assert set(shop.approvers.values_list("username", flat=True)) == {"bob", "carol"}
    assert ProjectRule.objects.get(project="pay").aliases == ["支付"]
    assert list(ProjectRule.objects.get(is_default=True).approvers.values_list("username", flat=True)) == ["bob"]


def test_a_user_with_one_bad_field_still_counts_as_defined(files):
    files.write_users(_bad(_set("users/bob/telegram_id", True)))

    err = load_fails()

    assert f"{files.users}: users.bob.telegram_id: 必须是整数（Telegram 数字用户 ID，正数），实际是 true" in err
    # 引用 bob 的项目不会再多报一串“未定义”“票数不够”
    assert "未在 users 中定义" not in err and "审批永远无法通过" not in err
    assert not Approver.objects.exists()


def test_all_problems_of_a_file_are_reported_at_once(files):
    data = _bad(_set("projects/shop/chat_id", "x"))
    data["projects"]["pay"]["approvers"] = ["ghost"]
    files.write_users(data)

    err = load_fails()

    assert "projects.shop.chat_id" in err and "用户「ghost」" in err
    assert not Approver.objects.exists() and not ProjectRule.objects.exists()


def _schema_fields() -> list[tuple]:
    from accounts.config import schema
    from accounts.config.errors import visible_fields

    def keys(model, *prefix):
        return [(*prefix, key) for key in visible_fields(model)]

    app_sections = {"approval": schema.ApprovalSection, "reminders": schema.Reminders,
                    "telegram": schema.TelegramSection, "retention": schema.RetentionSection}
    return [
        (schema.UserEntry, {"role": "pm"}, keys(schema.UserEntry)),
        (schema.RoleEntry, {}, keys(schema.RoleEntry)),
        (schema.ProjectEntry, {"environments": {"prod": {}}, "reminders": {}},
         [*keys(schema.ProjectEntry), *keys(schema.Reminders, "reminders"),
          *keys(schema.EnvironmentRule, "environments", "prod"), ("environments", "prod", "aliases")]),
        (schema.AppFile, {name: {} for name in app_sections},
         [*keys(schema.AppFile), *(k for name, model in app_sections.items() for k in keys(model, name))]),
    ]


@pytest.mark.parametrize("value", [True, "5", 1.5, None, [], {}, "", "x" * 300, -1, 0, 10**20, ["a", 1], [0]])
def test_every_schema_problem_is_described_in_chinese(value):
    """pydantic 的每一种错误都有中文说法；升级 pydantic 换了错误类型，这里先失败，而不是把英文报给用户。"""
    from accounts.config.errors import UNKNOWN_PROBLEM, Collector

    fallback = str(UNKNOWN_PROBLEM).split("%")[0]
    for model, base, paths in _schema_fields():
        for path in paths:
            data = copy.deepcopy(base)
            target = data
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            c = Collector("f.json")
            c.validate(model, data)
            for message in c.errors:
                assert "Input should" not in message and f": {fallback}" not in message, (path, message)


# ---------------------------------------------------------------- 文件记录与后台记录


def test_entries_removed_from_file_are_deactivated_not_deleted(files):
    files.write_users(GOOD)
    load()
    data = copy.deepcopy(GOOD)
    del data["users"]["carol"]
    del data["projects"]["pay"]
    data["projects"]["shop"]["approvers"] = ["bob"]
    data["projects"]["shop"]["environments"] = {}
    del data["default_approvers"]
    files.write_users(data)

    out, _err = load()

    assert "停用审批人 1" in out
    carol = Approver.objects.get(username="carol")
    assert not carol.is_active and carol.telegram_id == 2003
    assert not ProjectRule.objects.get(project="pay").is_active
    assert not ProjectRule.objects.get(project="shop", environment="production").is_active
    assert not ProjectRule.objects.get(is_default=True).is_active
    assert not Role.objects.get(key="项目经理").is_active  # 没人再用的文件角色
    assert ProjectRule.objects.get(project="shop", environment="").is_active

    # 加回来就重新启用，还是同一行
    files.write_users(GOOD)
    load()
    assert Approver.objects.get(username="carol").is_active
    assert Approver.objects.filter(username="carol").count() == 1
    assert ProjectRule.objects.get(project="pay").is_active


def test_admin_made_records_are_never_touched(files, people, shop_rule):
    admin_before = snapshot()
    # 文件可以引用后台建的审批人与角色，但不修改它们
    files.write_users({
        "users": {"zoe": "ops_lead", "yan": {"role": "运维负责人", "telegram_id": 3003}},
        "projects": {"billing": {"approvers": ["zoe", "bob"], "approver_roles": ["pm"]}},
    })

    load()

    assert Approver.objects.get(username="zoe").role.key == "ops_lead"  # 按标识引用后台角色
    assert Approver.objects.get(username="yan").role.key == "ops_lead"  # 按名称引用
    billing = ProjectRule.objects.get(project="billing")
    assert set(billing.approvers.values_list("username", flat=True)) == {"zoe", "bob"}
    after = snapshot()
    untouched = {
        "roles": [r for r in after["roles"] if r["source"] == Source.ADMIN],
        "approvers": [a for a in after["approvers"] if a["source"] == Source.ADMIN],
        "rules": [r for r in after["rules"] if r["source"] == Source.ADMIN],
    }
    assert untouched == {k: admin_before[k] for k in ("roles", "approvers", "rules")}

    # 文件删掉这些条目：只停用文件记录，后台记录仍然启用
    files.write_users({"zoe": "ops_lead"})
    load()
    assert Approver.objects.filter(source=Source.ADMIN, is_active=False).count() == 0
    assert ProjectRule.objects.filter(source=Source.ADMIN, is_active=False).count() == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param({"bob": "ops_lead"}, "users.bob: 审批人「bob」已在管理后台创建，配置文件不能接管它", id="user"),
        pytest.param({"users": {"zoe": {"role": "ops_lead", "telegram_id": 1002}}},
                     "users.zoe.telegram_id: telegram_id 1002 已属于后台创建的审批人「bob」", id="telegram-id"),
        pytest.param({"users": {"zoe": {"role": "pm", "telegram_username": "@Bob"}}},
                     "users.zoe: Telegram 用户名 @bob 已属于后台创建的审批人「bob」", id="telegram-username"),
        pytest.param({"roles": {"pm": {"name": "PM"}}, "users": {"zoe": "pm"}},
                     "roles.pm: 角色「pm」已在管理后台创建，配置文件不能修改它", id="role"),
        pytest.param({"users": {"zoe": "ops_lead"}, "projects": {"shop-backend": {"approvers": ["zoe"]}}},
                     "projects.shop-backend: 项目规则「shop-backend」已在管理后台创建", id="project"),
        pytest.param({"users": {"zoe": "ops_lead"}, "projects": {"mall": {"aliases": ["商城后端"]}}},
                     "projects.mall.aliases[0]: 别名「商城后端」与项目「shop-backend」的名称或别名相同", id="alias"),
    ],
)
def test_file_colliding_with_admin_record_is_refused(files, people, shop_rule, content, expected):
    before = snapshot()
    files.write_users(content)

    err = load_fails()

    assert f"{files.users}: {expected}" in err
    assert snapshot() == before


def test_runtime_telegram_binding_survives_reload(files):
    files.write_users({"carol": "pm"})
    load()
    # 机器人在运行时按用户名把 carol 绑定到数字 id
    Approver.objects.filter(username="carol").update(telegram_id=555)

    files.write_users({"carol": {"role": "pm", "name": "Carol Wang"}})
    load()
    carol = Approver.objects.get(username="carol")
    assert carol.telegram_id == 555 and carol.display_name == "Carol Wang"

    # 文件明确写了 id 就以文件为准；id 从旧持有者转给新用户也不会撞唯一约束
    files.write_users({"carol": {"role": "pm", "telegram_id": 777}, "dan": {"role": "pm", "telegram_id": 555}})
    load()
    assert Approver.objects.get(username="carol").telegram_id == 777
    assert Approver.objects.get(username="dan").telegram_id == 555


# ---------------------------------------------------------------- --check、缺文件、权限、备份


def test_check_only_validates_and_writes_nothing(files):
    files.write_users(GOOD)
    files.write_app({"approval": {"timeout_minutes": 30}})

    out, _err = load("--check")

    assert out.count("校验通过") == 2
    assert not Role.objects.exists() and not Approver.objects.exists() and not ProjectRule.objects.exists()
    assert not ConfigState.objects.exists()
    assert not files.backups.exists()

    files.write_users(_bad(_set("projects/shop/chat_id", "x")))
    err = load_fails("--check")
    assert "projects.shop.chat_id" in err
    assert not ConfigState.objects.exists()


def test_missing_files_are_reported_not_an_error_unless_required(files):
    out, _err = load()
    assert f"{files.users} 不存在" in out and f"{files.app} 不存在" in out
    assert not ConfigState.objects.exists()

    load_fails("--require")


def test_world_writable_users_file_is_warned_about(files):
    files.write_users({"alice": "admin"})
    os.chmod(files.users, 0o666)

    _out, err = load()

    assert "所有用户都可写" in err and "chmod 640" in err
    assert Approver.objects.filter(username="alice").exists()  # 只是警告，仍然加载


def test_each_new_content_is_backed_up_and_only_20_kept(files):
    for n in range(22):
        files.write_app({"approval": {"timeout_minutes": n + 1}})
        load()
    load()  # 内容没变：不再多存一份

    backups = sorted(files.backups.glob("app-*.json"))
    assert len(backups) == 20
    assert json.loads(backups[-1].read_text(encoding="utf-8")) == {"approval": {"timeout_minutes": 22}}
    assert json.loads(backups[0].read_text(encoding="utf-8")) == {"approval": {"timeout_minutes": 3}}
    assert oct(backups[-1].stat().st_mode & 0o777) == "0o600"


# ---------------------------------------------------------------- app.json


def test_app_file_overrides_defaults(files):
    files.write_app({
        "_comment": "注释会被忽略",
        "approval": {"timeout_minutes": 45, "timeout_policy": "mark", "stop_build": True},
        "reminders": {"interval_minutes": 10, "backoff": 2, "max_count": 3},
        "telegram": {"default_chat_id": -100999, "future_option": 1},
        "retention": {"approvals_days": 90},
    })

    _out, err = load()

    values = app_defaults()
    assert (values["timeout_minutes"], values["timeout_policy"], values["stop_build"]) == (45, "mark", True)
    assert (values["reminder_interval_minutes"], values["reminder_backoff"], values["reminder_max_count"]) == (10, 2.0, 3)
    assert values["chat_id"] == -100999
    # telegram/retention 里不认识的键：警告并原样保存，留给其他模块
    assert "telegram.future_option: 未知的键" in err
    data = ConfigState.objects.get(name="app").data
    assert "_comment" not in data and data["telegram"]["future_option"] == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param('{"approval": {"timeout_minutes": 30,}}', "第 1 行第 37 列：JSON 格式错误", id="bad-json"),
        pytest.param({"approval": {"timeout_minutes": "30"}}, "approval.timeout_minutes: 必须是整数", id="string-minutes"),
        pytest.param({"approval": {"timeout_policy": "stop"}}, "approval.timeout_policy: 未知的超时策略", id="policy"),
        pytest.param({"approval": {"timeout_minute": 30}}, "approval.timeout_minute: 未知的键「timeout_minute」",
                     id="typo-in-strict-section"),
        pytest.param({"reminders": {"max_count": -1}}, "reminders.max_count: 不能小于 0", id="max-count"),
        pytest.param({"telegram": {"default_chat_id": "群"}}, "telegram.default_chat_id: 必须是整数", id="chat-id"),
        pytest.param({"telegram": {"bot_token": "123:abc"}}, "telegram.bot_token: 密钥不能写在配置文件里",
                     id="secret-in-file"),
        pytest.param({"retention": {"approvals_days": -1}}, "retention.approvals_days: 不能小于 0", id="retention"),
        pytest.param({"retention": {"approval_days": "30"}}, "retention.approval_days: 必须是整数（天数）",
                     id="retention-unknown-days-key"),
        pytest.param({"reminders": {"backoff": True}}, "reminders.backoff: 必须是 1 到 10 之间的数字", id="backoff"),
        pytest.param({"telegram": {"allowed_chat_ids": [-100, "-200"]}},
                     'telegram.allowed_chat_ids[1]: 必须是整数（Telegram 群 ID），实际是 "-200"（不要加引号）',
                     id="allowed-chat-id-string"),
        pytest.param({"telegram": {"allowed_chat_ids": [0]}}, "telegram.allowed_chat_ids[0]: 不能为 0",
                     id="allowed-chat-id-zero"),
        pytest.param({"telegram": {"allowed_chat_ids": -100}}, "telegram.allowed_chat_ids: 必须是整数列表",
                     id="allowed-chat-ids-not-a-list"),
    ],
)
def test_invalid_app_file_is_refused_and_last_good_stays(files, content, expected):
    files.write_app({"approval": {"timeout_minutes": 20}})
    load()
    before = snapshot()

    files.write_app(content)
    err = load_fails()

    assert f"{files.app}: {expected}" in err
    assert snapshot() == before
    assert app_defaults()["timeout_minutes"] == 20
    assert expected in ConfigState.objects.get(name="app").last_error


def test_bad_app_file_does_not_block_good_users_file(files):
    files.write_app({"approval": {"timeout_policy": "nope"}})
    files.write_users({"alice": "admin"})

    load_fails()

    assert Approver.objects.filter(username="alice").exists()


# ---------------------------------------------------------------- 周期热加载（C5–C8）


def test_periodic_reload_applies_only_when_content_changes(files):
    files.write_users({"alice": "admin"})
    assert config_reload_task() == {"users": "applied", "app": "missing"}
    loaded_at = ConfigState.objects.get(name="users").loaded_at

    assert config_reload_task()["users"] == "unchanged"
    assert ConfigState.objects.get(name="users").loaded_at == loaded_at

    files.write_users({"alice": "admin", "bob": "pm"})
    assert config_reload_task()["users"] == "applied"
    assert Approver.objects.filter(username="bob", is_active=True).exists()


def test_periodic_reload_refuses_bad_file_once_and_keeps_last_good(files):
    files.write_users({"alice": "admin"})
    config_reload_task()

    files.write_users('{"alice": ')
    assert config_reload_task()["users"] == "refused"
    state = ConfigState.objects.get(name="users")
    assert "JSON 格式错误" in state.last_error
    # 同一份坏内容不必每 30 秒重复报错
    assert config_reload_task()["users"] == "unchanged"
    assert Approver.objects.get(username="alice").is_active

    # 改回上一个好配置：错误随之清除
    files.write_users({"alice": "admin"})
    assert config_reload_task()["users"] == "unchanged"
    assert ConfigState.objects.get(name="users").last_error == ""


@pytest.fixture
def notices(monkeypatch):
    """记录投递给通知任务的 (name, ok, summary)；真正的通知任务（telegram_bot.notices）另有测试。

    monkeypatch 结束后恢复原注册。
    """
    from approvalbot.celery import app

    calls: list[tuple] = []

    class RecordingNotify:
        def delay(self, name, ok, summary):
            calls.append((name, ok, summary))

    monkeypatch.setitem(app.tasks, CONFIG_CHANGED_NOTIFY_TASK, RecordingNotify())
    return calls


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_refused_content_is_remembered_in_the_database_not_in_the_process(files, notices,
                                                                          django_capture_on_commit_callbacks):
    """每个 prefork worker、重启后的进程都从 ConfigState 得知“这份坏内容已经报过”，不再校验、不再通知。"""
    files.write_users({"alice": "admin"})
    config_reload_task()
    files.write_users('{"alice": ')
    with django_capture_on_commit_callbacks(execute=True):
        assert config_reload_task()["users"] == "refused"
    assert ConfigState.objects.get(name="users").refused_checksum == _sha256(files.users)

    # 另一份坏内容，由另一个 worker（或重启之前）拒绝过：本进程从没见过它，只能从数据库知道
    files.write_users({"alice": "admin", "bob": {"role": "pm", "telegram_id": "5"}})
    ConfigState.objects.filter(name="users").update(refused_checksum=_sha256(files.users),
                                                    last_error="另一个 worker 记下的错误")
    with django_capture_on_commit_callbacks(execute=True):
        assert config_reload_task()["users"] == "unchanged"
    state = ConfigState.objects.get(name="users")
    assert state.last_error == "另一个 worker 记下的错误"
    assert [(name, ok) for name, ok, _summary in notices] == [("users", False)]
    assert not Approver.objects.filter(username="bob").exists()

    # 手动加载（load_config、后台按钮）总是重新校验并报错
    assert f"{files.users}: bob.telegram_id: 必须是整数" in load_fails()

    # 改好了（新内容）：照常生效，被拒记录清空
    files.write_users({"alice": "admin", "bob": {"role": "pm", "telegram_id": 5}})
    with django_capture_on_commit_callbacks(execute=True):
        assert config_reload_task()["users"] == "applied"
    state = ConfigState.objects.get(name="users")
    assert (state.refused_checksum, state.last_error) == ("", "")
    assert [ok for _name, ok, _summary in notices] == [False, True]


def test_reverting_to_last_good_content_clears_the_refusal(files):
    files.write_users({"alice": "admin"})
    config_reload_task()
    files.write_users({"alice": 5})
    assert config_reload_task()["users"] == "refused"

    files.write_users({"alice": "admin"})

    assert config_reload_task()["users"] == "unchanged"
    state = ConfigState.objects.get(name="users")
    assert (state.refused_checksum, state.last_error, state.last_error_at) == ("", "", None)
    files.write_users({"alice": 5})  # 同一份坏内容再出现：又是新的一次错误，要再报
    assert config_reload_task()["users"] == "refused"


@pytest.mark.django_db(transaction=True)
@pytest.mark.mysql
@pytest.mark.skipif(connection.vendor != "mysql", reason="行锁竞争只在 MySQL/MariaDB 上有意义")
@pytest.mark.parametrize(
    ("content", "outcome"),
    [
        pytest.param('{"alice": ', "refused", id="bad-json"),
        pytest.param({"alice": "admin", "bob": {"role": "pm", "telegram_id": "5"}}, "refused", id="bad-schema"),
        pytest.param({"alice": "admin", "bob": "pm"}, "applied", id="good"),
    ],
)
def test_two_workers_seeing_new_content_at_once_announce_it_once(files, notices, content, outcome):
    files.write_users({"alice": "admin"})
    config_reload_task()
    notices.clear()
    files.write_users(content)

    results = run_together([config_reload_task, config_reload_task])

    assert sorted(result["users"] for _kind, result in results) == sorted([outcome, "unchanged"])
    assert [(name, ok) for name, ok, _summary in notices] == [("users", outcome == "applied")]


def test_change_notice_is_enqueued_when_notify_task_is_registered(files, notices, django_capture_on_commit_callbacks):
    files.write_users({"alice": "admin"})
    with django_capture_on_commit_callbacks(execute=True):
        config_reload_task()
    with django_capture_on_commit_callbacks(execute=True):
        config_reload_task()  # 没变化：不通知

    assert len(notices) == 1
    name, ok, summary = notices[0]
    assert name == "users" and ok is True and "新建审批人 1" in summary


@pytest.mark.django_db(transaction=True)  # beat 在事务之外运行（见 tests/approvalbot/test_project.py）
def test_reload_is_declared_as_periodic_task():
    from django_celery_beat.models import PeriodicTask

    from approvalbot.beat import Scheduler
    from approvalbot.celery import app

    Scheduler(app=app)  # beat 启动时做的事

    task = PeriodicTask.objects.get(name="[auto] accounts.config_reload")
    assert task.task == "accounts.tasks.config_reload_task" and task.interval.every == 30
    assert task.task in app.tasks


# ---------------------------------------------------------------- 随仓库提供的示例文件


def test_example_files_validate_and_work(files, settings):
    settings.USERS_CONFIG_FILE = Path(django_settings.BASE_DIR) / "config" / "users.example.json"
    settings.APP_CONFIG_FILE = Path(django_settings.BASE_DIR) / "config" / "app.example.json"

    out, err = load()

    assert out.count("已加载") == 2
    assert "警告" not in err.replace("所有用户都可写", "")  # 检出目录的权限因机器而异，不算示例的问题
    rule = resolve_rule("商城后端", normalize_environment("生产"))
    assert rule.project == "shop-backend" and rule.required_approvals == 2 and rule.stop_build is True
    assert {a.display_name for a in rule.approvers} == {"李娜", "刘洋"}
    assert resolve_rule("finance/payment-api", "production").required_approvals == 2
    assert Approver.objects.get(username="sun_ops").role.key == "ops_lead"  # 按角色名称引用
    assert Approver.objects.get(username="chen_jie").telegram_username == "chenjie_dev"
    assert not check_can_approve(Approver.objects.get(username="zhao_lei"), project="shop-backend",
                                 environment="test").allowed
    assert app_defaults()["chat_id"] is None  # 示例文件里没有真实的群 id：部署时自己填
