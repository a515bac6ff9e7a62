"""所有发往 Telegram 的文字都在这里渲染：HTML parse mode，用户提供的值一律转义，长度不超过 4096。

Telegram 按 UTF-16 码元计长度（emoji 算 2）；这里量的是 HTML 源码的 UTF-16 长度，
它总是 ≥ 解析后的正文长度，所以量过关的消息一定不会被拒。
过长时只截短“发布说明”这类自由文本，结构化字段保持完整。
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from accounts.environments import DEVELOPMENT, PRODUCTION, STAGING, TEST, normalize_environment
from approvals.models import Approval, ApprovalEvent, Channel, EventKind, JenkinsActionState, Status
from approvals.services import format_time

MAX_MESSAGE_LENGTH = 4096
MAX_CALLBACK_ANSWER_LENGTH = 200
ELLIPSIS = "…"


# ---------------------------------------------------------------- 基础工具


def esc(value: Any) -> str:
    """转义用户提供的值（<、>、&、引号）。None 显示为空。"""
    return html.escape("" if value is None else str(value), quote=True)


def tg_length(text: str) -> int:
    """Telegram 计长方式：UTF-16 码元数。"""
    return len(text.encode("utf-16-le")) // 2


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


def fit_message(
    build: Callable[[str], str], free_text: str, *, limit: int = MAX_MESSAGE_LENGTH, keep: str = "head"
) -> str:
    """把自由文本（转义前的原文）放进 build 生成的消息里，整体超长时截短自由文本并加“…”。

    keep="head" 保留开头（发布说明）；keep="tail" 保留末尾（构建日志：失败原因在最后）。
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


# ---------------------------------------------------------------- 随语言变化的标点


def label_html(label: str) -> str:
    """加粗的“标签：”。冒号随语言变化（中文全角“：”，英文“: ”）。"""
    # Translators: 标签后的冒号，后面紧跟值；英文写作 "%(label)s: "
    return "<b>{}</b>".format(esc(_("%(label)s：") % {"label": label}))


def with_note(text: str, note: str) -> str:
    """“文字（备注）”，纯文本（调用方负责转义）。"""
    # Translators: 全角括号；英文写作 "%(text)s (%(note)s)"
    return _("%(text)s（%(note)s）") % {"text": text, "note": note}


def join_names(items: Iterable[str]) -> str:
    """并列的名字/项目：中文用顿号，英文用逗号。纯文本。"""
    return pgettext("list separator", "、").join(items)


def safe_url(url: str | None) -> str | None:
    """只允许 http(s) 链接进 href，防止 javascript: 之类。"""
    if url and url.lower().startswith(("http://", "https://")):
        return url
    return None


def link(url: str | None, label: str) -> str:
    target = safe_url(url)
    return f'<a href="{esc(target)}">{esc(label)}</a>' if target else ""


def mention_html(*, telegram_id: int | None, username: str = "", label: str = "") -> str:
    """@ 提醒某人：有数字 id 用 tg://user?id= 链接（无用户名也能提醒），否则用 @用户名。"""
    if telegram_id:
        return f'<a href="tg://user?id={int(telegram_id)}">{esc(label or username or telegram_id)}</a>'
    if username:
        return "@" + esc(username.lstrip("@"))
    return esc(label)


def approver_mention(approver: Any) -> str:
    """给提醒用：审批人的提及链接。"""
    return mention_html(telegram_id=approver.telegram_id, username=approver.telegram_username, label=approver.label)


# ---------------------------------------------------------------- 环境与时间


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


def log_url(approval: Approval | None) -> str | None:
    """日志页地址（G1）：带签名与有效期（X5），由 approvals.links 生成；没有审批时没有日志页。"""
    from approvals.links import log_url as signed_log_url

    return signed_log_url(approval) if approval is not None else None


# ---------------------------------------------------------------- 审批消息


def _votes(approval: Approval) -> list:
    return list(approval.votes.all())


def _requester_label(approval: Approval) -> str:
    if approval.requester_id and approval.requester is not None:
        return approval.requester.label
    return approval.requested_by or _("未知")


def _header_lines(approval: Approval, *, now: datetime | None = None) -> list[str]:
    emoji, env_label = environment_badge(approval.environment)
    is_prod = normalize_environment(approval.environment) == PRODUCTION
    title = _("【生产】发布审批") if is_prod else _("发布审批")
    lines = [f"{emoji} <b>{esc(title)}</b> · <code>{esc(approval.public_id)}</code>"]
    rows: list[tuple[str, str]] = [
        (_("项目"), esc(approval.project)),
        (_("环境"), f"{emoji} {esc(env_label)}"),
        (_("任务"), f"{esc(approval.job_name)} #{approval.build_number}"),
    ]
    if approval.version:
        rows.append((_("版本"), esc(approval.version)))
    if approval.operation:
        rows.append((_("操作"), esc(approval.operation)))
    rows.append((_("发起人"), esc(_requester_label(approval))))
    votes = _votes(approval)
    approvers = [v.approver.label for v in votes if v.decision == "approve"]
    received = len(approvers)
    vote_text = f"{received}/{approval.required_approvals}"
    if approvers:
        vote_text = esc(with_note(vote_text, join_names(approvers)))
    rows.append((_("同意票数"), vote_text))
    if approval.status == Status.PENDING:
        rows.append((_("剩余时间"), esc(time_left_text(approval.expires_at, now))))
    lines += [label_html(label) + value for label, value in rows]
    return lines


def _links_line(approval: Approval) -> str:
    parts = [p for p in (link(approval.build_url, _("Jenkins 构建")), link(log_url(approval), _("构建日志"))) if p]
    return "🔗 " + " | ".join(parts) if parts else ""


def next_step_text(approval: Approval) -> str:
    """决定之后会发生什么（L10）。"""
    if approval.status == Status.APPROVED:
        return _("构建继续")
    if approval.status == Status.REJECTED:
        return _("构建已终止")
    if approval.status == Status.TIMEOUT:
        return _("构建已终止") if approval.timeout_policy == "reject" else _("仅标记为超时，构建未被操作")
    if approval.status == Status.CANCELLED:
        if approval.superseded_by_id:
            return _("已被更新的构建取代，无需审批")
        return _("无需审批")
    return ""


def _outcome_lines(approval: Approval) -> list[str]:
    status = approval.status
    if status == Status.PENDING:
        return [
            "⏳ <b>{}</b>".format(esc(_("等待审批"))),
            esc(_("点击下方按钮，或发送 /approve %(id)s、/reject %(id)s 理由") % {"id": approval.public_id}),
        ]
    icons = {Status.APPROVED: "✅", Status.REJECTED: "❌", Status.TIMEOUT: "⌛", Status.CANCELLED: "🚫"}
    titles = {
        Status.APPROVED: _("已同意发布"),
        Status.REJECTED: _("已拒绝发布"),
        Status.TIMEOUT: _("审批已超时"),
        Status.CANCELLED: _("审批已取消"),
    }
    lines = [f"{icons.get(status, '')} <b>{esc(titles.get(status, approval.get_status_display()))}</b>"]
    when = format_time(approval.decided_at) if approval.decided_at else "-"
    if status in (Status.APPROVED, Status.REJECTED):
        who = approval.decided_by_name or _("系统")
        channel = Channel(approval.decision_channel).label if approval.decision_channel else ""
        lines.append(esc(_("决定人：%(who)s，时间：%(when)s，渠道：%(channel)s")
                         % {"who": who, "when": when, "channel": channel}))
    else:
        lines.append(esc(_("时间：%(when)s") % {"when": when}))
    if approval.reason:
        label = _("拒绝理由") if status == Status.REJECTED else _("说明")
        lines.append(label_html(label) + esc(approval.reason))
    lines.append(label_html(_("下一步")) + esc(next_step_text(approval)))
    if approval.jenkins_action_state == JenkinsActionState.FAILED:
        lines.append("⚠️ " + esc(_("Jenkins 操作失败：%(err)s") % {"err": approval.jenkins_action_error[:300]}))
    return lines


def render_approval(approval: Approval, *, now: datetime | None = None) -> str:
    """审批消息（L5–L10）：待审批时带剩余时间与操作提示，终态时写明结果、谁、何时、理由、下一步。"""
    head = "\n".join(_header_lines(approval, now=now))
    links = _links_line(approval)
    tail = "\n".join([*([links] if links else []), "", *_outcome_lines(approval)])

    def build(description: str) -> str:
        middle = "\n{}\n<blockquote>{}</blockquote>".format(label_html(_("发布说明")), description) if description else ""
        return f"{head}{middle}\n{tail}".strip()

    return fit_message(build, approval.description or "")


# ---------------------------------------------------------------- 命令回复


def render_help() -> str:
    lines = [
        "🤖 <b>{}</b>".format(esc(_("Jenkins 发布审批机器人"))),
        "",
        esc(_("/approve 编号 [备注] — 同意发布")),
        esc(_("/reject 编号 [理由] — 拒绝发布")),
        esc(_("/status — 审批统计（总数、各状态、今日、待审批、决定耗时中位数）")),
        esc(_("/status 编号 — 查看某条审批的详情、投票与历史")),
        esc(_("/pending — 我可以审批的待办（可翻页，带按钮）")),
        esc(_("/jenkins — 各 Jenkins 是否可达、版本、延迟")),
        esc(_("/whoami — 我的 Telegram ID、用户名、角色与审批范围（管理员据此配置）")),
        esc(_("/help — 显示本帮助")),
        "",
        esc(_("审批消息下的「✅ 同意发布」「❌ 拒绝发布」按钮一点即生效；按钮拒绝后可以回复机器人的提示补充理由。")),
        esc(_("编号不区分大小写，例如 /approve ab12cd34。")),
    ]
    return "\n".join(lines)


def render_start(*, approver_label: str | None) -> str:
    if approver_label:
        greeting = esc(_("你好，%(name)s！你已登记为审批人。") % {"name": approver_label})
    else:
        greeting = esc(_("你好！你还不是审批人；把 /whoami 显示的信息发给管理员即可登记。"))
    return greeting + "\n\n" + render_help()


def render_not_served(*, chat_id: int, chat_type: str, user_id: int | None, username: str | None) -> str:
    """未配置的聊天：说明不服务，并给出配置所需的 ID。"""
    if chat_type == "private":
        text = _("抱歉，你不是登记的审批人，机器人不在私聊中为你服务。\n你的 Telegram ID：%(uid)s，用户名：%(name)s。"
                 "\n请把这两项发给管理员登记。") % {"uid": user_id or "-", "name": "@" + username if username else "-"}
    else:
        text = _("本群未在审批配置中，机器人不在这里提供服务。\n本群 ID：%(cid)s —— 管理员可把它设为 "
                 "TELEGRAM_DEFAULT_CHAT_ID 或项目规则的 chat_id。") % {"cid": chat_id}
    return esc(text)


def render_whoami(
    *,
    user_id: int,
    username: str | None,
    full_name: str,
    chat_id: int,
    chat_type: str,
    approver: Any | None,
    scope_lines: Iterable[str],
    bot_access_reason: str = "",
) -> str:
    lines = [
        "👤 <b>{}</b>".format(esc(_("我是谁"))),
        label_html(_("Telegram ID")) + f"<code>{user_id}</code>",
        label_html(_("用户名")) + (esc("@" + username) if username else esc(_("（未设置）"))),
        label_html(_("名字")) + esc(full_name),
        label_html(_("当前聊天 ID")) + f"<code>{chat_id}</code>" + esc(with_note("", chat_type)),
        "",
    ]
    if approver is None:
        lines.append(esc(_("你还不是审批人。请管理员在 config/users.json 或后台登记你的用户名或 Telegram ID。")))
    else:
        lines.append(label_html(_("审批身份")) + esc(with_note(approver.label, approver.username)))
        lines.append(label_html(_("角色")) + esc(approver.role))
        if bot_access_reason:
            lines.append("⚠️ " + esc(bot_access_reason))
        lines.append(label_html(_("可审批")))
        lines += [esc(line) for line in scope_lines]
    return fit_message(lambda extra: "\n".join(lines) + extra, "")


def render_stats(stats: dict[str, Any]) -> str:
    """/status：总数与各状态、今日、待审批、决定耗时中位数（T5）。"""
    by_status = stats.get("by_status", {})
    median = stats.get("median_decision_seconds")
    lines = [
        "📊 <b>{}</b>".format(esc(_("审批统计"))),
        esc(_("总数：%(n)s") % {"n": stats.get("total", 0)}),
        esc(_("⏳ 待审批：%(n)s") % {"n": by_status.get(Status.PENDING, 0)}),
        esc(_("✅ 已同意：%(n)s") % {"n": by_status.get(Status.APPROVED, 0)}),
        esc(_("❌ 已拒绝：%(n)s") % {"n": by_status.get(Status.REJECTED, 0)}),
        esc(_("⌛ 已超时：%(n)s") % {"n": by_status.get(Status.TIMEOUT, 0)}),
        esc(_("🚫 已取消：%(n)s") % {"n": by_status.get(Status.CANCELLED, 0)}),
        esc(_("今日新增：%(n)s") % {"n": stats.get("today", 0)}),
        esc(_("决定耗时中位数：%(t)s") % {"t": duration_text(median) if median is not None else "-"}),
    ]
    return "\n".join(lines)


def _event_line(event: ApprovalEvent) -> str:
    label = EventKind(event.kind).label if event.kind in EventKind.values else event.kind
    channel = Channel(event.channel).label if event.channel in Channel.values else event.channel
    parts = [format_time(event.created_at), str(label)]
    if event.actor_name:
        parts.append(event.actor_name)
    parts.append(f"[{channel}]")
    details = event.details or {}
    reason = details.get("reason")
    if reason:
        parts.append(_("理由：%(r)s") % {"r": str(reason)[:200]})
    return "• " + esc(" ".join(str(p) for p in parts))


def _vote_text(vote: Any) -> str:
    text = f"{format_time(vote.created_at)} {vote.approver.label} {vote.get_decision_display()}"
    if vote.reason:
        # Translators: 投票后面跟理由；英文写作 "%(vote)s: %(reason)s"
        text = _("%(vote)s：%(reason)s") % {"vote": text, "reason": vote.reason}
    return text


def render_detail(approval: Approval, *, max_events: int = 30) -> str:
    """/status <编号>：审批详情、每一票与历史（T6）。"""
    head = "\n".join(_header_lines(approval))
    votes = _votes(approval)
    vote_lines = [
        "• " + esc(_vote_text(v))
        for v in votes
    ] or [esc(_("（还没有人投票）"))]
    events = list(approval.events.all())
    shown = events[-max_events:]
    event_lines = [_event_line(e) for e in shown]
    if len(events) > len(shown):
        event_lines.insert(0, esc(_("（仅显示最近 %(n)d 条）") % {"n": len(shown)}))
    links = _links_line(approval)
    tail = "\n".join([
        *([links] if links else []),
        "",
        *_outcome_lines(approval),
        "",
        label_html(_("投票")),
        *vote_lines,
        "",
        label_html(_("历史")),
        *event_lines,
    ])

    def build(description: str) -> str:
        middle = "\n{}\n<blockquote>{}</blockquote>".format(label_html(_("发布说明")), description) if description else ""
        return f"{head}{middle}\n{tail}".strip()

    text = fit_message(build, approval.description or "")
    if tg_length(text) > MAX_MESSAGE_LENGTH and max_events > 1:
        # 历史太长：只保留更少的条目
        return render_detail(approval, max_events=max_events // 2)
    return text


def render_pending_page(approvals: list[Approval], *, page: int, pages: int, total: int) -> str:
    """/pending 的一页：每条一行摘要。"""
    if not total:
        return esc(_("🎉 目前没有你可以审批的待办。"))
    lines = ["📝 <b>{}</b>".format(esc(_("我可以审批的待办（共 %(n)d 条，第 %(p)d/%(pages)d 页）")
                                        % {"n": total, "p": page, "pages": pages}))]
    for approval in approvals:
        emoji, env_label = environment_badge(approval.environment)
        summary = _("%(project)s %(env)s #%(build)s %(version)s，剩余 %(left)s") % {
            "project": approval.project,
            "env": env_label,
            "build": approval.build_number,
            "version": approval.version or "",
            "left": duration_text((approval.expires_at - timezone.now()).total_seconds()),
        }
        lines.append(f"{emoji} <code>{esc(approval.public_id)}</code> {esc(summary)}")
    return fit_message(lambda extra: "\n".join(lines) + extra, "")


def render_jenkins(rows: list[dict[str, Any]]) -> str:
    """/jenkins：每台 Jenkins 是否可达、版本、延迟（T7）。"""
    if not rows:
        return esc(_("还没有配置任何 Jenkins 服务器。"))
    lines = ["🛠 <b>{}</b>".format(esc(_("Jenkins 状态")))]
    for row in rows:
        name = esc(row["name"])
        if row.get("unavailable"):
            unavailable = _("状态检查暂不可用")
            lines.append(f"❔ <b>{name}</b> {esc(row.get('url') or '')} — {esc(unavailable)}")
            continue
        if row.get("reachable"):
            detail = _("可达，版本 %(v)s，延迟 %(ms)s ms") % {
                "v": row.get("version") or "?",
                "ms": int(row["latency_ms"]) if row.get("latency_ms") is not None else "?",
            }
            lines.append(f"🟢 <b>{name}</b> — {esc(detail)}")
        else:
            detail = _("不可达：%(err)s") % {"err": (row.get("error") or "")[:300]}
            lines.append(f"🔴 <b>{name}</b> — {esc(detail)}")
    return fit_message(lambda extra: "\n".join(lines) + extra, "")


def render_reason_prompt(*, public_id: str, mention: str) -> str:
    return mention + " " + esc(
        _("已拒绝 %(id)s。请直接回复本消息填写拒绝理由（可不填）。") % {"id": public_id}
    )
