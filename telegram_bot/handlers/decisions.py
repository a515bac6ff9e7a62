"""决定：审批按钮、/approve、/reject，以及按钮拒绝后的补充理由。

处理器只做 Telegram 的事（解析、回答、回复）；决定本身是一次 approvals.services.approval_decide 调用。
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.utils.translation import gettext as _
from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from approvalbot.text import join_names
from approvalbot.trace import trace
from approvals import effects
from approvals.errors import AlreadyDecided, ApprovalError
from approvals.models import Channel, Vote
from approvals.selectors import approval_get
from approvals.services import approval_decide, approval_reason_add

from ..identity import telegram_identify
from ..keyboards import parse_approval_callback, reason_force_reply
from ..messages import esc, mention_html, render_reason_prompt
from ..services import reason_prompt_claim, reason_prompt_record
from .common import db, safe_answer, safe_reply

logger = logging.getLogger("telegram_bot.handlers")

NO_REASON_REPLIES = {"-", "－", "—", "无", "不填"}


def stale_button_text() -> str:
    return _("这个按钮已失效或无法识别。请用 /pending 查看待办，或 /status 编号 查看最新状态。")


@dataclass(frozen=True)
class DecisionReply:
    """一次 Telegram 决定的结果；text 是给操作人的纯文本反馈（L9）。"""

    ok: bool
    text: str
    public_id: str = ""
    approval_id: int | None = None
    approver_id: int | None = None
    prompt_reason: bool = False


def decide_from_telegram(
    *,
    user_id: int,
    username: str | None,
    chat_id: int,
    public_id: str,
    decision: str,
    reason: str = "",
    from_button: bool = False,
) -> DecisionReply:
    """识别操作人并做一次决定。所有拒绝原因（非审批人、项目/环境不符、自审、已被 X 于 T 决定、编号无效）
    都来自服务层的 ApprovalError，原样转述。"""
    identity = telegram_identify(user_id=user_id, username=username, chat_id=chat_id)
    approver = identity.approver
    approval = None
    try:
        approval = approval_get(public_id)
        outcome = approval_decide(
            approval=approval, approver=approver, decision=decision, reason=reason, channel=Channel.TELEGRAM
        )
    except AlreadyDecided as exc:
        if from_button and approval is not None:
            # 有人点了旧消息上的按钮：顺手把消息刷新成最终状态（幂等，内容没变不会调用 Telegram）
            effects.approval_changed(approval.pk)
        return DecisionReply(False, exc.message, public_id=approval.public_id if approval else "")
    except ApprovalError as exc:
        return DecisionReply(False, exc.message, public_id=approval.public_id if approval else "")
    final = outcome.approval
    if decision == Vote.Decision.REJECT:
        text = _("❌ 已拒绝发布 %(id)s，构建已终止。") % {"id": final.public_id}
    elif outcome.final:
        text = _("✅ 已同意发布 %(id)s，构建继续。") % {"id": final.public_id}
    else:
        received = outcome.received
        left = max(final.required_approvals - received, 0)
        numbers = {"id": final.public_id, "n": received, "m": final.required_approvals, "left": left,
                   "roles": join_names(outcome.missing)}
        if left and outcome.missing:
            text = _("✅ 已记录你对 %(id)s 的同意（%(n)d/%(m)d），还需 %(left)d 票，且还缺角色：%(roles)s。") % numbers
        elif outcome.missing:
            text = _("✅ 已记录你对 %(id)s 的同意（%(n)d/%(m)d），票数已够，还缺角色：%(roles)s。") % numbers
        else:
            text = _("✅ 已记录你对 %(id)s 的同意（%(n)d/%(m)d），还需 %(left)d 票。") % numbers
    assert approver is not None
    return DecisionReply(
        True, text, public_id=final.public_id, approval_id=final.pk, approver_id=approver.pk,
        prompt_reason=from_button and decision == Vote.Decision.REJECT and not reason,
    )


def reason_reply(*, chat_id: int, reply_to_message_id: int, user_id: int, text: str) -> str | None:
    """处理对“请回复理由”提示的回复；不是回复提示的返回 None（忽略）。"""
    prompt, problem = reason_prompt_claim(chat_id=chat_id, message_id=reply_to_message_id, user_id=user_id)
    if problem == "not_prompt":
        return None
    if problem == "not_owner":
        return _("只有拒绝者本人可以补充理由。")
    if problem == "answered":
        return _("这条拒绝的理由已经处理过了。")
    reason = text.strip()
    if reason in NO_REASON_REPLIES:
        return _("好的，不填写理由。")
    added = approval_reason_add(approval=prompt.approval, approver=prompt.approver, reason=reason,
                                channel=Channel.TELEGRAM)
    if added:
        return _("已记录 %(id)s 的拒绝理由。") % {"id": prompt.approval.public_id}
    return _("没有记录：审批 %(id)s 已有理由或状态已变化。") % {"id": prompt.approval.public_id}


# ---------------------------------------------------------------- 处理器


async def on_approval_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """「✅ 同意发布」「❌ 拒绝发布」：每次都按数据库与点按人的 id 重新检查，并总是回答按钮。"""
    query = update.callback_query
    assert query is not None
    parsed = parse_approval_callback(query.data)
    if parsed is None:
        await safe_answer(update, stale_button_text(), alert=True)
        return
    chat = update.effective_chat
    user = query.from_user
    try:
        result = await db(decide_from_telegram)(
            user_id=user.id, username=user.username, chat_id=chat.id if chat else 0, public_id=parsed.public_id,
            decision=parsed.decision, from_button=True,
        )
    except Exception:
        await safe_answer(update, _("处理失败，已记录错误，请稍后重试。"), alert=True)
        raise
    trace("decision_committed", parsed.public_id)
    await safe_answer(update, result.text, alert=not result.ok)
    if result.prompt_reason and chat is not None:
        await _ask_reason(update, context, result)


async def _ask_reason(update: Update, context: ContextTypes.DEFAULT_TYPE, result: DecisionReply) -> None:
    query = update.callback_query
    user = query.from_user
    chat = update.effective_chat
    mention = mention_html(telegram_id=user.id, username=user.username or "", label=user.full_name)
    try:
        prompt = await context.bot.send_message(
            chat.id, render_reason_prompt(public_id=result.public_id, mention=mention),
            reply_markup=reason_force_reply(),
        )
    except TelegramError:
        logger.warning("发送拒绝理由提示到 chat %s 失败", chat.id, exc_info=True)
        return
    await db(reason_prompt_record)(
        approval_id=result.approval_id, approver_id=result.approver_id, telegram_user_id=user.id,
        chat_id=chat.id, message_id=prompt.message_id,
    )


async def _decide_command(update: Update, context: ContextTypes.DEFAULT_TYPE, decision: str) -> None:
    message = update.effective_message
    user = update.effective_user
    parts = (message.text or "").split(maxsplit=2)
    if len(parts) < 2:
        usage = _("用法：/approve 审批编号 [备注]") if decision == Vote.Decision.APPROVE \
            else _("用法：/reject 审批编号 [理由]")
        await safe_reply(update, esc(usage))
        return
    public_id = parts[1]
    reason = parts[2] if len(parts) > 2 else ""
    result = await db(decide_from_telegram)(
        user_id=user.id, username=user.username, chat_id=message.chat_id, public_id=public_id,
        decision=decision, reason=reason,
    )
    await safe_reply(update, esc(result.text if result.ok else "⚠️ " + result.text))


async def cmd_approve(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _decide_command(update, context, Vote.Decision.APPROVE)


async def cmd_reject(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await _decide_command(update, context, Vote.Decision.REJECT)


async def on_reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """回复机器人的“请回复理由”提示。回复别的消息一律忽略。"""
    message = update.effective_message
    replied = message.reply_to_message if message else None
    if replied is None or replied.from_user is None or replied.from_user.id != context.bot.id:
        return
    answer = await db(reason_reply)(
        chat_id=message.chat_id, reply_to_message_id=replied.message_id, user_id=update.effective_user.id,
        text=message.text or "",
    )
    if answer:
        await safe_reply(update, esc(answer))
