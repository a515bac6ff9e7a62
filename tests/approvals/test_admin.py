"""审批后台（X9、P9/P11 经后台）：列表、筛选、搜索、只读、同意/拒绝动作与 CSV 导出。"""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from approvals.builds import build_result_record
from approvals.models import Approval, ApprovalEvent, BuildLog, Channel, EventKind, Status

CHANGELIST = reverse("admin:approvals_approval_changelist")


def _staff(username: str) -> User:
    """只有查看权限的后台账号：能不能审批只看它关联的审批人（服务层检查），不看 Django 权限。"""
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="approvals", codename__startswith="view_"
    ))
    return user


@pytest.fixture
def bob_staff(client, people):
    user = _staff("bob_staff")
    people["approver"].user = user
    people["approver"].save()
    client.force_login(user)
    return user


def _action(client, action: str, approvals: list[Approval], **extra):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [a.pk for a in approvals], "index": "0", **extra}
    return client.post(CHANGELIST, data, follow=True)


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# ---------------------------------------------------------------- 列表、筛选、搜索


def test_changelist_loads_for_staff_with_chinese_labels(client, bob_staff, shop_rule, make_approval):
    approval = make_approval()

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    body = response.content.decode()
    assert approval.public_id in body and "待审批" in body and "同意所选审批" in body and "拒绝所选审批" in body
    assert "0/1" in body  # 同意票/所需票数


def test_filters_and_search_narrow_the_list(client, bob_staff, shop_rule, make_approval):
    test_one = make_approval(environment="test", version="v1.0.0")
    prod_one = make_approval(environment="生产", version="v2.0.0", description="大促前的紧急修复")

    def ids(**params):
        response = client.get(CHANGELIST, params)
        assert response.status_code == 200
        return {a.public_id for a in response.context["cl"].result_list}

    assert ids(environment="production") == {prod_one.public_id}
    assert ids(status="pending") == {test_one.public_id, prod_one.public_id}
    assert ids(status="approved") == set()
    assert ids(project="shop-backend") == {test_one.public_id, prod_one.public_id}
    assert ids(q="v2.0.0") == {prod_one.public_id}
    assert ids(q="紧急修复") == {prod_one.public_id}
    assert ids(q=test_one.public_id) == {test_one.public_id}
    created = prod_one.created_at
    assert len(ids(created_at__year=created.year, created_at__month=created.month)) == 2


# ---------------------------------------------------------------- 只读


def test_approval_detail_and_inlines_are_read_only(client, bob_staff, shop_rule, people, make_approval):
    approval = make_approval(environment="production")
    _action(client, "approve_selected", [approval])  # 生产需要两票：投一票后仍待审批，内联里有这张票
    url = reverse("admin:approvals_approval_change", args=[approval.pk])

    response = client.get(url)

    assert response.status_code == 200
    body = response.content.decode()
    assert "Bob" in body and "创建" in body and "投票" in body
    assert not response.context["has_change_permission"]
    for inline in response.context["inline_admin_formsets"]:
        assert not inline.has_add_permission
        assert not inline.has_change_permission
        assert not inline.has_delete_permission
    assert 'name="status"' not in body  # 没有可编辑的字段
    # 直接提交修改也不行
    assert client.post(url, {"status": "approved"}).status_code == 403
    assert client.get(reverse("admin:approvals_approval_add")).status_code == 403
    approval.refresh_from_db()
    assert approval.status == Status.PENDING


# ---------------------------------------------------------------- 同意 / 拒绝动作


def test_approve_action_decides_through_service_as_linked_approver(client, bob_staff, shop_rule, people,
                                                                   make_approval):
    approval = make_approval(environment="test")

    response = _action(client, "approve_selected", [approval])

    assert response.status_code == 200
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED
    assert approval.decided_by == people["approver"] and approval.decision_channel == Channel.ADMIN
    event = approval.events.get(kind=EventKind.APPROVED)
    assert event.channel == Channel.ADMIN and event.actor == people["approver"]
    assert approval.votes.get().channel == Channel.ADMIN
    assert f"已同意：{approval.public_id}" in _messages(response)


def test_approve_action_records_partial_vote_for_two_of_two(client, bob_staff, shop_rule, make_approval):
    approval = make_approval(environment="production")

    response = _action(client, "approve_selected", [approval])

    approval.refresh_from_db()
    assert approval.status == Status.PENDING and approval.votes.count() == 1
    assert f"{approval.public_id}：已记录你的同意（1/2），还需要其他审批人。" in _messages(response)


def test_approve_action_refused_for_staff_without_approver(client, people, shop_rule, make_approval):
    """多半是管理员自己：告诉他去哪里关联（审批人 → 后台账号），而不是“请联系管理员”。"""
    client.force_login(_staff("nobody_staff"))
    approval = make_approval(environment="test")

    response = _action(client, "approve_selected", [approval])

    approval.refresh_from_db()
    assert approval.status == Status.PENDING and not approval.votes.exists()
    assert _messages(response) == [
        f"{approval.public_id}：你的后台账号「nobody_staff」还没有关联审批人，不能以它的身份投票。请在后台「审批人」里"
        "打开你的审批人记录（没有就新建一个），把「后台账号」设为 nobody_staff，保存后再试。"]
    assert approval.events.filter(kind=EventKind.DENIED, channel=Channel.ADMIN).exists()


def test_approve_action_refused_with_service_reason_for_unauthorised_approver(client, people, shop_rule,
                                                                             make_approval):
    staff = _staff("mallory_staff")
    people["outsider"].user = staff
    people["outsider"].save()
    client.force_login(staff)
    approval = make_approval(environment="test")

    response = _action(client, "approve_selected", [approval])

    approval.refresh_from_db()
    assert approval.status == Status.PENDING
    expected = f"{approval.public_id}：项目「shop-backend」的「test」环境只允许以下人员审批：Bob。"
    assert expected in _messages(response)
    denied = approval.events.get(kind=EventKind.DENIED)
    assert denied.actor == people["outsider"] and denied.details["code"] == "not_project_approver"


def test_requester_cannot_approve_own_build_from_admin(client, people, shop_rule, make_approval):
    staff = _staff("dave_staff")
    people["requester"].user = staff
    people["requester"].save()
    people["requester"].role = people["admin"].role  # 即使是管理员也不能自审（X2）
    people["requester"].save()
    client.force_login(staff)
    approval = make_approval(environment="test", requested_by="dave")

    response = _action(client, "approve_selected", [approval])

    approval.refresh_from_db()
    assert approval.status == Status.PENDING
    assert f"{approval.public_id}：你是这次构建的发起人，不能审批自己的发布。" in _messages(response)


def test_second_decision_in_admin_is_told_who_decided(client, bob_staff, shop_rule, make_approval):
    approval = make_approval(environment="test")
    _action(client, "approve_selected", [approval])

    response = _action(client, "approve_selected", [approval])

    messages_ = _messages(response)
    assert any(m.startswith(f"{approval.public_id}：审批 {approval.public_id} 已由 Bob 于 ") and m.endswith("已同意。")
               for m in messages_)
    assert approval.votes.count() == 1


def test_reject_action_asks_for_reason_then_rejects(client, bob_staff, shop_rule, make_approval):
    approval = make_approval(environment="test")

    page = client.post(CHANGELIST, {"action": "reject_selected", helpers.ACTION_CHECKBOX_NAME: [approval.pk],
                                    "index": "0"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "拒绝理由" in body and approval.public_id in body
    approval.refresh_from_db()
    assert approval.status == Status.PENDING  # 只是确认页，还没拒绝

    response = client.post(CHANGELIST, {"action": "reject_selected", helpers.ACTION_CHECKBOX_NAME: [approval.pk],
                                        "confirm": "yes", "reason": "版本号写错了 ❌"}, follow=True)

    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.reason == "版本号写错了 ❌"
    assert approval.decision_channel == Channel.ADMIN
    assert approval.events.get(kind=EventKind.REJECTED).channel == Channel.ADMIN
    assert f"已拒绝：{approval.public_id}" in _messages(response)


def test_reject_without_reason_records_default_reason(client, bob_staff, shop_rule, make_approval):
    approval = make_approval(environment="test")

    client.post(CHANGELIST, {"action": "reject_selected", helpers.ACTION_CHECKBOX_NAME: [approval.pk],
                             "confirm": "yes", "reason": ""})

    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.reason == "在管理后台拒绝"


# ---------------------------------------------------------------- CSV 导出（X9）


def _csv(response) -> list[list[str]]:
    raw = b"".join(response.streaming_content)
    assert raw.startswith("\ufeff".encode())  # Excel 靠 BOM 认出 UTF-8
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))


def test_export_approvals_csv_has_header_and_chinese_rows(client, bob_staff, shop_rule, make_approval):
    approval = make_approval(environment="生产", description="修复支付回调 🚀", operation="部署")
    formula = make_approval(description="=HYPERLINK(\"http://evil\")", environment="=cmd|' /c calc'!A0")

    response = client.post(CHANGELIST, {"action": "export_approvals_csv",
                                        helpers.ACTION_CHECKBOX_NAME: [approval.pk, formula.pk], "index": "0"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="approvals-')
    rows = _csv(response)
    assert rows[0] == [
        "审批编号", "项目", "环境", "任务", "构建号", "版本", "操作类型", "发布说明", "发起人", "状态", "所需同意票数",
        "已同意票数", "创建时间", "截止时间", "决定时间", "决定人", "决定渠道", "理由", "Jenkins 操作状态", "构建链接",
    ]
    by_id = {row[0]: row for row in rows[1:]}
    row = by_id[approval.public_id]
    assert row[1:4] == ["shop-backend", "production", "shop-backend"]
    assert row[6:10] == ["部署", "修复支付回调 🚀", "dave", "待审批"]
    assert row[10:12] == ["2", "0"]
    # 公式被转义，Excel 里不会执行（CSV 注入）
    assert by_id[formula.public_id][7] == "'=HYPERLINK(\"http://evil\")"
    assert by_id[formula.public_id][2].startswith("'=")  # 未知环境名原样保存，同样要转义


def test_export_events_csv_from_approvals_and_from_history(client, bob_staff, shop_rule, make_approval):
    approval = make_approval(environment="test")
    _action(client, "approve_selected", [approval])

    response = client.post(CHANGELIST, {"action": "export_events_csv",
                                        helpers.ACTION_CHECKBOX_NAME: [approval.pk], "index": "0"})

    rows = _csv(response)
    assert rows[0] == ["时间", "审批编号", "项目", "环境", "类型", "操作人", "渠道", "详情"]
    kinds = [(row[1], row[4], row[5], row[6]) for row in rows[1:]]
    assert (approval.public_id, "创建", "dave", "API") in kinds
    assert (approval.public_id, "同意", "Bob", "管理后台") in kinds

    history_url = reverse("admin:approvals_approvalevent_changelist")
    events = list(ApprovalEvent.objects.filter(approval=approval))
    response = client.post(history_url, {"action": "export_events_csv",
                                         helpers.ACTION_CHECKBOX_NAME: [e.pk for e in events], "index": "0"})
    assert len(_csv(response)) == len(events) + 1


# ---------------------------------------------------------------- 其他只读页面


def test_history_build_result_and_log_pages_load_read_only(client, bob_staff, shop_rule, make_approval):
    approval = make_approval(environment="test")
    build_result_record(job_name="shop-backend", build_number=approval.build_number, result="FAILURE",
                        duration_ms=125_000)
    log = BuildLog.objects.create(approval=approval, jenkins_server=approval.jenkins_server, job_name="shop-backend",
                                  build_number=approval.build_number, content="开始构建\nERROR: 编译失败\n", size=30)

    history = client.get(reverse("admin:approvals_approvalevent_changelist"), {"kind": "build_result"})
    assert history.status_code == 200
    assert [e.kind for e in history.context["cl"].result_list] == ["build_result"]
    results = client.get(reverse("admin:approvals_buildresult_changelist"))
    assert results.status_code == 200 and "2:05" in results.content.decode()
    detail = client.get(reverse("admin:approvals_buildlog_change", args=[log.pk]))
    assert detail.status_code == 200 and "ERROR: 编译失败" in detail.content.decode()
    assert client.get(reverse("admin:approvals_buildlog_changelist")).status_code == 200
    for name in ("approvalevent", "buildresult", "buildlog"):
        assert client.get(reverse(f"admin:approvals_{name}_add")).status_code == 403


# ---------------------------------------------------------------- 日志链接、审批页上的同意/拒绝、内联的标签


def test_changelist_links_each_approval_to_its_log(client, bob_staff, shop_rule, make_approval):
    approval = make_approval(environment="test")

    body = client.get(CHANGELIST).content.decode()

    assert f'href="/logs/{approval.public_id}"' in body and "构建日志" in body
    log = client.get(f"/logs/{approval.public_id}")  # 已登录的后台账号不需要签名
    assert log.status_code == 200


def test_approval_page_links_the_log_and_offers_decision_to_the_linked_approver(client, bob_staff, shop_rule,
                                                                               make_approval):
    approval = make_approval(environment="test")
    url = reverse("admin:approvals_approval_change", args=[approval.pk])

    body = client.get(url).content.decode()

    assert f'href="/logs/{approval.public_id}"' in body and "查看构建日志" in body
    assert f'action="/approvals/{approval.public_id}/decide"' in body
    assert 'name="decision" value="approve"' in body and 'name="decision" value="reject"' in body
    assert f'name="next" value="{url}"' in body


def test_decision_from_the_approval_page_comes_back_to_it(client, bob_staff, shop_rule, people, make_approval):
    approval = make_approval(environment="test")
    url = reverse("admin:approvals_approval_change", args=[approval.pk])

    response = client.post(f"/approvals/{approval.public_id}/decide",
                           {"decision": "reject", "reason": "回滚方案没写", "next": url}, follow=True)

    assert response.redirect_chain[-1][0] == url
    assert _messages(response) == [f"{approval.public_id}：已拒绝。"]
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.reason == "回滚方案没写"
    assert approval.events.get(kind=EventKind.REJECTED).channel == Channel.ADMIN
    body = response.content.decode()
    assert 'name="decision" value="approve"' not in body  # 已结束：没有按钮了


def test_approval_page_tells_an_unlinked_admin_how_to_link(admin_client, shop_rule, make_approval):
    approval = make_approval(environment="test")

    body = admin_client.get(reverse("admin:approvals_approval_change", args=[approval.pk])).content.decode()

    assert "你的后台账号「admin」还没有关联审批人" in body and "把「后台账号」设为 admin" in body
    assert reverse("admin:accounts_approver_changelist") in body
    assert 'name="decision" value="approve"' not in body


def test_approval_page_says_why_this_approver_cannot_vote(client, people, shop_rule, make_approval):
    staff = _staff("mallory_staff")
    people["outsider"].user = staff
    people["outsider"].save()
    client.force_login(staff)
    approval = make_approval(environment="test")

    body = client.get(reverse("admin:approvals_approval_change", args=[approval.pk])).content.decode()

    assert "项目「shop-backend」的「test」环境只允许以下人员审批：Bob。" in body
    assert 'name="decision" value="approve"' not in body


def test_history_rows_are_labelled_in_words_not_ids(client, bob_staff, shop_rule, make_approval):
    """历史内联的每一行上方曾显示“2 created”（数据库 id 与内部代码）。"""
    approval = make_approval(environment="production")
    _action(client, "approve_selected", [approval])  # 一张票：投票内联也有一行
    event = approval.events.get(kind=EventKind.CREATED)

    body = client.get(reverse("admin:approvals_approval_change", args=[approval.pk])).content.decode()

    assert str(event) not in body and f"{approval.pk} vote" not in body
    history = body[body.index('id="events-group"'):]
    assert "<td class=\"field-kind\"><p>创建</p></td>" in history
    assert "<td class=\"field-kind\"><p>投票</p></td>" in history
    votes = body[body.index('id="votes-group"'):body.index('id="events-group"')]
    assert "Bob" in votes and "同意" in votes
