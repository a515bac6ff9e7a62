"""提醒摘要（R4–R8、X6）：同一时刻同一群到期的提醒合成一条摘要，只有超过一条消息的上限才拆成几条。

每条审批的第 n 次提醒是发件箱里的一行（幂等键 reminder:<审批>:<n>）；一个群的待发提醒一次认领、合在一起发，
每发出一条摘要就把其中的行记为已发送——任务重跑、补发扫描都不会重复提醒。发送前再查一次状态，已决定的不提醒。
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Prefetch
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.environments import is_production
from accounts.models import Approver
from approvals.eligibility import Eligibility
from approvals.models import Approval, Status, Vote

from ..messages import html_fragment, render_telegram, time_left_text, with_note
from ..models import MessageKind, MessageState, TelegramMessage
from ..outbox import (
    outbox_add_many,
    outbox_claim,
    outbox_extend,
    outbox_failed,
    outbox_give_up,
    outbox_key,
    outbox_release,
    outbox_sent,
    outbox_skip,
)
from ..sender import TelegramSender, TelegramSendError, chat_resolve
from .common import (
    MAX_MENTIONS,
    approval_messages,
    default_chat_id,
    fits_one_message,
    mention_list,
    message_in,
    message_link,
    short,
    voted_approve,
)

logger = logging.getLogger(__name__)

URGENT_MINUTES = 10  # 剩余不到 10 分钟算紧急：生产 🔥，其他环境 ⚠️
# 一次任务最多连续发送多久：节流下每条要等 3 秒，很长的摘要分几次任务发完，不超过 Celery 的软超时
DIGEST_TIME_BUDGET_SECONDS = 30.0


@dataclass
class DigestItem:
    approval: Approval
    waiting: list[Approver]
    owners: list[Approver]
    message: TelegramMessage | None = None
    chat_id: int | None = None  # 摘要发往的群：原消息在同一群时可以直接回复它

    @property
    def link(self) -> str | None:
        if self.message is None:
            return None
        return message_link(self.message.chat_id, self.message.message_id)

    @property
    def reply_to(self) -> int | None:
        if self.message is not None and self.message.chat_id == self.chat_id:
            return int(self.message.message_id)
        return None


@dataclass
class DigestPart:
    items: list[DigestItem]
    text: str = ""
    reply_to: int | None = None


# ---------------------------------------------------------------- 渲染


def urgency(approval: Approval, now: datetime) -> tuple[int, str]:
    """(排序等级, 标记)（R6）：生产且剩余不到 10 分钟 🔥；生产或剩余不到 10 分钟 ⚠️；其余 🔔。"""
    left = (approval.expires_at - now).total_seconds()
    prod = is_production(approval.environment)
    urgent = left < URGENT_MINUTES * 60
    if prod and urgent:
        return 0, "🔥"
    if prod or urgent:
        return 1, "⚠️"
    return 2, "🔔"


def _digest_block(item: DigestItem, now: datetime, *, mentioned: set[int], compact: bool = False) -> str:
    """摘要里一条审批的一段（templates/telegram/notices/reminder_block.html）；点过名的人记进 mentioned。"""
    approval = item.approval
    _rank, marker = urgency(approval, now)
    status = _("剩余 %(left)s · 同意 %(got)d/%(need)d") % {
        "left": time_left_text(approval.expires_at, now), "got": len(voted_approve(approval)),
        "need": approval.required_approvals,
    }
    return render_telegram("telegram/notices/reminder_block.html", {
        "approval": approval, "marker": marker, "project": short(approval.project),
        "version": short(approval.version) if approval.version else "", "status": status, "link": item.link,
        "waiting": mention_list(item.waiting, limit=3 if compact else MAX_MENTIONS, mentioned=mentioned),
    })


def _assemble(blocks: list[str], items: list[DigestItem], mentioned: set[int], *, total: int, index: int,
              parts: int, compact: bool = False) -> str:
    """拼一条摘要消息（reminder_digest.html）：标题、每条审批一段、项目负责人（已点过名的只写名字）、操作提示。

    blocks 是已渲染的段落：逐条追加时不必重渲染前面的段落。
    """
    # 中文单复数同形；ngettext 让英文能写 1 release / 2 releases
    title = ngettext("审批提醒：%(n)d 条发布等待审批", "审批提醒：%(n)d 条发布等待审批", total) % {"n": total}
    if parts > 1:
        title = with_note(title, f"{index}/{parts}")
    owners = [o for item in items for o in item.owners]
    return render_telegram("telegram/notices/reminder_digest.html", {
        "title": title, "blocks": [html_fragment(block) for block in blocks],
        "owners": mention_list(owners, limit=3 if compact else MAX_MENTIONS, mentioned=set(mentioned)) if owners
        else None,
    })


def _render_part(items: list[DigestItem], now: datetime, *, total: int, index: int, parts: int) -> str:
    mentioned: set[int] = set()
    blocks = [_digest_block(i, now, mentioned=mentioned) for i in items]
    text = _assemble(blocks, items, mentioned, total=total, index=index, parts=parts)
    if len(items) == 1 and not fits_one_message(text):
        # 只可能是单条审批的点名与字段都极长：收紧点名人数，必然放得下
        mentioned = set()
        blocks = [_digest_block(items[0], now, mentioned=mentioned, compact=True)]
        text = _assemble(blocks, items, mentioned, total=total, index=index, parts=parts, compact=True)
    return text


def render_reminder_digest(items: list[DigestItem], *, now: datetime | None = None) -> list[DigestPart]:
    """把一个群同时到期的提醒排成尽量少的消息：最紧急的在前，只有一条放不下时才另起一条（X6）。

    逐条追加、只渲染新的一段（已渲染的段落不变），长摘要也是线性的代价。
    """
    now = now or timezone.now()
    ordered = sorted(items, key=lambda i: (urgency(i.approval, now)[0], i.approval.expires_at, i.approval.pk))
    total = len(ordered)
    groups: list[list[DigestItem]] = []
    current: list[DigestItem] = []
    blocks: list[str] = []
    mentioned: set[int] = set()
    for item in ordered:
        tentative = set(mentioned)
        block = _digest_block(item, now, mentioned=tentative)
        # 按最坏的编号位数量（“（1000/1000）”），编号确定后只会更短
        if current and not fits_one_message(_assemble([*blocks, block], [*current, item], tentative, total=total,
                                                      index=total, parts=total)):
            groups.append(current)
            current, blocks, tentative = [], [], set()
            block = _digest_block(item, now, mentioned=tentative)
        current.append(item)
        blocks.append(block)
        mentioned = tentative
    if current:
        groups.append(current)
    parts = []
    for index, group in enumerate(groups, start=1):
        text = _render_part(group, now, total=total, index=index, parts=len(groups))
        reply_to = group[0].reply_to if len(group) == 1 else None
        parts.append(DigestPart(items=group, text=text, reply_to=reply_to))
    return parts


# ---------------------------------------------------------------- 入箱与发送


def _load_pending(approval_ids: list[int], now: datetime) -> list[Approval]:
    return list(
        Approval.objects.filter(pk__in=approval_ids, status=Status.PENDING, expires_at__gt=now)
        .select_related("requester")
        .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("approver").order_by("id")))
        .order_by("pk")
    )


def reminders_enqueue(*, chat_id: int | None, approval_ids: list[int]) -> list[int]:
    """把这些审批本次（第 reminder_count 次）的提醒放进发件箱，返回各行 id。没有群的记为失败（no_chat）。"""
    approvals = Approval.objects.filter(pk__in=approval_ids).values_list("pk", "reminder_count")
    target = chat_id if chat_id is not None else default_chat_id()
    target = chat_resolve(int(target)) if target else None
    ids = outbox_add_many([
        TelegramMessage(dedupe_key=outbox_key(MessageKind.REMINDER, pk, number), kind=MessageKind.REMINDER,
                        chat_id=target, approval_id=pk, sequence=number)
        for pk, number in approvals
    ])
    if target is None and ids:
        logger.warning("提醒没有可发送的群（规则未指定 chat_id，也没有默认群），%d 条审批未提醒", len(ids))
        outbox_give_up(outbox_claim(ids, due_only=False), code="no_chat")
    return ids


def reminders_deliver(rows: list[TelegramMessage], *, sender: TelegramSender,
                      time_budget: float = DIGEST_TIME_BUDGET_SECONDS) -> tuple[float | None, list[int]]:
    """发出已认领的提醒行（按群各一份摘要）。

    返回 (暂时失败后多少秒再试或 None, 时间预算用完而放开的行)：后者由新任务接着发，已发的部分有记录。
    """
    retry: float | None = None
    leftover: list[int] = []
    by_chat: dict[int | None, list[TelegramMessage]] = {}
    for row in rows:
        by_chat.setdefault(row.chat_id, []).append(row)
    deadline = time.monotonic() + time_budget
    for chat_id, chat_rows in by_chat.items():
        if chat_id is None:
            outbox_give_up(chat_rows, code="no_chat")
            continue
        if leftover or time.monotonic() > deadline:
            outbox_release(chat_rows)
            leftover += [r.pk for r in chat_rows]
            continue
        again, rest = _deliver_chat(chat_id, chat_rows, sender=sender, deadline=deadline)
        leftover += rest
        if again is not None:
            retry = again if retry is None else min(retry, again)
    return retry, leftover


def _deliver_chat(chat_id: int, rows: list[TelegramMessage], *, sender: TelegramSender,
                  deadline: float) -> tuple[float | None, list[int]]:
    now = timezone.now()
    approvals = _load_pending(sorted({r.approval_id for r in rows}), now)
    live = {a.pk for a in approvals}
    outbox_skip([r for r in rows if r.approval_id not in live])
    rows = [r for r in rows if r.approval_id in live]
    if not rows:
        return None, []
    eligibility = Eligibility()
    messages = approval_messages([a.pk for a in approvals])
    items = [
        DigestItem(approval=a, waiting=eligibility.waiting(a), owners=eligibility.owners(a.project, a.environment),
                   message=message_in(messages.get(a.pk, []), chat_id), chat_id=chat_id)
        for a in approvals
    ]
    parts = render_reminder_digest(items, now=now)
    rows_of = {a.pk: [r for r in rows if r.approval_id == a.pk] for a in approvals}
    sent_count = 0
    for index, part in enumerate(parts):
        remaining = [r for p in parts[index:] for i in p.items for r in rows_of[i.approval.pk]
                     if r.state != MessageState.SKIPPED]
        if index and time.monotonic() > deadline:
            outbox_release(remaining)
            return None, [r.pk for r in remaining]
        part = _recheck_part(part, rows_of, now=timezone.now(), total=len(items), index=index + 1, parts=len(parts))
        if part is None:
            continue
        part_rows = [r for i in part.items for r in rows_of[i.approval.pk]]
        try:
            sent = sender.send_message(chat_id, part.text, reply_to_message_id=part.reply_to)
        except TelegramSendError as exc:
            rest = [r for r in remaining if r.state != MessageState.SKIPPED]
            (logger.error if exc.permanent else logger.warning)(
                "提醒摘要发往 chat %s 失败（%d 条审批）：%s", chat_id, len(rest), exc)
            return outbox_failed(rest, exc), []
        outbox_sent(part_rows, sent)
        sent_count += 1
        outbox_extend([r for p in parts[index + 1:] for i in p.items for r in rows_of[i.approval.pk]])
    logger.info("提醒摘要已发到 chat %s：%d 条审批，%d 条消息", chat_id, len(items), sent_count)
    return None, []


def _recheck_part(part: DigestPart, rows_of: dict[int, list[TelegramMessage]], *, now: datetime, total: int,
                  index: int, parts: int) -> DigestPart | None:
    """发送前最后确认：等待节流期间被决定的审批不再提醒（R4）。"""
    ids = [i.approval.pk for i in part.items]
    still = set(Approval.objects.filter(pk__in=ids, status=Status.PENDING, expires_at__gt=now)
                .values_list("pk", flat=True))
    if len(still) == len(ids):
        return part
    for gone in set(ids) - still:
        outbox_skip(rows_of[gone])
        for row in rows_of[gone]:
            row.state = MessageState.SKIPPED
    items = [i for i in part.items if i.approval.pk in still]
    if not items:
        return None
    text = _render_part(items, now, total=total, index=index, parts=parts)
    return DigestPart(items=items, text=text, reply_to=items[0].reply_to if len(items) == 1 else None)


def reminders_owed(*, limit: int) -> list[int]:
    """提交后投递摘要任务时 broker 不可用：已计数（reminder_count）却没有对应提醒行的待审批。"""
    now = timezone.now()
    candidates = (Approval.objects.filter(status=Status.PENDING, reminder_count__gt=0, expires_at__gt=now)
                  .order_by("next_reminder_at", "pk").values_list("pk", "reminder_count")[:limit * 4])
    have = set(TelegramMessage.objects.filter(kind=MessageKind.REMINDER, approval_id__in=[pk for pk, _n in candidates])
               .values_list("approval_id", "sequence"))
    return [pk for pk, number in candidates if (pk, number) not in have][:limit]
