"""查询类命令：/start、/help、/whoami、/status、/pending、/jenkins，以及待办翻页与未知按钮。"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Q
from django.utils.translation import gettext as _
from telegram import Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from accounts.models import Approver, ProjectRule
from accounts.permissions import check_bot_access
from approvals.eligibility import approvals_pending_for_approver
from approvals.errors import ApprovalError
from approvals.selectors import approval_detail, approval_stats
from jenkins_bridge.client import server_status
from jenkins_bridge.models import JenkinsServer

from ..identity import telegram_identify
from ..keyboards import parse_pending_callback, pending_keyboard
from ..messages import (
    environment_badge,
    esc,
    join_names,
    render_detail,
    render_help,
    render_jenkins,
    render_pending_page,
    render_start,
    render_stats,
    render_whoami,
    with_note,
)
from ..services import pending_page_owner, pending_page_record
from .common import db, safe_answer, safe_reply
from .decisions import stale_button_text

logger = logging.getLogger("telegram_bot.handlers")

PENDING_PAGE_SIZE = 5
JENKINS_CHECK_TIMEOUT = 15.0


def _user_args(update: Update) -> dict[str, Any]:
    user = update.effective_user
    return {"user_id": user.id, "username": user.username, "chat_id": update.effective_chat.id}


def _actor(*, user_id: int, username: str | None, chat_id: int) -> tuple[Approver | None, str]:
    """(审批人, 不能使用机器人的原因)。"""
    approver = telegram_identify(user_id=user_id, username=username, chat_id=chat_id).approver
    access = check_bot_access(approver)
    return approver, "" if access else access.reason


# ---------------------------------------------------------------- /start /help /whoami


def start_text(*, user_id: int, username: str | None, chat_id: int) -> str:
    approver, _reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    return render_start(approver_label=approver.label if approver else None)


async def cmd_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await safe_reply(update, await db(start_text)(**_user_args(update)))


async def cmd_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await safe_reply(update, render_help())


def approver_scope_lines(approver: Approver) -> list[str]:
    """“我能审批什么”：角色、个人范围限制，以及点名了我（或我的角色）的规则。"""
    role = approver.role
    if role.is_admin:
        return [_("全部项目与环境（管理员）")]
    if not role.can_approve:
        return [_("无（角色「%(role)s」没有审批权限）") % {"role": role}]
    lines = []
    if approver.projects:
        lines.append(_("个人项目范围：%(p)s") % {"p": join_names(approver.projects)})
    if approver.environments:
        lines.append(_("个人环境范围：%(e)s") % {"e": join_names(approver.environments)})
    rules = (
        ProjectRule.objects.filter(is_active=True)
        .filter(Q(approvers=approver) | Q(approver_roles=approver.role))
        .distinct()
        .order_by("project", "environment")
    )
    for rule in rules:
        if rule.is_default:
            label = _("没有专门规则的项目（默认审批人）")
        else:
            env = environment_badge(rule.environment)[1] if rule.environment else _("全部环境")
            label = with_note(rule.project, env)
        lines.append("• " + label)
    if not lines or all(not line.startswith("•") for line in lines):
        lines.append(_("（没有规则点名你；项目规则或默认审批人列表里加上你之后才能审批）"))
    return lines


def whoami_text(*, user_id: int, username: str | None, chat_id: int, chat_type: str, full_name: str) -> str:
    approver, reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    return render_whoami(
        user_id=user_id, username=username, full_name=full_name, chat_id=chat_id, chat_type=chat_type,
        approver=approver, scope_lines=approver_scope_lines(approver) if approver else [],
        bot_access_reason=reason,
    )


async def cmd_whoami(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    user = update.effective_user
    text = await db(whoami_text)(**_user_args(update), chat_type=update.effective_chat.type,
                                 full_name=user.full_name)
    await safe_reply(update, text)


# ---------------------------------------------------------------- /status


def status_text(*, user_id: int, username: str | None, chat_id: int, public_id: str | None) -> str:
    _approver, reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    if reason:
        return esc("⚠️ " + reason)
    if not public_id:
        return render_stats(approval_stats())
    try:
        return render_detail(approval_detail(public_id))
    except ApprovalError as exc:
        return esc("⚠️ " + exc.message)


async def cmd_status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    parts = (update.effective_message.text or "").split(maxsplit=2)
    public_id = parts[1] if len(parts) > 1 else None
    await safe_reply(update, await db(status_text)(**_user_args(update), public_id=public_id))


# ---------------------------------------------------------------- /pending


def pending_page(*, user_id: int, username: str | None, chat_id: int, page: int) -> tuple[str, Any]:
    approver, reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    if reason:
        return esc("⚠️ " + reason), None
    items = approvals_pending_for_approver(approver)
    pages = max(1, math.ceil(len(items) / PENDING_PAGE_SIZE))
    page = min(max(page, 1), pages)
    chunk = items[(page - 1) * PENDING_PAGE_SIZE: page * PENDING_PAGE_SIZE]
    text = render_pending_page(chunk, page=page, pages=pages, total=len(items))
    markup = pending_keyboard([a.public_id for a in chunk], page=page, has_prev=page > 1, has_next=page < pages,
                              owner_id=user_id) if chunk else None
    return text, markup


async def cmd_pending(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    text, markup = await db(pending_page)(**_user_args(update), page=1)
    sent = await safe_reply(update, text, reply_markup=markup)
    if sent is not None and markup is not None:
        # 记下这条列表消息：翻页按钮只在它上面有效（回调数据可以伪造，消息是谁发的、给谁的不能）
        await db(pending_page_record)(chat_id=sent.chat_id, message_id=sent.message_id,
                                      owner_telegram_id=update.effective_user.id)


async def on_pending_page(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    parsed = parse_pending_callback(query.data)
    owner = None
    if parsed is not None and query.message is not None:
        owner = await db(pending_page_owner)(chat_id=query.message.chat.id, message_id=query.message.message_id)
    if parsed is None or owner is None:
        # 不是机器人发出的待办列表（例如审批消息）：按失效按钮处理，绝不把那条消息改成列表
        await safe_answer(update, stale_button_text(), alert=True)
        return
    if owner != query.from_user.id or parsed.owner_id != owner:
        await safe_answer(update, _("这是别人的待办列表，请自己发送 /pending。"), alert=True)
        return
    await safe_answer(update)
    text, markup = await db(pending_page)(**_user_args(update), page=parsed.page)
    try:
        await query.edit_message_text(text, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" not in str(exc).lower():
            raise


async def on_unknown_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """其他任何回调数据（伪造、过期、超长）：说明按钮已失效。"""
    await safe_answer(update, stale_button_text(), alert=True)


# ---------------------------------------------------------------- /jenkins


def jenkins_servers(*, user_id: int, username: str | None, chat_id: int) -> tuple[str, list[JenkinsServer]]:
    _approver, reason = _actor(user_id=user_id, username=username, chat_id=chat_id)
    if reason:
        return reason, []
    return "", list(JenkinsServer.objects.filter(is_active=True).order_by("name"))


async def _check_server(server: JenkinsServer) -> dict[str, Any]:
    try:
        # 网络检查放在独立线程：慢的 Jenkins 不会卡住其他 update 的数据库调用。
        # 用 sync_to_async 而不是 asyncio.to_thread：只有它把当前激活的语言带进线程（错误说明要用操作人的语言）
        result = await asyncio.wait_for(sync_to_async(server_status, thread_sensitive=False)(server),
                                        timeout=JENKINS_CHECK_TIMEOUT)
    except TimeoutError:
        result = {"reachable": False, "error": _("检查超时")}
    except Exception as exc:  # 展示为不可达，同时记录堆栈
        logger.warning("检查 Jenkins %s 失败", server.name, exc_info=True)
        result = {"reachable": False, "error": str(exc)[:300]}
    return {"name": server.name, "url": server.url, **result}


async def cmd_jenkins(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    reason, servers = await db(jenkins_servers)(**_user_args(update))
    if reason:
        await safe_reply(update, esc("⚠️ " + reason))
        return
    rows = list(await asyncio.gather(*(_check_server(s) for s in servers)))
    await safe_reply(update, render_jenkins(rows))
