"""只读后台：历史与状态不能在后台增改；簿记（已处理 update、心跳、告警状态…）管理员可以删，审计不能删。"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import RequestFactory

from accounts.models import ConfigState, PolicyEvent
from approvalbot.operations.models import Heartbeat
from approvals.models import Approval, ApprovalEvent
from telegram_bot.models import IdentityEvent, ProcessedUpdate

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_request():
    request = RequestFactory().get("/admin/")
    request.user = User.objects.create_superuser("root", "root@example.com", "x")
    return request


@pytest.mark.parametrize("model, deletable", [
    (Approval, False), (ApprovalEvent, False), (ConfigState, False), (PolicyEvent, False), (IdentityEvent, False),
    (ProcessedUpdate, True), (Heartbeat, True),
])
def test_read_only_admins_refuse_add_and_change_even_to_a_superuser(superuser_request, model, deletable):
    model_admin = admin.site._registry[model]
    assert not model_admin.has_add_permission(superuser_request)
    assert not model_admin.has_change_permission(superuser_request)
    assert model_admin.has_view_permission(superuser_request)
    assert model_admin.has_delete_permission(superuser_request) is deletable
