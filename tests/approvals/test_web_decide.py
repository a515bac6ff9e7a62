"""网页上的同意/拒绝（POST /approvals/<编号>/decide，首页与后台审批页的按钮）：同一个服务与权限检查，
渠道「管理后台」，CSRF 保护，每一种拒绝都有明确的提示，什么都没写进去。"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from approvals.models import Channel, EventKind, Status, Vote

pytestmark = pytest.mark.django_db


def decide_url(approval) -> str:
    return f"/approvals/{approval.public_id}/decide"


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _linked(client: Client, approver, username: str = "staff") -> User:
    user = User.objects.create_user(username, password="x", is_staff=True)
    approver.user = user
    approver.save()
    client.force_login(user)
    return user


def test_approve_from_the_web_is_recorded_with_the_admin_channel(client, people, shop_rule, make_approval):
    _linked(client, people["approver"])
    approval = make_approval(environment="test")

    response = client.post(decide_url(approval), {"decision": "approve", "reason": "已核对", "next": "/"}, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert _messages(response) == [f"{approval.public_id}：已同意。"]
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED and approval.decided_by == people["approver"]
    assert approval.decision_channel == Channel.ADMIN
    event = approval.events.get(kind=EventKind.APPROVED)
    assert event.channel == Channel.ADMIN and event.actor == people["approver"]
    vote = approval.votes.get()
    assert (vote.channel, vote.reason) == (Channel.ADMIN, "已核对")


def test_partial_vote_says_how_many_more_are_needed(client, people, shop_rule, make_approval):
    _linked(client, people["approver"])
    approval = make_approval(environment="production")

    response = client.post(decide_url(approval), {"decision": "approve"}, follow=True)

    assert _messages(response) == [f"{approval.public_id}：已记录你的同意（1/2），还需要其他审批人。"]
    approval.refresh_from_db()
    assert approval.status == Status.PENDING and approval.votes.count() == 1


def test_reject_without_reason_records_the_default_reason(client, people, shop_rule, make_approval):
    _linked(client, people["approver"])
    approval = make_approval(environment="test")

    client.post(decide_url(approval), {"decision": "reject", "reason": "  "})

    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.reason == "在管理后台拒绝"


def test_second_decision_is_told_who_decided_and_when(client, people, shop_rule, make_approval):
    _linked(client, people["approver"])
    approval = make_approval(environment="test")
    client.post(decide_url(approval), {"decision": "approve"}, follow=True)  # 显示过的消息不再出现

    response = client.post(decide_url(approval), {"decision": "reject", "reason": "晚了"}, follow=True)

    (message,) = _messages(response)
    assert message.startswith(f"{approval.public_id}：审批 {approval.public_id} 已由 Bob 于 ") and message.endswith("已同意。")
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED and approval.votes.count() == 1


@pytest.mark.parametrize(("who", "expected"), [
    ("outsider", "项目「shop-backend」的「test」环境只允许以下人员审批：Bob。"),
    ("requester_admin", "你是这次构建的发起人，不能审批自己的发布。"),
])
def test_refusals_are_explained_and_nothing_is_written(client, people, roles, shop_rule, make_approval, who,
                                                       expected):
    if who == "requester_admin":
        person = people["requester"]
        person.role = roles["admin"]  # 管理员也不能自审
        person.save()
    else:
        person = people[who]
    _linked(client, person)
    approval = make_approval(environment="test", requested_by="dave")

    response = client.post(decide_url(approval), {"decision": "approve"}, follow=True)

    assert _messages(response) == [f"{approval.public_id}：{expected}"]
    approval.refresh_from_db()
    assert approval.status == Status.PENDING and not approval.votes.exists()
    assert approval.events.get(kind=EventKind.DENIED).channel == Channel.ADMIN


def test_admin_not_linked_to_an_approver_is_told_how_to_link(admin_client, shop_rule, make_approval):
    approval = make_approval(environment="test")

    response = admin_client.post(decide_url(approval), {"decision": "approve"}, follow=True)

    (message,) = _messages(response)
    assert "你的后台账号「admin」还没有关联审批人" in message and "把「后台账号」设为 admin" in message
    assert not Vote.objects.exists()


@pytest.mark.parametrize(("data", "expected"), [
    ({"decision": "maybe"}, "未知的决定：只能是同意或拒绝。"),
    ({}, "缺少决定（同意或拒绝）。"),
    ({"decision": "reject", "reason": "长" * 1001}, "理由最多 1000 个字符（现在 1001 个）。"),
])
def test_bad_form_input_is_refused_with_a_message(client, people, shop_rule, make_approval, data, expected):
    _linked(client, people["approver"])
    approval = make_approval(environment="test")

    response = client.post(decide_url(approval), data, follow=True)

    assert _messages(response) == [f"{approval.public_id}：{expected}"]
    approval.refresh_from_db()
    assert approval.status == Status.PENDING and not approval.votes.exists()


def test_unknown_approval_is_a_message_not_an_error_page(client, people, shop_rule):
    _linked(client, people["approver"])

    response = client.post("/approvals/ZZZZZZZZ/decide", {"decision": "approve"}, follow=True)

    assert response.status_code == 200
    assert _messages(response) == ["找不到审批「ZZZZZZZZ」。"]


def test_csrf_token_is_required(people, shop_rule, make_approval):
    client = Client(enforce_csrf_checks=True)
    _linked(client, people["approver"])
    approval = make_approval(environment="test")

    response = client.post(decide_url(approval), {"decision": "approve"})

    assert response.status_code == 403
    assert not Vote.objects.exists()


def test_get_is_not_allowed(client, people, shop_rule, make_approval):
    _linked(client, people["approver"])
    approval = make_approval(environment="test")

    assert client.get(decide_url(approval)).status_code == 405
    assert not Vote.objects.exists()


def test_anonymous_is_sent_to_login_and_non_staff_refused(client, people, shop_rule, make_approval):
    approval = make_approval(environment="test")

    anonymous = client.post(decide_url(approval), {"decision": "approve"})
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")

    user = User.objects.create_user("plain", password="x")  # 不是后台账号，即使关联了审批人
    people["approver"].user = user
    people["approver"].save()
    client.force_login(user)
    refused = client.post(decide_url(approval), {"decision": "approve"})
    assert refused.status_code == 403 and "只有后台账号可以在网页上审批" in refused.content.decode()
    assert not Vote.objects.exists()


def test_next_pointing_to_another_site_is_ignored(client, people, shop_rule, make_approval):
    _linked(client, people["approver"])
    approval = make_approval(environment="test")

    response = client.post(decide_url(approval), {"decision": "approve", "next": "https://evil.example.com/"})

    assert response.status_code == 302 and response["Location"] == "/"
