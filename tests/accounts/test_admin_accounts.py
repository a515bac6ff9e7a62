"""审批人与权限后台：角色、审批人、项目规则可编辑；文件记录有提示；配置状态只读。"""

from __future__ import annotations

import json

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.urls import reverse

from accounts.config import config_reload
from accounts.models import Approver, ConfigState, ProjectRule, Source


@pytest.fixture
def admin_client_(client, db):
    user = User.objects.create_superuser("root", password="x")
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", ["role", "approver", "projectrule", "configstate"])
def test_changelists_load(admin_client_, people, shop_rule, model):
    response = admin_client_.get(reverse(f"admin:accounts_{model}_changelist"))
    assert response.status_code == 200


def test_approver_list_shows_telegram_binding_and_filters(admin_client_, people):
    Approver.objects.filter(username="erin").update(telegram_id=None)

    response = admin_client_.get(reverse("admin:accounts_approver_changelist"), {"bound": "no"})

    assert [a.username for a in response.context["cl"].result_list] == ["erin"]
    assert "⏳ 未绑定 @erin" in response.content.decode()
    bound = admin_client_.get(reverse("admin:accounts_approver_changelist"), {"bound": "yes"}).content.decode()
    assert "✅ 1002 @bob" in bound


def test_approver_created_in_admin_is_marked_admin_and_lists_are_parsed(admin_client_, roles):
    response = admin_client_.post(reverse("admin:accounts_approver_add"), {
        "username": "frank", "display_name": "弗兰克", "role": roles["ops_lead"].pk, "is_active": "on",
        "telegram_username": "@Frank_Ops", "telegram_id": "", "email": "", "jenkins_user": "",
        "projects": "shop-*，pay-*", "environments": "生产\nstaging",
    })

    assert response.status_code == 302
    frank = Approver.objects.get(username="frank")
    assert frank.source == Source.ADMIN
    assert frank.telegram_username == "frank_ops"
    assert frank.projects == ["shop-*", "pay-*"] and frank.environments == ["production", "staging"]


def test_file_managed_record_shows_overwrite_warning(admin_client_, roles):
    approver = Approver.objects.create(username="gina", role=roles["pm"], source=Source.FILE)

    response = admin_client_.get(reverse("admin:accounts_approver_change", args=[approver.pk]))

    assert response.status_code == 200
    assert "配置文件下次变化并重新加载时会被文件内容覆盖" in response.content.decode()
    hank = Approver.objects.create(username="hank", role=roles["pm"])  # 后台建的：没有提示
    admin_made = admin_client_.get(reverse("admin:accounts_approver_change", args=[hank.pk]))
    assert "会被文件内容覆盖" not in admin_made.content.decode()


def _rule_form(**overrides) -> dict:
    data = {
        "project": "billing", "environment": "生产", "aliases": "账单, 计费", "patterns": "finance/billing-*",
        "is_active": "on", "required_approvals": "1", "chat_id": "-100555", "timeout_minutes": "",
        "timeout_policy": "", "stop_build": "unknown", "reminder_interval_minutes": "", "reminder_backoff": "",
        "reminder_max_count": "",
    }
    data.update(overrides)
    return data


def test_project_rule_form_normalises_environment_and_parses_lists(admin_client_, people):
    data = _rule_form(environment="", approvers=[people["approver"].pk])

    response = admin_client_.post(reverse("admin:accounts_projectrule_add"), data)

    assert response.status_code == 302
    rule = ProjectRule.objects.get(project="billing")
    assert rule.aliases == ["账单", "计费"] and rule.patterns == ["finance/billing-*"]
    assert rule.source == Source.ADMIN and rule.chat_id == -100555
    assert list(rule.approvers.all()) == [people["approver"]]

    prod = admin_client_.post(reverse("admin:accounts_projectrule_add"), _rule_form(aliases="", patterns=""))
    assert prod.status_code == 302
    assert ProjectRule.objects.filter(project="billing", environment="production").exists()


def test_project_rule_alias_taken_by_another_project_is_refused(admin_client_, shop_rule):
    before = ProjectRule.objects.count()

    response = admin_client_.post(reverse("admin:accounts_projectrule_add"),
                                  _rule_form(environment="", aliases="商城后端"))

    assert response.status_code == 200
    assert "别名「商城后端」与项目「shop-backend」的名称或别名相同" in response.content.decode()
    assert ProjectRule.objects.count() == before


def test_config_state_is_read_only_and_can_reload(admin_client_, settings, tmp_path):
    settings.USERS_CONFIG_FILE = tmp_path / "users.json"
    settings.APP_CONFIG_FILE = tmp_path / "app.json"
    settings.CONFIG_BACKUP_DIR = tmp_path / "backups"
    settings.USERS_CONFIG_FILE.write_text(json.dumps({"ivy": "admin"}), encoding="utf-8")
    config_reload()
    state = ConfigState.objects.get(name="users")

    detail = admin_client_.get(reverse("admin:accounts_configstate_change", args=[state.pk]))
    assert detail.status_code == 200 and "ivy" in detail.content.decode()
    assert admin_client_.post(reverse("admin:accounts_configstate_change", args=[state.pk]), {}).status_code == 403
    assert admin_client_.get(reverse("admin:accounts_configstate_add")).status_code == 403

    settings.USERS_CONFIG_FILE.write_text(json.dumps({"ivy": "admin", "jack": "pm"}), encoding="utf-8")
    response = admin_client_.post(reverse("admin:accounts_configstate_changelist"), {
        "action": "reload_now", helpers.ACTION_CHECKBOX_NAME: [state.pk], "index": "0"}, follow=True)

    assert response.status_code == 200
    assert Approver.objects.filter(username="jack", source=Source.FILE).exists()
    assert any("已加载" in str(m) for m in response.context["messages"])
