"""渲染（T10、L5–L10）：中文、emoji、<script> 与 & 的转义、超长说明截断，结果必须能被 Telegram 的 HTML 解析器接受。"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone, translation

from approvals.display import format_time
from approvals.models import Status
from approvals.services import approval_cancel, approval_decide
from telegram_bot.keyboards import approval_keyboard, parse_approval_callback
from telegram_bot.messages import (
    MAX_MESSAGE_LENGTH,
    plain_text,
    render_approval,
    render_detail,
    render_help,
    render_jenkins,
    render_not_served,
    render_pending_page,
    render_start,
    render_stats,
    render_whoami,
    tg_length,
)
from telegram_bot.notices.approvals import approval_load
from tests.fake_telegram import parse_telegram_html, utf16_len

TELEGRAM_TEMPLATES = Path(settings.BASE_DIR) / "templates" / "telegram"


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


# ---------------------------------------------------------------- 模板：逐行排版、转义、适配长度


@pytest.mark.django_db
def test_pending_message_is_exactly_these_lines(shop_rule, make_approval):
    approval = approval_load(make_approval().pk)
    text = parse_telegram_html(render_approval(approval, now=approval.expires_at - timedelta(minutes=59)))
    pid, build = approval.public_id, approval.build_number
    assert text.split("\n") == [
        f"🟢 发布审批 · {pid}",
        "项目：shop-backend",
        "环境：🟢 测试",
        f"任务：shop-backend #{build}",
        "版本：v1.2.3",
        "操作：部署",
        "发起人：Dave",
        "同意票数：0/1",
        f"剩余时间：59 分钟（截止 {format_time(approval.expires_at)}）",
        "发布说明：",
        "修复支付回调 🚀",
        "🔗 构建日志",
        "",
        "⏳ 等待审批",
        f"点击下方按钮，或发送 /approve {pid}、/reject {pid} 理由",
    ]


@pytest.mark.django_db
def test_english_message_uses_english_labels_and_punctuation(shop_rule, make_approval):
    approval = approval_load(make_approval(version="", operation="", description="").pk)
    with translation.override("en"):
        text = parse_telegram_html(render_approval(approval, now=approval.expires_at - timedelta(hours=1)))
    assert text.split("\n")[:7] == [
        f"🟢 Release approval · {approval.public_id}",
        "Project: shop-backend",
        "Environment: 🟢 Test",
        f"Job: shop-backend #{approval.build_number}",
        "Requested by: Dave",
        "Approvals: 0/1",
        f"Time left: 1h 0min (due {format_time(approval.expires_at)})",
    ]


@pytest.mark.django_db
def test_detail_starts_with_the_same_summary_as_the_approval_message(shop_rule, make_approval, people):
    from approvals.selectors import approval_detail

    approval = make_approval(environment="production", version="v2.0.0", operation="蓝绿部署")
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    with time_machine.travel(timezone.now(), tick=False):
        message = parse_telegram_html(render_approval(approval_load(approval.pk))).split("\n")
        detail = parse_telegram_html(render_detail(approval_detail(approval.public_id))).split("\n")
    head = message[:message.index("")]
    assert "同意票数：1/2（Bob）" in head and "环境：🔴 生产" in head
    assert detail[:len(head)] == head


@pytest.mark.django_db
def test_plain_text_is_what_telegram_shows(shop_rule, make_approval):
    approval = make_approval(description='<script>alert("x")</script> & &amp; 5 > 3 🚀', requested_by="<eve>")
    html = render_approval(approval_load(approval.pk))
    assert plain_text(html) == parse_telegram_html(html)
    with translation.override("en"):
        html = render_help()
    assert plain_text(html) == parse_telegram_html(html)
    assert "reply to the bot's prompt" in plain_text(html)


@pytest.mark.django_db
def test_whoami_with_a_huge_scope_is_cut_to_fit(people):
    scope = [f"• project-{i} <生产> & 测试" for i in range(400)]
    html = render_whoami(user_id=1002, username="bob", full_name="Bob", chat_id=1002, chat_type="private",
                         approver=people["approver"], scope_lines=scope)
    assert tg_length(html) <= MAX_MESSAGE_LENGTH
    lines = parse_telegram_html(html).split("\n")
    assert lines[:2] == ["👤 我是谁", "Telegram ID：1002"] and "可审批：" in lines
    assert lines[-1] == "…"
    shown = lines[lines.index("可审批：") + 1:-1]
    assert 10 < len(shown) < 400 and shown == scope[:len(shown)]


def test_jenkins_status_with_many_servers_is_cut_to_fit():
    rows = [{"name": f"ci-{i}", "reachable": False, "error": "connection refused <x> & " * 5} for i in range(100)]
    html = render_jenkins(rows)
    assert tg_length(html) <= MAX_MESSAGE_LENGTH
    lines = parse_telegram_html(html).split("\n")
    assert lines[0] == "🛠 Jenkins 状态" and lines[1].startswith("🔴 ci-0 — 不可达：connection refused <x> &")
    assert lines[-1] == "…" and 2 < len(lines) < 100


@pytest.mark.django_db
def test_template_layout_never_leaks_into_messages(shop_rule, make_approval, people):
    """模板里的缩进、换行、注释都不进消息：没有首尾空行，没有以空格开头的行。"""
    from approvals.selectors import approval_detail

    approval = make_approval()
    approval_decide(approval=approval, approver=people["approver"], decision="reject", reason="不行",
                    channel="telegram")
    pending = approval_load(make_approval().pk)
    rendered = [
        render_approval(approval_load(approval.pk)), render_detail(approval_detail(approval.public_id)),
        render_help(), render_start(approver_label="Bob"), render_start(approver_label=None),
        render_not_served(chat_id=-100, chat_type="group", user_id=1, username="x"),
        render_whoami(user_id=1, username=None, full_name="X", chat_id=1, chat_type="private", approver=None,
                      scope_lines=[]),
        render_stats({"total": 1}), render_pending_page([pending], page=1, pages=1, total=1),
        render_pending_page([], page=1, pages=1, total=0), render_jenkins([]),
        render_jenkins([{"name": "ci", "reachable": True, "version": "2.4", "latency_ms": 5}]),
    ]
    for html in rendered:
        lines = html.split("\n")
        assert lines[0].strip() and lines[-1].strip(), html
        assert not [line for line in lines if line[:1].isspace()], html
        assert "{%" not in html and "{{" not in html


def test_every_translated_string_in_telegram_templates_is_escaped():
    """模板里的译文是“安全”字符串，自动转义不管它：译者写下的 & 或 < 会让 Telegram 拒收整条消息。

    所以每个 {% translate %} 都要经过 force_escape 或 label（或存进变量交给会转义的标签）。"""
    tag = re.compile(r"""{%\s*(?:translate|trans)\s+("[^"]*"|'[^']*')(.*?)%}""")
    raw = []
    for path in sorted(TELEGRAM_TEMPLATES.glob("*.html")):
        for match in tag.finditer(path.read_text(encoding="utf-8")):
            rest = match.group(2).strip()
            if not rest.startswith(("|force_escape", "|label", "as ")):
                raw.append(f"{path.name}: {match.group(0)}")
    assert not raw, "\n".join(raw)
    assert len(list(TELEGRAM_TEMPLATES.glob("*.html"))) >= 10


@pytest.mark.django_db
def test_shared_template_pieces_escape_values_and_refuse_unsafe_links(shop_rule, make_approval, people):
    """通知以后复用的片段：brief 摘要只有项目/环境/任务/版本；提及、链接照样转义，非 http(s) 地址不出链接。"""
    from django.template import engines

    source = """{% load i18n telegram %}{% linemode %}
      {% include "telegram/_summary.html" with brief=True %}
      {% line %}{{ approver|mention }} {{ nobody|mention }}{% endline %}
      {% line %}[{% link good "看 <日志>" %}][{% link bad "x" %}]{% endline %}
      {% line %}{{ "1/2"|with_note:names }}{% endline %}
    {% endlinemode %}"""
    approval = approval_load(make_approval(environment="staging", version="<v3>").pk)
    nobody = type("Nobody", (), {"telegram_id": None, "telegram_username": "no_id", "label": "N"})()
    html = engines["django"].from_string(source).render({
        "approval": approval, "approver": people["approver"], "nobody": nobody,
        "good": "https://ci.example.com/?a=1&b=2", "bad": "javascript:alert(1)", "names": "Bob & <Erin>",
    })
    assert html.split("\n") == [
        "<b>项目：</b>shop-backend",
        "<b>环境：</b>🟡 预发布",
        f"<b>任务：</b>shop-backend #{approval.build_number}",
        "<b>版本：</b>&lt;v3&gt;",
        '<a href="tg://user?id=1002">Bob</a> @no_id',
        '[<a href="https://ci.example.com/?a=1&amp;b=2">看 &lt;日志&gt;</a>][]',
        "1/2（Bob &amp; &lt;Erin&gt;）",
    ]
