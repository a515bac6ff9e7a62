"""所有发往 Telegram 的消息：Python 决定说什么，templates/telegram/ 的模板决定长什么样。

HTML parse mode，用户提供的值由模板自动转义，长度不超过 4096（按 UTF-16 码元量 HTML 源码）。
渲染内核与共用片段在 telegram_bot.rendering；这里照旧导出它们，别的模块从这里导入即可。
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.environments import PRODUCTION, normalize_environment
from accounts.models import Approver, TimeoutPolicy
from approvals.display import format_time, voter_label
from approvals.escalation import escalation_reason_text
from approvals.freeze import FROZEN
from approvals.models import Approval, ApprovalEvent, Channel, EventKind, JenkinsActionState, Status, Vote
from approvals.quorum import quorum_state

from .rendering import (
    ELLIPSIS,
    MAX_CALLBACK_ANSWER_LENGTH,
    MAX_MESSAGE_LENGTH,
    approver_mention,
    callback_answer_text,
    duration_text,
    environment_badge,
    esc,
    fit_message,
    html_fragment,
    join_names,
    label_html,
    link,
    mention_html,
    plain_text,
    render_fitted,
    render_fitted_items,
    render_telegram,
    safe_url,
    tg_length,
    time_left_text,
    truncate_plain,
    with_note,
)

__all__ = [
    "ELLIPSIS", "MAX_CALLBACK_ANSWER_LENGTH", "MAX_MESSAGE_LENGTH", "approver_mention", "callback_answer_text",
    "duration_text", "environment_badge", "esc", "fit_message", "join_names", "label_html", "link", "log_url",
    "mention_html", "next_step_text", "outcome_context", "plain_text", "policy_context", "render_approval", "render_detail",
    "render_help", "render_jenkins", "render_not_served", "render_pending_page", "render_reason_prompt",
    "render_start", "render_stats", "render_telegram", "render_whoami", "safe_url", "summary_context", "tg_length",
    "time_left_text", "truncate_plain", "with_note",
]


def log_url(approval: Approval | None) -> str | None:
    """日志页地址（G1）：带签名与有效期（X5），由 approvals.links 生成；没有审批时没有日志页。"""
    from approvals.links import log_url as signed_log_url

    return signed_log_url(approval) if approval is not None else None


# ---------------------------------------------------------------- 审批消息


def _requester_label(approval: Approval) -> str:
    if approval.requester_id and approval.requester is not None:
        return approval.requester.label
    return approval.requested_by or _("未知")


def summary_context(approval: Approval, *, now: datetime | None = None) -> dict[str, Any]:
    """templates/telegram/_summary.html 需要的值（approval 之外的部分）。"""
    approvers = [voter_label(v) for v in approval.votes.all() if v.decision == Vote.Decision.APPROVE]
    return {
        "approval": approval,
        "requester": _requester_label(approval),
        "votes": f"{len(approvers)}/{approval.required_approvals}",
        "voters": join_names(approvers),
        "now": now or timezone.now(),
    }


def next_step_text(approval: Approval) -> str:
    """决定之后会发生什么（L10）。"""
    if approval.status == Status.APPROVED:
        return _("构建继续")
    if approval.status == Status.REJECTED:
        return _("构建已终止")
    if approval.status == Status.TIMEOUT:
        return _("构建已终止") if approval.timeout_policy == TimeoutPolicy.REJECT else _("仅标记为超时，构建未被操作")
    if approval.status == Status.CANCELLED:
        if approval.superseded_by_id:
            return _("已被更新的构建取代，无需审批")
        return _("无需审批")
    return ""


def outcome_context(approval: Approval) -> dict[str, str]:
    """templates/telegram/_outcome.html 里带数据的句子：操作提示，或谁/何时决定、下一步、Jenkins 操作失败的原因。"""
    if approval.status == Status.PENDING:
        return {"hint": _("点击下方按钮，或发送 /approve %(id)s、/reject %(id)s 理由") % {"id": approval.public_id}}
    when = format_time(approval.decided_at) if approval.decided_at else "-"
    if approval.status in (Status.APPROVED, Status.REJECTED):
        who = approval.decided_by_name or _("系统")
        channel = Channel(approval.decision_channel).label if approval.decision_channel else ""
        when_text = _("决定人：%(who)s，时间：%(when)s，渠道：%(channel)s") % {"who": who, "when": when, "channel": channel}
    else:
        when_text = _("时间：%(when)s") % {"when": when}
    jenkins_error = ""
    if approval.jenkins_action_state == JenkinsActionState.FAILED:
        jenkins_error = _("Jenkins 操作失败：%(err)s") % {"err": approval.jenkins_action_error[:300]}
    return {"when": when_text, "next_step": next_step_text(approval), "jenkins_error": jenkins_error}


def policy_context(approval: Approval) -> dict[str, str]:
    """templates/telegram/_policy.html 的句子：紧急发布（🚨 与突破的封版）、封版拒绝（🧊）、还缺的必需角色、
    升级拉进了谁以及为什么。没有这些时全为空，消息与从前一样。"""
    context = {"emergency": "", "emergency_reason": "", "frozen": "", "missing": "", "escalation": ""}
    freeze = ""
    if approval.freeze_name:
        ends = format_time(approval.freeze_ends_at) if approval.freeze_ends_at else "-"
        freeze = _("「%(window)s」至 %(ends)s") % {"window": approval.freeze_name, "ends": ends}
    if approval.emergency:
        context["emergency"] = _("紧急发布，突破封版%(freeze)s") % {"freeze": freeze} if freeze else _("紧急发布")
        context["emergency_reason"] = approval.emergency_reason
    if approval.reason_code == FROZEN:
        context["frozen"] = _("封版中：%(freeze)s") % {"freeze": freeze or "-"}
    if approval.status == Status.PENDING and (approval.required_roles or approval.admin_approval_required):
        context["missing"] = join_names(quorum_state(approval).missing)
    if approval.escalated_at is not None:
        people = Approver.objects.filter(pk__in=approval.escalated_to or []).order_by("username")
        context["escalation"] = _("已升级（%(why)s），请 %(names)s 协助审批") % {
            "why": escalation_reason_text(approval), "names": join_names(p.label for p in people) or "-"}
    return context


def _approval_context(approval: Approval, *, now: datetime | None = None) -> dict[str, Any]:
    return {
        **summary_context(approval, now=now),
        "is_production": normalize_environment(approval.environment) == PRODUCTION,
        "log_url": log_url(approval),
        "outcome": outcome_context(approval),
        "policy": policy_context(approval),
    }


def render_approval(approval: Approval, *, now: datetime | None = None) -> str:
    """审批消息（L5–L10）：待审批时带剩余时间与操作提示，终态时写明结果、谁、何时、理由、下一步。"""
    text = render_fitted("telegram/approval.html", _approval_context(approval, now=now),
                         free_text_name="description", free_text=approval.description or "")
    return text.strip()


def _event_text(event: ApprovalEvent) -> str:
    label = EventKind(event.kind).label if event.kind in EventKind.values else event.kind
    channel = Channel(event.channel).label if event.channel in Channel.values else event.channel
    parts = [format_time(event.created_at), str(label)]
    if event.actor_name:
        parts.append(event.actor_name)
    parts.append(f"[{channel}]")
    reason = (event.details or {}).get("reason")
    if reason:
        parts.append(_("理由：%(r)s") % {"r": str(reason)[:200]})
    return " ".join(str(p) for p in parts)


def _vote_text(vote: Any) -> str:
    text = f"{format_time(vote.created_at)} {voter_label(vote)} {vote.get_decision_display()}"
    if vote.reason:
        # Translators: 投票后面跟理由；英文写作 "%(vote)s: %(reason)s"
        text = _("%(vote)s：%(reason)s") % {"vote": text, "reason": vote.reason}
    return text


def render_detail(approval: Approval, *, max_events: int = 30) -> str:
    """/status <编号>：审批详情、每一票与历史（T6）。"""
    events = list(approval.events.all())
    shown = events[-max_events:]
    context = {
        **_approval_context(approval),
        "vote_lines": [_vote_text(v) for v in approval.votes.all()],
        "event_lines": [_event_text(e) for e in shown],
        "events_note": _("（仅显示最近 %(n)d 条）") % {"n": len(shown)} if len(events) > len(shown) else "",
    }
    text = render_fitted("telegram/detail.html", context, free_text_name="description",
                         free_text=approval.description or "").strip()
    if tg_length(text) > MAX_MESSAGE_LENGTH and max_events > 1:
        # 历史太长：只保留更少的条目
        return render_detail(approval, max_events=max_events // 2)
    return text


# ---------------------------------------------------------------- 命令回复


def render_help() -> str:
    return render_telegram("telegram/help.html", {})


def render_start(*, approver_label: str | None) -> str:
    greeting = _("你好，%(name)s！你已登记为审批人。") % {"name": approver_label} if approver_label else ""
    return render_telegram("telegram/start.html", {"greeting": greeting})


def render_not_served(*, chat_id: int, chat_type: str, user_id: int | None, username: str | None) -> str:
    """未配置的聊天：说明不服务，并给出配置所需的 ID。"""
    if chat_type == "private":
        text = _("抱歉，你不是登记的审批人，机器人不在私聊中为你服务。\n你的 Telegram ID：%(uid)s，用户名：%(name)s。"
                 "\n请把这两项发给管理员登记。") % {"uid": user_id or "-", "name": "@" + username if username else "-"}
    else:
        text = _("本群未在审批配置中，机器人不在这里提供服务。\n本群 ID：%(cid)s —— 管理员可把它设为 "
                 "TELEGRAM_DEFAULT_CHAT_ID 或项目规则的 chat_id。") % {"cid": chat_id}
    return render_telegram("telegram/not_served.html", {"text": text})


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
    """/whoami：管理员据此登记审批人；审批范围太长时只列前若干条。"""
    context = {
        "user_id": user_id, "username": username, "full_name": full_name or "", "chat_id": chat_id,
        "chat_type": chat_type, "approver": approver, "bot_access_reason": bot_access_reason,
    }
    return render_fitted_items("telegram/whoami.html", context, items_name="scope_lines", items=list(scope_lines))


def render_stats(stats: dict[str, Any]) -> str:
    """/status：总数与各状态、今日、待审批、决定耗时中位数（T5）。"""
    by_status = stats.get("by_status", {})
    median = stats.get("median_decision_seconds")
    rows = [
        _("总数：%(n)s") % {"n": stats.get("total", 0)},
        _("⏳ 待审批：%(n)s") % {"n": by_status.get(Status.PENDING, 0)},
        _("✅ 已同意：%(n)s") % {"n": by_status.get(Status.APPROVED, 0)},
        _("❌ 已拒绝：%(n)s") % {"n": by_status.get(Status.REJECTED, 0)},
        _("⌛ 已超时：%(n)s") % {"n": by_status.get(Status.TIMEOUT, 0)},
        _("🚫 已取消：%(n)s") % {"n": by_status.get(Status.CANCELLED, 0)},
        _("今日新增：%(n)s") % {"n": stats.get("today", 0)},
        _("决定耗时中位数：%(t)s") % {"t": duration_text(median) if median is not None else "-"},
    ]
    return render_telegram("telegram/stats.html", {"rows": rows})


def render_pending_page(approvals: list[Approval], *, page: int, pages: int, total: int) -> str:
    """/pending 的一页：每条一行摘要。"""
    if not total:
        return render_telegram("telegram/pending.html", {"empty": True})
    now = timezone.now()
    items = []
    for approval in approvals:
        _emoji, env_label = environment_badge(approval.environment)
        summary = _("%(project)s %(env)s #%(build)s %(version)s，剩余 %(left)s") % {
            "project": approval.project,
            "env": env_label,
            "build": approval.build_number,
            "version": approval.version or "",
            "left": duration_text((approval.expires_at - now).total_seconds()),
        }
        items.append((approval, summary))
    title = _("我可以审批的待办（共 %(n)d 条，第 %(p)d/%(pages)d 页）") % {"n": total, "p": page, "pages": pages}
    return render_fitted_items("telegram/pending.html", {"empty": False, "title": title}, items_name="items",
                               items=items)


def _jenkins_row(row: dict[str, Any]) -> dict[str, Any]:
    name = row["name"]
    view = {"name": "" if name is None else name, "unavailable": bool(row.get("unavailable")),
            "reachable": bool(row.get("reachable")), "url": row.get("url") or "", "detail": ""}
    if view["unavailable"]:
        return view
    if view["reachable"]:
        view["detail"] = _("可达，版本 %(v)s，延迟 %(ms)s ms") % {
            "v": row.get("version") or "?",
            "ms": int(row["latency_ms"]) if row.get("latency_ms") is not None else "?",
        }
    else:
        view["detail"] = _("不可达：%(err)s") % {"err": (row.get("error") or "")[:300]}
    return view


def render_jenkins(rows: list[dict[str, Any]]) -> str:
    """/jenkins：每台 Jenkins 是否可达、版本、延迟（T7）。"""
    context = {"configured": bool(rows)}
    return render_fitted_items("telegram/jenkins.html", context, items_name="rows",
                               items=[_jenkins_row(row) for row in rows])


def render_reason_prompt(*, public_id: str, mention: str) -> str:
    """按钮拒绝后请拒绝人补充理由；mention 是 mention_html 生成的 HTML。"""
    text = _("已拒绝 %(id)s。请直接回复本消息填写拒绝理由（可不填）。") % {"id": public_id}
    return render_telegram("telegram/reason_prompt.html", {"mention": html_fragment(mention), "text": text})
