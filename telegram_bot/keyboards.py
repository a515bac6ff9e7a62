"""按钮与回调数据。回调数据的格式只在这里定义；收到时一律重新解析、重新查库。

- 审批按钮：ap:<public_id>:<a|r>
- 待办分页：pd:<page>:<telegram_user_id>（只有发起 /pending 的人能翻页）
Telegram 限制回调数据 1–64 字节；这里的格式都远小于此。
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils.translation import gettext as _
from telegram import ForceReply, InlineKeyboardButton, InlineKeyboardMarkup

from approvals.models import Vote

MAX_CALLBACK_BYTES = 64
APPROVE, REJECT = "a", "r"
_APPROVAL_RE = re.compile(r"^ap:([0-9A-Z]{4,16}):([ar])$")
_PENDING_RE = re.compile(r"^pd:(\d{1,4}):(\d{1,20})$")


@dataclass(frozen=True)
class ApprovalCallback:
    public_id: str
    action: str  # "a" 或 "r"

    @property
    def decision(self) -> str:
        return Vote.Decision.APPROVE if self.action == APPROVE else Vote.Decision.REJECT


@dataclass(frozen=True)
class PendingPageCallback:
    page: int
    owner_id: int


def approval_callback_data(public_id: str, action: str) -> str:
    data = f"ap:{public_id}:{action}"
    assert len(data.encode()) <= MAX_CALLBACK_BYTES
    return data


def parse_approval_callback(data: str | None) -> ApprovalCallback | None:
    """解析审批按钮；格式不对、超长、含非 ASCII 字符都返回 None（按“按钮已失效”处理）。"""
    if not data or len(data.encode("utf-8", "replace")) > MAX_CALLBACK_BYTES or not data.isascii():
        return None
    match = _APPROVAL_RE.match(data)
    if not match:
        return None
    return ApprovalCallback(public_id=match.group(1), action=match.group(2))


def parse_pending_callback(data: str | None) -> PendingPageCallback | None:
    if not data or len(data.encode("utf-8", "replace")) > MAX_CALLBACK_BYTES or not data.isascii():
        return None
    match = _PENDING_RE.match(data)
    if not match:
        return None
    return PendingPageCallback(page=int(match.group(1)), owner_id=int(match.group(2)))


def approval_keyboard(public_id: str) -> InlineKeyboardMarkup:
    """审批消息下的两个按钮（T1）。"""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(_("✅ 同意发布"), callback_data=approval_callback_data(public_id, APPROVE)),
        InlineKeyboardButton(_("❌ 拒绝发布"), callback_data=approval_callback_data(public_id, REJECT)),
    ]])


def pending_keyboard(
    public_ids: list[str], *, page: int, has_prev: bool, has_next: bool, owner_id: int
) -> InlineKeyboardMarkup | None:
    """/pending 列表：每条一行同意/拒绝，最后一行翻页。"""
    rows = [
        [
            InlineKeyboardButton(_("✅ 同意 %(id)s") % {"id": pid}, callback_data=approval_callback_data(pid, APPROVE)),
            InlineKeyboardButton(_("❌ 拒绝 %(id)s") % {"id": pid}, callback_data=approval_callback_data(pid, REJECT)),
        ]
        for pid in public_ids
    ]
    nav = []
    if has_prev:
        nav.append(InlineKeyboardButton(_("⬅️ 上一页"), callback_data=f"pd:{page - 1}:{owner_id}"))
    if has_next:
        nav.append(InlineKeyboardButton(_("下一页 ➡️"), callback_data=f"pd:{page + 1}:{owner_id}"))
    if nav:
        rows.append(nav)
    return InlineKeyboardMarkup(rows) if rows else None


def reason_force_reply() -> ForceReply:
    """按钮拒绝后请拒绝者回复理由；selective 让群里只有被提到的人弹出回复框。"""
    return ForceReply(selective=True, input_field_placeholder=_("拒绝理由（可不填）"))
