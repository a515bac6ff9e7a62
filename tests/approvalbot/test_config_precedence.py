"""默认群与默认期限：显式设置的环境变量 > config/app.json > 内置默认值；随仓库的示例文件没有任何（假的）ID。

新用户照 README 在 .env 里写 TELEGRAM_DEFAULT_CHAT_ID，而 make run 复制来的 config/app.json 曾带着假群 ID 把它盖掉：
消息悄悄发往一个不存在的群。
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from accounts.app_config import app_defaults
from accounts.models import Approver, ProjectRule
from accounts.rules import resolve_rule

pytestmark = pytest.mark.django_db

ROOT = Path(django_settings.BASE_DIR)
EXAMPLES = (ROOT / "config" / "app.example.json", ROOT / "config" / "users.example.json")
ID_KEYS = {"chat_id", "default_chat_id", "allowed_chat_ids", "telegram_id"}


def _load(settings, tmp_path, *, app: dict | Path | None = None, users: dict | Path | None = None) -> str:
    for name, data in (("APP_CONFIG_FILE", app), ("USERS_CONFIG_FILE", users)):
        if isinstance(data, Path):
            setattr(settings, name, data)
        else:
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(data or {}, ensure_ascii=False), encoding="utf-8")
            path.chmod(0o640)
            setattr(settings, name, path)
    settings.CONFIG_BACKUP_DIR = tmp_path / "backups"
    err = StringIO()
    call_command("load_config", stdout=StringIO(), stderr=err)
    return err.getvalue()


def test_environment_default_chat_wins_over_the_file(settings, tmp_path):
    _load(settings, tmp_path, app={"telegram": {"default_chat_id": -1001111111111}})
    settings.TELEGRAM_DEFAULT_CHAT_ID = -1002222222222

    assert app_defaults()["chat_id"] == -1002222222222
    # 读默认群的每一处看到的都是同一个值：规则解析（审批的群）、Telegram 通知的默认群
    assert resolve_rule("some-unknown-job", "production").chat_id == -1002222222222
    from telegram_bot.notices.common import default_chat_id

    assert default_chat_id() == -1002222222222


def test_the_file_is_used_when_the_environment_does_not_say(settings, tmp_path):
    settings.TELEGRAM_DEFAULT_CHAT_ID = None
    _load(settings, tmp_path, app={"telegram": {"default_chat_id": -1001111111111}})

    assert app_defaults()["chat_id"] == -1001111111111
    assert resolve_rule("some-unknown-job", "production").chat_id == -1001111111111


def test_project_chat_still_beats_the_default(settings, tmp_path):
    settings.TELEGRAM_DEFAULT_CHAT_ID = -1002222222222
    _load(settings, tmp_path, users={"users": {"alice": "admin"},
                                     "projects": {"shop": {"approvers": ["alice"], "chat_id": -1003333333333}}})

    assert resolve_rule("shop", "production").chat_id == -1003333333333


def test_explicit_environment_timeout_wins_over_the_file(settings, tmp_path, monkeypatch):
    _load(settings, tmp_path, app={"approval": {"timeout_minutes": 60}, "reminders": {"max_count": 6}})
    assert app_defaults()["timeout_minutes"] == 60

    monkeypatch.setenv("APPROVAL_DEFAULT_TIMEOUT_MINUTES", "15")
    settings.APPROVAL_DEFAULT_TIMEOUT_MINUTES = 15

    values = app_defaults()
    assert values["timeout_minutes"] == 15
    assert values["reminder_max_count"] == 6  # 没设环境变量的项仍由文件决定


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_files_carry_no_chat_or_user_ids(path):
    """示例里的假 ID 会悄悄把消息发错地方（或把权限给了一个真实的陌生账号）：一个也不带。"""
    data = json.loads(path.read_text(encoding="utf-8"))

    assert not (_keys(data) & ID_KEYS), _keys(data) & ID_KEYS
    assert "-100123" not in path.read_text(encoding="utf-8")


def test_loading_the_examples_routes_everything_to_the_environment_chat(settings, tmp_path):
    """make run 复制的示例 + README 的 TELEGRAM_DEFAULT_CHAT_ID：每个项目的审批都发到这个群。"""
    settings.TELEGRAM_DEFAULT_CHAT_ID = -1004444444444
    err = _load(settings, tmp_path, app=EXAMPLES[0], users=EXAMPLES[1])

    assert "警告" not in err.replace("所有用户都可写", "")
    assert app_defaults()["chat_id"] == -1004444444444
    assert not ProjectRule.objects.filter(chat_id__isnull=False).exists()
    assert not Approver.objects.filter(telegram_id__isnull=False).exists()
    for project in ("shop-backend", "商城前端", "finance/payment-api"):
        assert resolve_rule(project, "production").chat_id == -1004444444444
