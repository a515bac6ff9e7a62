"""渲染（T10、L5–L10）：中文、emoji、<script> 与 & 的转义、超长说明截断，结果必须能被 Telegram 的 HTML 解析器接受。"""

from __future__ import annotations

import pytest

from approvals.models import Status
from approvals.services import approval_cancel, approval_decide
from telegram_bot.keyboards import approval_keyboard, parse_approval_callback
from telegram_bot.messages import MAX_MESSAGE_LENGTH, render_approval, render_detail, tg_length
from telegram_bot.services import approval_load
from tests.fake_telegram import parse_telegram_html, utf16_len


def rendered(approval) -> tuple[str, str]:
    """(HTML 源码, Telegram 解析后的正文)。解析失败会抛出与真实服务器相同的 400。"""
    html = render_approval(approval_load(approval.pk))
    return html, parse_telegram_html(html)


@pytest.mark.django_db
def test_approval_message_shows_every_field_in_chinese(shop_rule, make_approval):
    approval = make_approval(environment="生产", version="v2.0.0", description="新版结算页 🎉", operation="蓝绿部署",
                             build_url="https://ci.example.com/job/shop-backend/7/")
    html, text = rendered(approval)
    assert text.startswith("🔴 【生产】发布审批 · " + approval.public_id)
    for expected in ("项目：shop-backend", "环境：🔴 生产", "版本：v2.0.0", "操作：蓝绿部署", "发起人：Dave",
                     "同意票数：0/2", "剩余时间：29 分钟", "新版结算页 🎉", "Jenkins 构建", "构建日志", "等待审批"):
        assert expected in text
    assert '<a href="https://ci.example.com/job/shop-backend/7/">' in html


@pytest.mark.django_db
@pytest.mark.parametrize(("environment", "badge"), [("prod", "🔴"), ("staging", "🟡"), ("test", "🟢"), ("dev", "🟢"),
                                                    ("qa-7", "🟢")])
def test_environments_look_different_at_a_glance(shop_rule, make_approval, environment, badge):
    _html, text = rendered(make_approval(environment=environment))
    assert text.startswith(badge)


@pytest.mark.django_db
def test_user_values_are_escaped_so_telegram_accepts_the_html(shop_rule, make_approval):
    nasty = '<script>alert("x")</script> & <b>粗体</b> &amp; 5 > 3 < 4'
    approval = make_approval(description=nasty, version="<v1>&", operation="a&b", requested_by="<eve>",
                             build_url='https://ci.example.com/job/x/1/?a=1&b="2"')
    html, text = rendered(approval)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    # 正文里看到的就是用户写的原文
    assert nasty in text
    assert "<v1>&" in text and "a&b" in text and "<eve>" in text


@pytest.mark.django_db
def test_javascript_links_are_not_rendered(shop_rule, make_approval):
    approval = make_approval()
    approval.build_url = "javascript:alert(1)"
    approval.save(update_fields=["build_url"])
    html, text = rendered(approval)
    assert "javascript:" not in html
    assert "Jenkins 构建" not in text


@pytest.mark.django_db
def test_hundred_kilobyte_description_is_cut_to_fit_4096(shop_rule, make_approval):
    description = ("变更说明：修复 <支付> & 结算 🚀\n" * 5000)[:100_000]
    approval = make_approval(description=description)
    html, text = rendered(approval)
    assert tg_length(html) <= MAX_MESSAGE_LENGTH
    assert utf16_len(text) <= MAX_MESSAGE_LENGTH
    assert "…" in text
    # 结构化字段与操作提示仍然完整
    assert "项目：shop-backend" in text and "等待审批" in text and approval.public_id in text
    # 截断没有切坏实体
    assert "&am…" not in html and "&l…" not in html


@pytest.mark.django_db
def test_emoji_heavy_description_counts_utf16_units(shop_rule, make_approval):
    approval = make_approval(description="🚀" * 5000)
    html, text = rendered(approval)
    assert utf16_len(text) <= MAX_MESSAGE_LENGTH
    assert tg_length(html) <= MAX_MESSAGE_LENGTH


@pytest.mark.django_db
def test_decided_message_says_who_when_reason_and_next_step(shop_rule, make_approval, people):
    approval = make_approval()
    approval_decide(approval=approval, approver=people["approver"], decision="reject", reason="数据库迁移未评审 <x>",
                    channel="telegram")
    _html, text = rendered(approval)
    assert "❌ 已拒绝发布" in text
    assert "决定人：Bob" in text and "渠道：Telegram" in text
    assert "拒绝理由：数据库迁移未评审 <x>" in text
    assert "下一步：构建已终止" in text
    assert "等待审批" not in text and "剩余时间" not in text


@pytest.mark.django_db
def test_approved_message_says_build_continues(shop_rule, make_approval, people):
    approval = make_approval()
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api")
    _html, text = rendered(approval)
    assert "✅ 已同意发布" in text and "下一步：构建继续" in text and "渠道：API" in text


@pytest.mark.django_db
def test_cancelled_message_explains(shop_rule, make_approval):
    approval = make_approval()
    approval_cancel(approval=approval, reason="构建已结束（ABORTED）")
    _html, text = rendered(approval)
    assert approval_load(approval.pk).status == Status.CANCELLED
    assert "🚫 审批已取消" in text and "构建已结束（ABORTED）" in text


@pytest.mark.django_db
def test_detail_lists_votes_and_history(shop_rule, make_approval, people):
    approval = make_approval(environment="production", description="x" * 20000)
    approval_decide(approval=approval, approver=people["approver"], decision="approve", reason="看过了",
                    channel="telegram")
    from approvals.selectors import approval_detail

    html = render_detail(approval_detail(approval.public_id))
    text = parse_telegram_html(html)
    assert tg_length(html) <= MAX_MESSAGE_LENGTH
    assert "Bob 同意：看过了" in text
    assert "创建" in text and "投票" in text


def test_callback_data_is_short_and_round_trips():
    markup = approval_keyboard("AB12CD34").to_dict()
    buttons = [b for row in markup["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons] == ["✅ 同意发布", "❌ 拒绝发布"]
    assert [b["callback_data"] for b in buttons] == ["ap:AB12CD34:a", "ap:AB12CD34:r"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)
    assert parse_approval_callback("ap:AB12CD34:r").decision == "reject"


@pytest.mark.parametrize("data", ["", "ap:", "ap:AB12CD34", "ap:AB12CD34:x", "ap:ab12cd34:a", "xx:AB12CD34:a",
                                  "ap:AB12CD34:a:extra", "ap:" + "A" * 70 + ":a", "ap:ＡＢ１２:a", None])
def test_malformed_callback_data_is_rejected(data):
    assert parse_approval_callback(data) is None
