"""Telegram HTML 的渲染内核：模板渲染、长度适配与共用的小片段。

消息的样子写在 templates/telegram/ 的 Django 模板里（自动转义），Python 只决定说什么。
Telegram 的 HTML 只认 <b> <i> <u> <s> <a href> <code> <pre> <blockquote> <tg-spoiler>，且按行排版，
所以模板用 {% linemode %}/{% line %} 逐行写出（同 healthchecks），行外的空白一律不算。

Telegram 按 UTF-16 码元计长度（emoji 算 2）；这里量的是 HTML 源码的 UTF-16 长度，
它总是 ≥ 解析后的正文长度，所以量过关的消息一定不会被拒。
过长时只截短“发布说明”这类自由文本或列表的末尾，结构化字段保持完整。
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.template import Context
from django.template.loader import get_template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from accounts.environments import DEVELOPMENT, PRODUCTION, STAGING, TEST, normalize_environment
from approvalbot.text import join_names  # noqa: F401 -- 模板过滤器与通知经这里用它
from approvals.display import format_time

MAX_MESSAGE_LENGTH = 4096
MAX_CALLBACK_ANSWER_LENGTH = 200
ELLIPSIS = "…"

_TAG_RE = re.compile(r"<[^>]*>")


# ---------------------------------------------------------------- 转义与计长


def esc(value: Any) -> str:
    """转义用户提供的值（<、>、&、引号）。None 显示为空。

    总是转义（SafeString 也转义）：模板里的译文是 SafeString，经过这里才与旧输出一致。
    """
    return html.escape("" if value is None else str(value), quote=True)


def html_fragment(markup: str) -> SafeString:
    """把本模块拼好的 HTML 片段交给模板：全项目只在这里 mark_safe，调用方保证 markup 里的值都已转义。"""
    return mark_safe(markup)


def tg_length(text: str) -> int:
    """Telegram 计长方式：UTF-16 码元数。"""
    return len(text.encode("utf-16-le")) // 2


def plain_text(markup: str) -> str:
    """把我们渲染的 Telegram HTML 变回纯文本（去标签、反转义），即用户看到的正文。"""
    return html.unescape(_TAG_RE.sub("", markup))


def truncate_plain(text: str, limit: int) -> str:
    """纯文本截断（回调答复等不解析 HTML 的地方）。"""
    if tg_length(text) <= limit:
        return text
    out: list[str] = []
    used = 0
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > limit - 1:
            break
        out.append(char)
        used += width
    return "".join(out) + ELLIPSIS


def callback_answer_text(text: str) -> str:
    """answerCallbackQuery 的文字最多 200 字。"""
    return truncate_plain(text, MAX_CALLBACK_ANSWER_LENGTH)


# ---------------------------------------------------------------- 模板与长度适配


def render_telegram(template_name: str, context: dict[str, Any]) -> str:
    """渲染 templates/ 下的一条 Telegram 消息模板：自动转义，数字不做本地化（构建号、ID 原样显示）。

    顶层模板写成 `{% load … %}{% linemode %}…{% endlinemode %}` 加文件末尾的一个换行；
    linemode 之外的文字只有这个换行，在这里去掉，输出恰好是 {% line %} 写出的那些行。
    """
    template = get_template(template_name).template
    output = template.render(Context(context, autoescape=True, use_l10n=False))
    # 返回普通 str（与手写 HTML 时一样），不是 SafeString
    return str.__str__(output.removesuffix("\n"))


def fit_message(
    build: Callable[[str], str], free_text: str, *, limit: int = MAX_MESSAGE_LENGTH, keep: str = "head"
) -> str:
    """把自由文本（转义前的原文）放进 build 生成的消息里，整体超长时截短自由文本并加“…”。

    build 收到的是已转义的 HTML 片段；keep="head" 保留开头（发布说明），keep="tail" 保留末尾（构建日志：失败原因在最后）。
    """
    full = build(esc(free_text))
    if tg_length(full) <= limit:
        return full

    def cut(n: int) -> str:
        if keep == "tail":
            return ELLIPSIS + esc(free_text[len(free_text) - n:])
        return esc(free_text[:n]) + ELLIPSIS

    # 二分查找能放下的最长原文片段；上界不超过 limit（每个字符至少 1 个码元）
    lo, hi = 0, min(len(free_text), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tg_length(build(cut(mid))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return build(cut(lo) if lo else ELLIPSIS)


def render_fitted(
    template_name: str, context: dict[str, Any], *, free_text_name: str, free_text: str, keep: str = "head",
    limit: int = MAX_MESSAGE_LENGTH,
) -> str:
    """渲染模板并按 fit_message 截短其中一段自由文本；模板里 {{ <free_text_name> }} 收到已转义、已截短的片段。"""

    def build(fragment: str) -> str:
        return render_telegram(template_name, {**context, free_text_name: html_fragment(fragment)})

    return fit_message(build, free_text, limit=limit, keep=keep)


def render_fitted_items(
    template_name: str, context: dict[str, Any], *, items_name: str, items: Sequence[Any],
    limit: int = MAX_MESSAGE_LENGTH,
) -> str:
    """渲染带列表的模板；整体超长时只保留列表的前若干项，模板在 cut 为真时另起一行写“…”。"""
    full = render_telegram(template_name, {**context, items_name: items, "cut": False})
    if tg_length(full) <= limit:
        return full

    def build(n: int) -> str:
        return render_telegram(template_name, {**context, items_name: items[:n], "cut": True})

    lo, hi = 0, len(items) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tg_length(build(mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return build(lo)


# ---------------------------------------------------------------- 共用片段（模板标签库 telegram 也用这些）


def label_html(label: str) -> SafeString:
    """加粗的“标签：”。冒号随语言变化（中文全角“：”，英文“: ”）。"""
    # Translators: 标签后的冒号，后面紧跟值；英文写作 "%(label)s: "
    return html_fragment("<b>{}</b>".format(esc(_("%(label)s：") % {"label": label})))


def with_note(text: str, note: str) -> str:
    """“文字（备注）”，纯文本（调用方负责转义）。"""
    # Translators: 全角括号；英文写作 "%(text)s (%(note)s)"
    return _("%(text)s（%(note)s）") % {"text": text, "note": note}


def safe_url(url: str | None) -> str | None:
    """只允许 http(s) 链接进 href，防止 javascript: 之类。"""
    if url and url.lower().startswith(("http://", "https://")):
        return url
    return None


def link(url: str | None, label: str) -> str:
    """<a href> 链接；不是 http(s) 的地址不出链接（返回空串）。"""
    target = safe_url(url)
    return html_fragment(f'<a href="{esc(target)}">{esc(label)}</a>') if target else ""


def mention_html(*, telegram_id: int | None, username: str = "", label: str = "") -> SafeString:
    """@ 提醒某人：有数字 id 用 tg://user?id= 链接（无用户名也能提醒），否则用 @用户名。"""
    if telegram_id:
        return html_fragment(f'<a href="tg://user?id={int(telegram_id)}">{esc(label or username or telegram_id)}</a>')
    if username:
        return html_fragment("@" + esc(username.lstrip("@")))
    return html_fragment(esc(label))


@dataclass(frozen=True)
class Mention:
    """点名里的一个人。linked 为假时只写名字：同一条消息里已经提及过，重复的链接只会多占实体额度。"""

    label: str
    telegram_id: int | None = None
    username: str = ""
    linked: bool = True


@dataclass(frozen=True)
class Mentions:
    """一组点名（谁、是否链接由调用方决定）；more 是“等 12 人”这样已带数字的纯文本尾注。"""

    people: tuple[Mention, ...] = ()
    more: str = ""

    def __bool__(self) -> bool:
        return bool(self.people or self.more)


def mentions_html(mentions: Mentions) -> SafeString:
    """一组点名，空格分隔，尾注跟在最后。"""
    parts = [mention_html(telegram_id=m.telegram_id, username=m.username, label=m.label) if m.linked else esc(m.label)
             for m in mentions.people]
    if mentions.more:
        parts.append(esc(mentions.more))
    return html_fragment(" ".join(parts))


def colon_html(fragment: str) -> SafeString:
    """已转义的 HTML 片段后接随语言变化的冒号（中文“：”，英文“: ”）：不加粗、或只加粗标题的标签。"""
    return html_fragment(esc(_("%(label)s：")) % {"label": fragment})


def approver_mention(approver: Any) -> SafeString:
    """给提醒用：审批人的提及链接。"""
    return mention_html(telegram_id=approver.telegram_id, username=approver.telegram_username, label=approver.label)


def environment_badge(environment: str) -> tuple[str, str]:
    """(emoji, 名称)：生产 🔴、预发布 🟡、其他 🟢（L6）。"""
    env = normalize_environment(environment)
    labels = {PRODUCTION: _("生产"), STAGING: _("预发布"), TEST: _("测试"), DEVELOPMENT: _("开发")}
    emoji = "🔴" if env == PRODUCTION else "🟡" if env == STAGING else "🟢"
    return emoji, labels.get(env, env or _("未指定"))


def duration_text(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return _("%(d)d 天 %(h)d 小时") % {"d": days, "h": hours}
    if hours:
        return _("%(h)d 小时 %(m)d 分钟") % {"h": hours, "m": minutes}
    if minutes:
        return _("%(m)d 分钟") % {"m": minutes}
    return _("不到 1 分钟")


def time_left_text(expires_at: datetime, now: datetime | None = None) -> str:
    now = now or timezone.now()
    left = (expires_at - now).total_seconds()
    if left <= 0:
        return _("已过截止时间（%(t)s）") % {"t": format_time(expires_at)}
    return _("%(left)s（截止 %(t)s）") % {"left": duration_text(left), "t": format_time(expires_at)}
