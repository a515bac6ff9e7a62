"""通知模板（templates/telegram/notices/）：用户提供的值与译文一律转义，拆分与截短后仍在 Telegram 的上限内。

文字按假 Bot API 的 HTML 解析器（与 Telegram 同样的规则，标签不合法就报 can't parse entities）还原成用户看到的正文。
"""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import translation

from approvals.models import Approval, BuildResult
from approvals.services import approval_decide
from telegram_bot.messages import MAX_MESSAGE_LENGTH, render_approval, tg_length
from telegram_bot.models import TelegramMessage
from telegram_bot.notices.build_results import render_build_result
from telegram_bot.notices.common import MAX_ENTITIES, entity_count, fits_one_message
from telegram_bot.notices.config import render_config_changed
from telegram_bot.notices.reminders import DigestItem, render_reminder_digest
from telegram_bot.notices.timeouts import render_timeout_notice
from tests.fake_telegram import parse_telegram_html
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
EVIL = '<b>x</b> & "y"'  # 放进每一个用户可控的字段


def shown(html: str) -> str:
    """用户看到的正文；markup 不合法时假 Bot API 与 Telegram 一样拒绝（ApiError）。"""
    return parse_telegram_html(html)


@pytest.fixture
def evil_people(roles):
    from accounts.models import Approver

    linked = Approver.objects.create(username="evil", display_name=f"Eve {EVIL}", role=roles["ops_lead"],
                                     telegram_id=3001)
    by_name = Approver.objects.create(username="mal", display_name=f"Mal {EVIL}", role=roles["ops_lead"],
                                      telegram_username="mal_ops")
    unreachable = Approver.objects.create(username="nia", display_name=f"Nia {EVIL}", role=roles["ops_lead"])
    return linked, by_name, unreachable


@pytest.fixture
def evil_approval(shop_rule, make_approval, people):
    """项目名、版本都带 HTML 的生产审批（要两票），Bob 已同意。"""
    with time_machine.travel(T0, tick=False):
        approval = make_approval(timeout_minutes=60, environment="production")
        approval_decide(approval=approval.pk, approver=people["approver"], decision="approve", channel="api")
    Approval.objects.filter(pk=approval.pk).update(project=f"shop {EVIL}", version=f"v1 {EVIL}")
    return Approval.objects.select_related("requester").get(pk=approval.pk)


def assert_escaped(html: str, text: str, value: str = EVIL) -> None:
    assert value in text  # 用户看到的是原样的字符
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt; &amp; &quot;y&quot;" in html


# ---------------------------------------------------------------- 用户提供的值


def test_timeout_notice_escapes_project_version_and_names(evil_approval, evil_people):
    linked, by_name, unreachable = evil_people
    Approval.objects.filter(pk=evil_approval.pk).update(status="timeout", decided_at=T0 + timedelta(hours=1))
    approval = Approval.objects.select_related("requester").get(pk=evil_approval.pk)
    html = render_timeout_notice(approval, owners=[linked], waiting=[by_name, unreachable])
    text = shown(html)
    assert_escaped(html, text)
    lines = text.split("\n")
    assert f"项目：shop {EVIL}" in lines and f"版本：v1 {EVIL}" in lines
    assert f"👥 未投票的审批人：@mal_ops Nia {EVIL}" in lines  # 没有 id 也没有用户名：只写名字
    assert f"📣 负责人与发起人：Eve {EVIL} Dave" in lines
    assert '<a href="tg://user?id=3001">Eve &lt;b&gt;x&lt;/b&gt; &amp; &quot;y&quot;</a>' in html


def test_timeout_notice_describes_the_approval_like_the_approval_message(shop_rule, make_approval, people):
    approval = make_approval(environment="production", version="v<2>")
    approval.status, approval.decided_at = "timeout", approval.expires_at
    message = shown(render_approval(approval)).split("\n")
    notice = shown(render_timeout_notice(approval, owners=[], waiting=[])).split("\n")
    # 项目、环境、任务、版本四行与审批消息的开头一字不差
    assert notice[1:5] == message[1:5]
    assert notice[1:5] == ["项目：shop-backend", "环境：🔴 生产", f"任务：shop-backend #{approval.build_number}",
                           "版本：v<2>"]


def test_build_result_escapes_project_version_approvers_and_log_tail(evil_approval, evil_people, people):
    linked, by_name, unreachable = evil_people
    Approval.objects.filter(pk=evil_approval.pk).update(project="shop-backend")  # 权限按真实项目检查
    with time_machine.travel(T0, tick=False):
        approval_decide(approval=evil_approval.pk, approver=people["approver2"], decision="approve", channel="api")
    Approval.objects.filter(pk=evil_approval.pk).update(project=f"shop {EVIL}")
    approval = Approval.objects.prefetch_related("votes__approver").get(pk=evil_approval.pk)
    result = BuildResult(approval=approval, jenkins_server=approval.jenkins_server, job_name=f"job {EVIL}",
                         build_number=7, build_url="https://ci.example.com/job/x/7/", result="FAILURE",
                         duration_ms=1000, version=f"v1 {EVIL}")
    tail = f"step 1\nERROR {EVIL}\n"
    html = render_build_result(result, approval=approval, people=[linked, by_name, unreachable], tail=tail)
    text = shown(html)
    assert_escaped(html, text)
    assert text.startswith(f"❌ 构建失败 · shop {EVIL} #7")
    assert f"版本：v1 {EVIL}" in text and f"任务：job {EVIL} #7" in text
    assert f"审批：{approval.public_id} Bob、Erin 同意" in text
    assert f"📣 请关注：Eve {EVIL} @mal_ops Nia {EVIL}" in text
    assert text.endswith(f"日志末尾（最后 30 行）：\nstep 1\nERROR {EVIL}\n")
    assert "<pre>step 1\nERROR &lt;b&gt;x&lt;/b&gt; &amp; &quot;y&quot;\n</pre>" in html


def test_build_result_keeps_the_end_of_a_huge_log_tail_within_the_limit():
    from jenkins_bridge.models import JenkinsServer

    server = JenkinsServer.objects.create(name="ci", url="https://ci.example.com/")
    tail = "".join(f"line {i} <tag> & {'x' * 60}\n" for i in range(500)) + f"FATAL {EVIL}"
    result = BuildResult(jenkins_server=server, job_name="shop", build_number=9, result="UNSTABLE",
                         project=f"p {EVIL}")
    html = render_build_result(result, approval=None, people=[], tail=tail)
    text = shown(html)
    assert tg_length(html) <= MAX_MESSAGE_LENGTH
    assert "审批：（这次构建没有经过审批）" in text
    body = text.split("日志末尾（最后 30 行）：\n", 1)[1]
    assert body.startswith("…") and body.endswith(f"FATAL {EVIL}") and len(body) > 3000
    assert_escaped(html, text)


@pytest.mark.parametrize("ok", [True, False])
def test_config_notice_escapes_and_cuts_the_summary(ok):
    summary = f"users.json: {EVIL}\n" + "".join(f"第 {i} 行 <field> & \"v\"\n" for i in range(1500))
    html = render_config_changed("users", ok, summary)
    text = shown(html)
    assert tg_length(html) <= MAX_MESSAGE_LENGTH
    first = "配置已重新加载：users.json" if ok else "配置被拒绝：users.json"
    assert text.split("\n")[0].endswith(first)
    assert ("文件有错误，上一个好配置继续生效。" in text) is not ok
    assert_escaped(html, text)
    assert html.endswith("…</pre>") and text.endswith("…")


def test_digest_escapes_project_version_and_display_names(evil_approval, evil_people):
    linked, by_name, unreachable = evil_people
    item = DigestItem(approval=evil_approval, waiting=[linked, by_name, unreachable], owners=[linked],
                      message=TelegramMessage(chat_id=GROUP_ID, message_id=55), chat_id=GROUP_ID)
    with time_machine.travel(T0, tick=False):
        [part] = render_reminder_digest([item], now=T0)
    text = shown(part.text)
    assert "<b>x</b>" not in part.text
    assert f"shop {EVIL}" in text and f"v1 {EVIL}" in text
    assert f"👥 待审批：Eve {EVIL} @mal_ops Nia {EVIL}" in text
    # 负责人在上文已被提及：只写名字，不再链接
    assert f"📣 项目负责人：Eve {EVIL}" in text and part.text.count("tg://user?id=3001") == 1
    assert part.reply_to == 55


# ---------------------------------------------------------------- 译文


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """最小的 GNU .mo 文件（不依赖 msgfmt）：头部声明 UTF-8，其余是 msgid → msgstr。"""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(entries)
    ids = [k.encode() for k in keys]
    strs = [entries[k].encode() for k in keys]
    count = len(keys)
    start = 7 * 4 + 2 * count * 8
    blob, originals, translations = b"", [], []
    for table, values in ((originals, ids), (translations, strs)):
        for value in values:
            table.append((len(value), start + len(blob)))
            blob += value + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, count, 28, 28 + count * 8, 0, 0)
    body = b"".join(struct.pack("<2I", *pair) for pair in originals + translations)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + body + blob)


@pytest.fixture
def html_translations(settings, tmp_path):
    """英文译文里带 < > &（真实的 Django 翻译加载：优先于项目 locale/ 的一份 .mo）。"""
    write_mo(tmp_path / "en" / "LC_MESSAGES" / "django.mo", {
        "待审批": "Waiting <for> & co",
        "项目": "Project <P&L>",
        "项目负责人": "Owners <&>",
        "原消息": "<Original> & message",
        "请点原消息上的按钮，或发送 /approve 编号、/reject 编号 理由。": "Use <buttons> & commands.",
        "审批已超时": "Timed <out> & gone",
        "超时即拒绝": "Reject <now> & stop",
        "构建日志": "Logs <&>",
        "（这次构建没有经过审批）": "(no <approval> & all)",
        "配置被拒绝": "Config <rejected> & kept",
        "文件有错误，上一个好配置继续生效。": "Errors <here> & there.",
    })
    settings.LOCALE_PATHS = [tmp_path, *settings.LOCALE_PATHS]


def test_translated_labels_stay_escaped(html_translations, shop_rule, make_approval, people):
    from jenkins_bridge.models import JenkinsServer

    approval = make_approval(version="")
    item = DigestItem(approval=approval, waiting=[people["approver"]], owners=[people["admin"]],
                      message=TelegramMessage(chat_id=GROUP_ID, message_id=5), chat_id=GROUP_ID)
    server = JenkinsServer.objects.get()
    result = BuildResult(jenkins_server=server, job_name="shop", build_number=3, result="SUCCESS",
                         build_url="https://ci.example.com/job/shop/3/")
    approval.status, approval.decided_at = "timeout", approval.expires_at
    with translation.override("en"):
        digest = render_reminder_digest([item])[0].text
        timeout = render_timeout_notice(approval, owners=[], waiting=[])
        build = render_build_result(result, approval=None, people=[])
        config = render_config_changed("users", False, "")
    expectations = [
        (digest, ["Waiting <for> & co: ", "Owners <&>: ", "<Original> & message", "Use <buttons> & commands."]),
        (timeout, ["Timed <out> & gone", "Project <P&L>: shop-backend", "Reject <now> & stop"]),
        (build, ["(no <approval> & all)"]),
        (config, ["Config <rejected> & kept: users.json", "Errors <here> & there."]),
    ]
    for html, phrases in expectations:
        text = shown(html)  # 未转义的 <for> 之类会让解析失败
        for phrase in phrases:
            assert phrase in text
    assert '<a href="https://t.me/c/1234567890/5">&lt;Original&gt; &amp; message</a>' in digest
    assert "<b>Project &lt;P&amp;L&gt;: </b>" in timeout
    # 没有日志页（没有审批）时不出“构建日志”链接；控制台链接照常
    assert "Logs" not in build and 'href="https://ci.example.com/job/shop/3/console"' in build


# ---------------------------------------------------------------- 拆分与收紧


def test_long_digest_splits_into_parts_that_each_fit_4096_characters_and_100_entities(
    shop_rule, make_approval, roles
):
    from accounts.models import Approver

    crowd = [Approver.objects.create(username=f"p{i}", display_name=f"P{i} <&> " + "长名字" * 8, role=roles["pm"],
                                     telegram_id=8000 + i) for i in range(30)]
    with time_machine.travel(T0, tick=False):
        approvals = [make_approval(job_name=f"folder/shop-{i}", version=f"v{i} <&> " + "版本" * 20,
                                   environment=["production", "test", "staging"][i % 3]) for i in range(40)]
    items = [DigestItem(approval=a, waiting=crowd[i % 20:i % 20 + 10], owners=crowd[:3],
                        message=TelegramMessage(chat_id=GROUP_ID, message_id=100 + i), chat_id=GROUP_ID)
             for i, a in enumerate(approvals)]
    with time_machine.travel(T0, tick=False):
        parts = render_reminder_digest(items, now=T0)
    assert len(parts) > 2
    seen = []
    for index, part in enumerate(parts, start=1):
        text = shown(part.text)
        assert fits_one_message(part.text)
        assert tg_length(text) <= MAX_MESSAGE_LENGTH and entity_count(part.text) <= MAX_ENTITIES
        assert text.startswith(f"⏰ 审批提醒：40 条发布等待审批（{index}/{len(parts)}）")
        seen += re.findall(r"<code>([0-9A-Z]{8})</code>", part.text)
    assert sorted(seen) == sorted(a.public_id for a in approvals)


def test_single_approval_with_too_many_entities_falls_back_to_three_mentions(shop_rule, make_approval, roles):
    from accounts.models import Approver

    # 每个名字里 8 个会被 Telegram 自动识别的 @用户名 与 /命令：十个人就超过 100 个实体
    noisy = [Approver.objects.create(username=f"n{i}", display_name="@a /b @c /d @e /f @g /h", role=roles["pm"],
                                     telegram_id=9000 + i) for i in range(12)]
    approval = make_approval(environment="production")
    item = DigestItem(approval=approval, waiting=noisy, owners=noisy[::-1],
                      message=TelegramMessage(chat_id=GROUP_ID, message_id=9), chat_id=GROUP_ID)
    [part] = render_reminder_digest([item])
    assert fits_one_message(part.text)
    text = shown(part.text)
    assert part.text.count("tg://user?id=") == 6  # 待审批与负责人各 3 人
    assert text.count("等 12 人") == 2
