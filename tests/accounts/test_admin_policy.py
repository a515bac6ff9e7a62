"""发布策略的后台：封版窗口可建可改（写审计），委托经服务授予与撤销（不能改、不能删），策略审计只读。"""

# covers X4, X16

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from accounts.models import Approver, Delegation, FreezeKind, FreezeWindow, PolicyEvent, PolicyEventKind, Source


@pytest.fixture
def admin_client_(client, people):
    user = User.objects.create_superuser("root", password="x")
    Approver.objects.filter(pk=people["admin"].pk).update(user=user)
    client.force_login(user)
    return client


def split(name: str, value) -> dict[str, str]:
    """后台的日期时间是拆成日期与时刻两个输入框的。"""
    if isinstance(value, str):
        day, _sep, clock = value.partition(" ")
    else:
        local = timezone.localtime(value)
        day, clock = local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")
    return {f"{name}_0": day, f"{name}_1": clock}


@pytest.mark.parametrize("model", ["freezewindow", "delegation", "policyevent"])
def test_changelists_load(admin_client_, model):
    assert admin_client_.get(reverse(f"admin:accounts_{model}_changelist")).status_code == 200


def test_weekly_window_created_in_admin_is_audited_and_never_touched_by_the_loader(admin_client_, people):
    response = admin_client_.post(reverse("admin:accounts_freezewindow_add"), {
        "name": "周末封版", "kind": "weekly", "environments": "生产, 预发", "projects": "", "start_day": "4",
        "start_time": "18:00", "end_day": "0", "end_time": "09:00", "timezone": "Asia/Shanghai", "reason": "",
        "is_active": "on", **split("starts_at", ""), **split("ends_at", ""),
    })
    assert response.status_code == 302, response.content.decode()
    window = FreezeWindow.objects.get()
    assert window.source == Source.ADMIN and window.environments == ["production", "staging"]
    assert window.created_by == people["admin"]
    event = PolicyEvent.objects.get()
    assert event.kind == PolicyEventKind.FREEZE_STARTED and event.freeze_window == window


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"kind": "weekly", "start_day": "4", "start_time": "18:00"}, "end_day", "每周重复的窗口要填开始与结束的星期和时刻"),
    ({"kind": "weekly", "start_day": "4", "start_time": "18:00", "end_day": "4", "end_time": "18:00"}, "end_time",
     "每周窗口的开始与结束不能是同一时刻"),
    ({"kind": "once", **split("starts_at", "2026-12-26 09:00:00"), **split("ends_at", "2026-12-24 18:00:00")},
     "ends_at", "结束时间必须晚于开始时间"),
    ({"kind": "once", **split("starts_at", "2026-12-26 09:00:00")}, "ends_at", "一次性的窗口要填结束时间"),
    ({"kind": "once", **split("starts_at", "2026-12-24 09:00:00"), **split("ends_at", "2026-12-26 09:00:00"),
      "timezone": "Mars/X"}, "timezone", "未知的时区「Mars/X」"),
    ({"kind": "once", **split("starts_at", "2026-12-24 09:00:00"), **split("ends_at", "2026-12-26 09:00:00"),
      "environments": ""}, "environments", "该字段是必填项"),
])
def test_bad_window_in_admin_is_refused_with_the_reason(admin_client_, data, field, message):
    form = {"name": "x", "environments": "production", "projects": "", "start_day": "", "start_time": "",
            "end_day": "", "end_time": "", **split("starts_at", ""), **split("ends_at", ""), "timezone": "",
            "reason": "", "is_active": "on", **data}
    response = admin_client_.post(reverse("admin:accounts_freezewindow_add"), form)
    assert response.status_code == 200
    assert any(message in str(e) for e in response.context["adminform"].form.errors.get(field, [])), \
        response.context["adminform"].form.errors
    assert not FreezeWindow.objects.exists() and not PolicyEvent.objects.exists()


def test_delegation_is_granted_through_the_service_and_revoked_by_action(admin_client_, people, shop_rule):
    now = timezone.now()
    add = reverse("admin:accounts_delegation_add")
    refused = admin_client_.post(add, {"delegator": people["requester"].pk, "delegate": people["approver"].pk,
                                       **split("starts_at", now), **split("ends_at", now + timedelta(days=2)),
                                       "projects": "", "environments": "", "reason": ""})
    assert refused.status_code == 200 and "没有可以委托的审批权" in refused.content.decode()
    assert not Delegation.objects.exists()

    response = admin_client_.post(add, {"delegator": people["approver"].pk, "delegate": people["outsider"].pk,
                                        **split("starts_at", now), **split("ends_at", now + timedelta(days=2)),
                                        "projects": "shop-*", "environments": "生产", "reason": "休假"})
    assert response.status_code == 302, response.content.decode()
    delegation = Delegation.objects.get()
    assert delegation.environments == ["production"] and delegation.created_by == people["admin"]
    granted = PolicyEvent.objects.get(kind=PolicyEventKind.DELEGATION_GRANTED)
    assert granted.channel == "admin" and granted.actor == people["admin"]

    admin_client_.post(reverse("admin:accounts_delegation_changelist"), {
        "action": "revoke_selected", helpers.ACTION_CHECKBOX_NAME: [delegation.pk]})
    delegation.refresh_from_db()
    assert delegation.revoked_at is not None and delegation.revoked_by == people["admin"]
    assert PolicyEvent.objects.filter(kind=PolicyEventKind.DELEGATION_REVOKED).count() == 1


def test_policy_audit_is_read_only_and_exports_csv(admin_client_, people):
    window = FreezeWindow.objects.create(name="临时封版", kind=FreezeKind.ONCE, environments=["production"],
                                         starts_at=timezone.now(), ends_at=timezone.now() + timedelta(hours=1))
    event = PolicyEvent.objects.create(kind=PolicyEventKind.FREEZE_STARTED, actor=people["admin"],
                                       actor_name="Alice", channel="telegram", freeze_window=window,
                                       details={"reason": "=cmd"})
    change = admin_client_.get(reverse("admin:accounts_policyevent_change", args=[event.pk]))
    assert change.status_code == 200 and "_save" not in change.content.decode()
    assert admin_client_.get(reverse("admin:accounts_policyevent_add")).status_code == 403
    response = admin_client_.post(reverse("admin:accounts_policyevent_changelist"), {
        "action": "export_csv", helpers.ACTION_CHECKBOX_NAME: [event.pk]})
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    assert text.splitlines()[0] == "时间,类型,操作人,渠道,封版窗口,委托,审批编号,详情"
    assert "开始临时封版,Alice,telegram,临时封版" in text
    with pytest.raises(ValueError):
        event.save()
