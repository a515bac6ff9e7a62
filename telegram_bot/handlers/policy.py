"""发布策略的命令：/freeze、/unfreeze（X4），/delegate、/undelegate（X16）。

处理器只做 Telegram 的事：解析参数、识别操作人、回复；封版与委托的规则、审计都在 accounts 的服务里。
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta

from django.utils import timezone
from django.utils.translation import gettext as _
from telegram import Update
from telegram.ext import ContextTypes

from accounts.delegations import MAX_DELEGATION_DAYS, delegation_grant, delegation_revoke, delegations_for
from accounts.errors import PolicyError
from accounts.freeze import WindowSpan, freeze_end, freeze_overview, freeze_start
from accounts.models import ALL_ENVIRONMENTS, Approver, Delegation
from accounts.permissions import check_bot_access
from accounts.selectors import approver_by_handle
from approvals.display import format_time
from approvals.models import Channel

from ..identity import telegram_identify
from ..messages import duration_text, environment_badge, esc, join_names, render_telegram, with_note
from .common import db, safe_reply

_UNITS = {"m": 1, "min": 1, "分": 1, "分钟": 1, "h": 60, "小时": 60, "时": 60, "d": 24 * 60, "天": 24 * 60}
_DURATION_RE = re.compile(r"(\d+)\s*(分钟|小时|min|分|时|天|[mhd])", re.IGNORECASE)
_SCOPE_RE = re.compile(r"^(project|projects|项目|env|environment|环境)[=:：](.+)$", re.IGNORECASE)


def parse_duration(text: str) -> int | None:
    """“2h”“90m”“1d12h”“2小时”“30分钟” → 分钟；写法不对返回 None。"""
    value = (text or "").strip().lower()
    if not value:
        return None
    parts = _DURATION_RE.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
        return None
    return sum(int(number) * _UNITS[unit] for number, unit in parts)


def parse_day(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip().replace("/", "-"))
    except ValueError:
        return None


def _actor(*, user_id: int, username: str | None, chat_id: int) -> tuple[Approver | None, str]:
    approver = telegram_identify(user_id=user_id, username=username, chat_id=chat_id).approver
    access = check_bot_access(approver)
    return approver, "" if access else access.reason


def _envs_text(environments: list[str]) -> str:
    if ALL_ENVIRONMENTS in environments:
        return _("所有环境")
    return join_names(" ".join(environment_badge(e)) for e in environments)


def _span_text(span: WindowSpan, *, now: datetime, current: bool) -> str:
    window = span.window
    parts = [window.name, _envs_text(window.environments)]
    if window.projects:
        parts.append(_("项目 %(p)s") % {"p": join_names(window.projects)})
    if current:
        parts.append(_("至 %(t)s（还剩 %(left)s）") % {"t": format_time(span.ends_at),
                                                     "left": duration_text((span.ends_at - now).total_seconds())})
    else:
        parts.append(f"{format_time(span.starts_at)} → {format_time(span.ends_at)}")
    text = " · ".join(parts)
    if window.reason:
        text = _("%(text)s；原因：%(reason)s") % {"text": text, "reason": window.reason[:200]}
    return text


# ---------------------------------------------------------------- /freeze /unfreeze


def freeze_text(*, user_id: int, username: str | None, chat_id: int, args: list[str]) -> str:
    """/freeze 列出当前与接下来的封版；/freeze 环境 时长 原因 由管理员开始临时封版。"""
    approver, reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    if reason:
        return esc("⚠️ " + reason)
    if args:
        if len(args) < 3:
            return esc(_("用法：/freeze 环境 时长 原因，如 /freeze production 2h 数据库迁移"))
        minutes = parse_duration(args[1])
        if minutes is None:
            return esc(_("⚠️ 时长「%(text)s」看不懂：写成 30m、2h、1d 或 2小时。") % {"text": args[1][:20]})
        try:
            window = freeze_start(actor=approver, environment=args[0], minutes=minutes, reason=" ".join(args[2:]),
                                  channel=Channel.TELEGRAM)
        except PolicyError as exc:
            return esc("⚠️ " + exc.message)
        return esc(_("🧊 已开始临时封版：%(envs)s，至 %(ends)s。期间的发布申请会被拒绝（紧急发布除外）；"
                     "提前结束用 /unfreeze %(env)s。") % {
            "envs": _envs_text(window.environments), "ends": format_time(window.ends_at),
            "env": window.environments[0]})
    now = timezone.now()
    current, upcoming = freeze_overview(at=now)
    return render_telegram("telegram/freeze.html", {
        "current": [_span_text(s, now=now, current=True) for s in current],
        "upcoming": [_span_text(s, now=now, current=False) for s in upcoming],
        "hint": _("管理员：/freeze 环境 时长 原因 开始临时封版（如 /freeze production 2h 数据库迁移），"
                  "/unfreeze [环境] 提前结束。"),
    })


def unfreeze_text(*, user_id: int, username: str | None, chat_id: int, args: list[str]) -> str:
    approver, reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    if reason:
        return esc("⚠️ " + reason)
    try:
        ended = freeze_end(actor=approver, environment=args[0] if args else None, channel=Channel.TELEGRAM)
    except PolicyError as exc:
        return esc("⚠️ " + exc.message)
    current, _upcoming = freeze_overview()
    still = join_names(s.window.name for s in current)
    if not ended:
        text = _("没有可以结束的临时封版。")
        if still:
            text += _("仍在生效：%(names)s（来自配置文件或每周窗口，要改请改配置；确需发布请走紧急发布）。") % {
                "names": still}
        return esc("⚠️ " + text)
    text = _("✅ 已结束临时封版：%(envs)s。") % {"envs": join_names(_envs_text(w.environments) for w in ended)}
    if still:
        text += _("仍在生效：%(names)s。") % {"names": still}
    return esc(text)


# ---------------------------------------------------------------- /delegate /undelegate


def _delegation_line(delegation: Delegation, me: Approver) -> str:
    scope = []
    if delegation.projects:
        scope.append(_("项目 %(p)s") % {"p": join_names(delegation.projects)})
    if delegation.environments:
        scope.append(_envs_text(delegation.environments))
    when = f"{format_time(delegation.starts_at)} → {format_time(delegation.ends_at)}"
    if delegation.delegator_id == me.pk:
        text = _("我 → %(who)s，%(when)s") % {"who": delegation.delegate.label, "when": when}
    else:
        text = _("%(who)s → 我，%(when)s") % {"who": delegation.delegator.label, "when": when}
    return with_note(text, join_names(scope)) if scope else text


def delegate_text(*, user_id: int, username: str | None, chat_id: int, args: list[str]) -> str:
    """/delegate @人 开始日期 结束日期 [项目=…] [环境=…] [原因]：把我的审批权在这段日期里交给他（含首尾两天）。"""
    approver, reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    if reason:
        return esc("⚠️ " + reason)
    usage = _("用法：/delegate @用户 开始日期 结束日期 [项目=shop-*] [环境=production] [原因]，"
              "如 /delegate @bob 2026-12-20 2026-12-31 休假")
    if not args:
        return render_telegram("telegram/delegations.html", {
            "items": [_delegation_line(d, approver) for d in delegations_for(approver)],
            "hint": usage + _("；撤销：/undelegate @用户"),
        })
    if len(args) < 3:
        return esc(usage)
    delegate = approver_by_handle(args[0])
    if delegate is None:
        return esc(_("⚠️ 找不到审批人「%(who)s」：受托人必须是登记过的人。") % {"who": args[0][:64]})
    first, last = parse_day(args[1]), parse_day(args[2])
    if first is None or last is None:
        return esc(_("⚠️ 日期要写成 2026-12-20 这样。") + "\n" + usage)
    if last < first:
        return esc(_("⚠️ 结束日期不能早于开始日期。"))
    if (last - first).days >= MAX_DELEGATION_DAYS:
        # 先在日期上挡住：9999-12-31 的第二天算不出来（OverflowError），到不了 delegation_grant 的同一检查
        return esc("⚠️ " + _("一次委托最长 %(days)s 天。") % {"days": MAX_DELEGATION_DAYS})
    projects, environments, rest = [], [], []
    for word in args[3:]:
        match = _SCOPE_RE.match(word)
        if match is None:
            rest.append(word)
        elif match[1].lower() in ("project", "projects", "项目"):
            projects += [p for p in re.split(r"[,，]", match[2]) if p]
        else:
            environments += [e for e in re.split(r"[,，]", match[2]) if e]
    zone = timezone.get_current_timezone()
    starts_at = datetime.combine(first, time(), tzinfo=zone)
    ends_at = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone)
    try:
        delegation = delegation_grant(delegator=approver, delegate=delegate, starts_at=starts_at, ends_at=ends_at,
                                      projects=projects, environments=environments, reason=" ".join(rest),
                                      channel=Channel.TELEGRAM)
    except PolicyError as exc:
        return esc("⚠️ " + exc.message)
    return esc(_("✅ 已委托：%(line)s。期间 %(who)s 可以代你审批（显示为“%(who)s（代 %(me)s）”），到期自动失效；"
                 "撤销用 /undelegate @%(handle)s。") % {
        "line": _delegation_line(delegation, approver), "who": delegate.label, "me": approver.label,
        "handle": delegate.telegram_username or delegate.username})


def undelegate_text(*, user_id: int, username: str | None, chat_id: int, args: list[str]) -> str:
    approver, reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    if reason:
        return esc("⚠️ " + reason)
    if not args:
        return esc(_("用法：/undelegate @用户"))
    delegate = approver_by_handle(args[0])
    if delegate is None:
        return esc(_("⚠️ 找不到审批人「%(who)s」。") % {"who": args[0][:64]})
    try:
        revoked = delegation_revoke(delegator=approver, delegate=delegate, channel=Channel.TELEGRAM)
    except PolicyError as exc:
        return esc("⚠️ " + exc.message)
    return esc(_("✅ 已撤销给 %(who)s 的 %(n)d 条委托。") % {"who": delegate.label, "n": len(revoked)})


# ---------------------------------------------------------------- 处理器


def _command_args(update: Update) -> list[str]:
    return (update.effective_message.text or "").split()[1:]


async def _run(update: Update, fn: Callable[..., str]) -> None:
    user = update.effective_user
    text = await db(fn)(user_id=user.id, username=user.username, chat_id=update.effective_chat.id,
                        args=_command_args(update))
    await safe_reply(update, text)


async def cmd_freeze(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _run(update, freeze_text)


async def cmd_unfreeze(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _run(update, unfreeze_text)


async def cmd_delegate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _run(update, delegate_text)


async def cmd_undelegate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _run(update, undelegate_text)
