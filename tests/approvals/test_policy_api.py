"""发布策略在等待接口上的回答（X4、X16）：封版期间是统一错误形状的 409 frozen；紧急发布要写理由；
代投的票在详情里写明为谁投的；OpenAPI 文档与实际一致。"""

# covers X4, X16

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from rest_framework.test import APIClient

from accounts.delegations import delegation_grant
from accounts.models import FreezeKind, FreezeWindow, Weekday
from approvals.models import Approval, ApprovalEvent
from approvals.services import approval_decide
from jenkins_bridge.services import api_token_create

pytestmark = pytest.mark.django_db

WAIT = "/api/stage/approval/wait"
SATURDAY = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
BODY = {"JOB_NAME": "shop-backend", "BUILD_NUMBER": "128", "env": "生产", "BUILD_USER_ID": "dave"}


@pytest.fixture
def client(db):
    _token, raw = api_token_create(name="jenkins", scopes=["jenkins", "read"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


@pytest.fixture
def weekend(db):
    return FreezeWindow.objects.create(
        name="周末封版", kind=FreezeKind.WEEKLY, environments=["production"], start_day=Weekday.FRIDAY,
        start_time=time(18, 0), end_day=Weekday.MONDAY, end_time=time(9, 0))


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def test_frozen_request_is_a_409_with_the_window_and_its_end(client, shop_rule, weekend):
    with time_machine.travel(SATURDAY, tick=False):
        error = error_of(client.post(WAIT, BODY, format="json"), 409, "frozen")
        approval = Approval.objects.get()
        assert error["details"] == {"id": approval.public_id, "status": "rejected", "window": "周末封版",
                                    "ends_at": "2026-11-30T09:00:00+08:00"}
        assert "「周末封版」至 2026-11-30 09:00:00 结束" in error["message"] and "emergency=true" in error["message"]
        # 重复申请与按编号轮询都得到同样的回答，审批只有一条
        assert error_of(client.post(WAIT, BODY, format="json"), 409, "frozen")["details"] == error["details"]
        assert error_of(client.get(WAIT, {"id": approval.public_id, "wait": 5}), 409, "frozen") == error
        listed = client.get("/api/approvals").json()["results"][0]
    assert Approval.objects.count() == 1 and approval.status == "rejected"
    assert listed["reason_code"] == "frozen" and listed["freeze"]["window"] == "周末封版"


def test_emergency_needs_a_reason_and_a_bad_flag_is_refused(client, shop_rule, weekend):
    with time_machine.travel(SATURDAY, tick=False):
        error_of(client.post(WAIT, {**BODY, "emergency": True}, format="json"), 400, "emergency_reason_required")
        bad = error_of(client.post(WAIT, {**BODY, "emergency": "maybe", "emergency_reason": "x"}, format="json"),
                       400, "validation_error")
        assert "emergency" in bad["details"]["fields"]
    assert not Approval.objects.exists() and not ApprovalEvent.objects.exists()


@pytest.mark.parametrize("flag", [True, "true", "1", "YES"])
def test_emergency_inside_a_freeze_waits_for_an_extra_admin(client, shop_rule, weekend, flag):
    with time_machine.travel(SATURDAY, tick=False):
        response = client.post(WAIT, {**BODY, "emergency": flag, "EMERGENCY_REASON": "支付回调故障"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending" and body["required_approvals"] == 3
    assert body["emergency"] == {"reason": "支付回调故障", "admin_approval_required": True}
    assert body["freeze"] == {"window": "周末封版", "ends_at": "2026-11-30T09:00:00+08:00"}
    assert "reason_code" not in body


def test_emergency_in_the_query_string(client, shop_rule, weekend):
    with time_machine.travel(SATURDAY, tick=False):
        response = client.get(WAIT, {**BODY, "emergency": "true", "emergency_reason": "热修复"})
    assert response.status_code == 201 and response.json()["emergency"]["reason"] == "热修复"


def test_delegated_vote_in_the_detail(client, shop_rule, people):
    now = datetime.now(UTC)
    delegation_grant(delegator=people["approver"], delegate=people["outsider"], starts_at=now - timedelta(hours=1),
                     ends_at=now + timedelta(days=1), channel="telegram")
    created = client.post(WAIT, {**BODY, "env": "test"}, format="json").json()
    approval_decide(approval=Approval.objects.get(public_id=created["id"]), approver=people["outsider"],
                    decision="approve", channel="telegram")
    body = client.get(f"/api/status/{created['id']}").json()
    assert body["decided_by"] == "Mallory（代 Bob）"
    [vote] = body["votes"]
    assert (vote["approver"], vote["approver_name"], vote["on_behalf_of"]) == ("mallory", "Mallory（代 Bob）", "bob")


def test_openapi_documents_the_frozen_answer_and_the_emergency_fields(client):
    schema = APIClient().get("/api/schema", {"format": "json"}).json()
    post = schema["paths"][WAIT]["post"]
    assert "409" in post["responses"] and "frozen" in post["responses"]["409"]["description"]
    assert "409" in schema["paths"][WAIT]["get"]["responses"]
    names = {p["name"] for p in schema["paths"][WAIT]["get"]["parameters"]}
    assert {"emergency", "emergency_reason"} <= names
