"""首页（/）：访客看到说明与登录入口；后台账号看到待审批（截止时间、票数、能投票的有按钮）、最近的决定、组件状态与链接。"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from approvals.services import approval_decide

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_logged_in(client, people):
    user = User.objects.create_user("bob_staff", password="x", is_staff=True)
    people["approver"].user = user
    people["approver"].save()
    client.force_login(user)
    return user


def test_anonymous_visitor_sees_what_the_service_is_and_a_login_link(client, shop_rule, make_approval):
    approval = make_approval()

    response = client.get("/")

    assert response.status_code == 200
    body = response.content.decode()
    assert "Jenkins 发布审批" in body and "登录后台" in body
    assert f'href="{reverse("admin:login")}?next=/"' in body
    assert approval.public_id not in body  # 访客看不到任何审批
    assert "Not Found" not in body


def test_staff_home_lists_pending_with_deadline_votes_and_buttons(client, bob_logged_in, people, shop_rule,
                                                                  make_approval):
    test_one = make_approval(environment="test", version="v9.9.9")
    prod = make_approval(job_name="folder/shop-api", environment="production")
    approval_decide(approval=prod, approver=people["approver2"], decision="approve", channel="api")

    body = client.get("/").content.decode()

    assert f'id="approval-{test_one.public_id}"' in body and f'id="approval-{prod.public_id}"' in body
    assert "v9.9.9" in body and "0/1" in body and "1/2" in body and "Erin · 同意" in body
    assert "还剩" in body  # 截止时间与剩余时间
    # Bob 两条都能投：两组按钮，提交到同一个投票入口，回到首页
    assert body.count('name="decision" value="approve"') == 2
    assert f'action="/approvals/{test_one.public_id}/decide"' in body
    assert 'name="next" value="/"' in body
    # 最早截止的在前：生产 30 分钟，测试 60 分钟
    assert body.index(f"approval-{prod.public_id}") < body.index(f"approval-{test_one.public_id}")


def test_staff_home_says_why_a_button_is_missing(client, bob_logged_in, people, shop_rule, make_approval):
    voted = make_approval(job_name="folder/shop-api", environment="production")
    approval_decide(approval=voted, approver=people["approver"], decision="approve", channel="api")
    other = make_approval(job_name="payment-gateway", environment="test")  # 没有规则：只有管理员能批

    body = client.get("/").content.decode()

    assert f"你已经对审批 {voted.public_id} 投过票了。" in body  # 与服务层拒绝时说的同一句
    assert "项目「payment-gateway」没有配置审批人，也没有默认审批人，只有管理员可以审批。" in body
    assert f'action="/approvals/{other.public_id}/decide"' not in body


def test_unlinked_admin_is_told_how_to_link_instead_of_getting_buttons(admin_client, shop_rule, make_approval):
    make_approval()

    body = admin_client.get("/").content.decode()

    assert "你的后台账号「admin」还没有关联审批人" in body
    assert reverse("admin:accounts_approver_changelist") in body
    assert 'name="decision"' not in body


def test_recent_decisions_components_and_links(client, bob_logged_in, people, shop_rule, make_approval):
    decided = make_approval(environment="test")
    approval_decide(approval=decided, approver=people["approver"], decision="reject", reason="缺少回滚方案",
                    channel="admin")

    body = client.get("/").content.decode()

    recent = body[body.index('id="recent"'):body.index('id="health"')]
    assert decided.public_id in recent and "已拒绝" in recent and "管理后台" in recent and "缺少回滚方案" in recent
    for component in ("database", "broker", "beat", "jenkins", "telegram"):
        assert f'id="component-{component}"' in body
    assert "没有设置 TELEGRAM_BOT_TOKEN" in body  # 测试里没有配置 Telegram
    for link in (reverse("admin:index"), "/stats", "/api/docs", "/health"):
        assert f'href="{link}"' in body
    assert "没有待审批的发布。" in body


def test_every_page_has_a_language_switch(client, bob_logged_in, shop_rule, make_approval):
    approval = make_approval()
    for url in ("/", f"/logs/{approval.public_id}"):
        body = client.get(url).content.decode()
        assert 'action="/i18n/setlang/"' in body, url
        assert 'value="en"' in body and "English" in body and "简体中文" in body

    switched = client.post("/i18n/setlang/", {"language": "en", "next": "/"}, follow=True)
    assert switched.redirect_chain[-1][0] == "/"
    assert '<html lang="en">' in switched.content.decode()


def test_admin_view_site_points_to_the_home_page(admin_client):
    body = admin_client.get(reverse("admin:index")).content.decode()

    assert '<a href="/">查看站点</a>' in body
    assert 'action="/i18n/setlang/"' in body and 'value="en"' in body  # 后台也有语言切换
    assert admin_client.get("/").status_code == 200


def test_delegate_gets_buttons_and_the_delegator_is_told_why_not(
        client, people, shop_rule, make_approval):
    # 按钮与服务层同一套判断：受托人看得到按钮；委托人在受托人投过之后看到的理由就是服务层会说的那句
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from accounts.delegations import delegation_grant

    now = timezone.now()
    delegation_grant(delegator=people["approver"], delegate=people["outsider"], starts_at=now - timedelta(hours=1),
                     ends_at=now + timedelta(days=1), channel="telegram")
    approval = make_approval(environment="production")  # 两票：受托人投过之后仍在等
    for person in ("outsider", "approver"):
        user = User.objects.create_user(person, password="pw", is_staff=True)
        people[person].user = user
        people[person].save(update_fields=["user"])

    client.force_login(people["outsider"].user)
    assert f'action="/approvals/{approval.public_id}/decide"' in client.get("/").content.decode()
    approval_decide(approval=approval, approver=people["outsider"], decision="approve", channel="api")
    client.force_login(people["approver"].user)
    body = client.get("/").content.decode()
    assert "委托期间委托人与受托人算作一位审批人" in body
    assert f'action="/approvals/{approval.public_id}/decide"' not in body
