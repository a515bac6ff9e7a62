"""提醒摘要、超时通知、构建结果通知、配置变化通知：渲染、发送与对应的 Celery 任务。

- 提醒（R4–R8、X6）：同一时刻同一群到期的提醒合成一条摘要，只有超过 4096 字符才拆成几条；
  发送前再查一次状态，已决定的不提醒。每发出一条就为其中的审批记一条 notified 历史
  （details.notice=reminder、number=第几次提醒），任务重跑时据此跳过已发的部分，不会重复。
- 超时（R11）：回复在原审批消息下；消息本身的编辑由刷新任务负责。
- 构建结果（B3–B8）：先用 BuildResult.notified_at 做条件认领，重试不会重复发送；送达与放弃记在
  BuildResult.details 上，补发扫描（build_result_recover）据此补发丢失或中途死掉的通知：至少送达一次。
- 暂时性错误（超时、5xx、429）抛给任务退避重试（不早于 retry_after）；永久错误（被拉黑、被踢、
  聊天不存在）记进审批历史（notify_failed）后放弃，绝不无限重试。通知失败从不影响审批决定本身。

文字全部经 messages.esc 转义；长度按 messages.tg_length 量 HTML 源码（≥ 解析后的正文），量过关一定不会被拒。
"""

from __future__ import annotations

import html
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.app_config import app_defaults
from accounts.environments import is_production
from accounts.models import Approver, ProjectRule
from accounts.permissions import check_can_approve
from accounts.rules import ResolvedRule, resolve_rule
from accounts.tasks import CONFIG_CHANGED_NOTIFY_TASK
from approvals.effects import BUILD_RESULT_NOTIFY_TASK, REMINDER_DIGEST_TASK, TIMEOUT_NOTICE_TASK
from approvals.models import (
    Approval,
    ApprovalEvent,
    BuildResult,
    BuildResultValue,
    Channel,
    EventKind,
    Status,
    Vote,
)
from approvals.services import event_record, format_time

from .messages import (
    MAX_MESSAGE_LENGTH,
    environment_badge,
    esc,
    fit_message,
    join_names,
    label_html,
    link,
    log_url,
    mention_html,
    next_step_text,
    tg_length,
    time_left_text,
    truncate_plain,
    with_note,
)
from .models import MessageKind, MessageState, TelegramMessage
from .sender import SentMessage, TelegramSender, TelegramSendError, chat_resolve
from .services import telegram_configured
from .tasks import MAX_RETRIES, retry_countdown

logger = logging.getLogger(__name__)


NOTICE_REMINDER = "reminder"
NOTICE_TIMEOUT = "timeout"
NOTICE_BUILD_RESULT = "build_result"

URGENT_MINUTES = 10  # 剩余不到 10 分钟算紧急：生产 🔥，其他环境 ⚠️
MAX_MENTIONS = 10  # 一条审批最多点名几人：角色下几百人时也不会把消息撑爆
MENTION_LABEL_CHARS = 32
FIELD_CHARS = 64  # 摘要里项目名、版本的最大显示长度
LOG_TAIL_LINES = 30
MAX_ENTITIES = 100  # Telegram 每条消息只处理前 100 个格式实体（粗体、链接、提及……）
MAX_SOURCE_LENGTH = 8192
_TAG_RE = re.compile(r"<[^>]*>")
_OPEN_TAG_RE = re.compile(r"<[a-z]")
_AUTO_ENTITY_RE = re.compile(r"(?<![\w/@])[@/][A-Za-z_]")  # @用户名、/命令（“1/2” 这样的票数不算）
# 一次摘要任务最多连续发送多久：节流下每条要等 3 秒，很长的摘要分几次任务发完，不超过 Celery 的软超时
DIGEST_TIME_BUDGET_SECONDS = 30.0

RESULT_EMOJI = {
    BuildResultValue.SUCCESS: "✅",
    BuildResultValue.FAILURE: "❌",
    BuildResultValue.ABORTED: "⚪",
    BuildResultValue.NOT_BUILT: "⚪",
    BuildResultValue.UNSTABLE: "⚠️",
}


class DigestIncomplete(Exception):
    """本次任务的时间预算用完，摘要还有没发的部分：稍后用新任务接着发（已发的部分有记录，不会重发）。"""

    def __init__(self, remaining: list[int], retry_after: float) -> None:
        super().__init__(f"{len(remaining)} approvals left")
        self.remaining = remaining
        self.retry_after = retry_after


def default_chat_id() -> int | None:
    """默认群：config/app.json 的 telegram.default_chat_id，否则 TELEGRAM_DEFAULT_CHAT_ID。"""
    value = app_defaults().get("chat_id")
    return int(value) if value else None


def message_link(chat_id: int, message_id: int) -> str | None:
    """超级群里消息的链接（t.me/c/<内部 id>/<消息 id>，群成员可点开）；普通群与私聊没有这种链接。"""
    text = str(chat_id)
    if text.startswith("-100") and len(text) > 4:
        return f"https://t.me/c/{text[4:]}/{int(message_id)}"
    return None


def _short(value: str, limit: int = FIELD_CHARS) -> str:
    return truncate_plain(value or "", limit)


def _colon(fragment: str) -> str:
    """已转义的 HTML 片段后接随语言变化的冒号（中文“：”，英文“: ”），用于不加粗或只加粗标题的标签。

    与 label_html 共用一条译文；模板本身也转义，只有 fragment 是 HTML。
    """
    return esc(_("%(label)s：")) % {"label": fragment}


def _mention(approver: Approver) -> str:
    return mention_html(telegram_id=approver.telegram_id, username=approver.telegram_username,
                        label=_short(approver.label, MENTION_LABEL_CHARS))


def mentions_html(people: Iterable[Approver], *, limit: int = MAX_MENTIONS, mentioned: set[int] | None = None) -> str:
    """点名一组人（去重、保序）；超过 limit 人时只列前几位并注明人数。

    mentioned：同一条消息里已经点过名的人只写名字。Telegram 每条消息只处理前 100 个格式实体，
    重复的提及链接既占这个额度，也不会让人多收到一次提醒。
    """
    unique: dict[int, Approver] = {}
    for person in people:
        unique.setdefault(person.pk, person)
    listed = list(unique.values())
    parts = []
    for person in listed[:limit]:
        if mentioned is not None and person.pk in mentioned:
            parts.append(esc(_short(person.label, MENTION_LABEL_CHARS)))
            continue
        parts.append(_mention(person))
        if mentioned is not None:
            mentioned.add(person.pk)
    if len(listed) > limit:
        parts.append(esc(_("等 %(n)d 人") % {"n": len(listed)}))
    return " ".join(parts)


def visible_length(source: str) -> int:
    """Telegram 的 4096 限制针对解析后的正文（去掉标签、还原 &lt; 之类），按 UTF-16 码元计。"""
    return tg_length(html.unescape(_TAG_RE.sub("", source)))


def entity_count(source: str) -> int:
    """格式实体个数的上界：每个开标签一个，另加正文里会被自动识别的 @用户名 与 /命令。"""
    plain = html.unescape(_TAG_RE.sub("", source))
    return len(_OPEN_TAG_RE.findall(source)) + len(_AUTO_ENTITY_RE.findall(plain))


def digest_fits(source: str) -> bool:
    """摘要的一条消息是否放得下：正文 ≤ 4096；实体 ≤ 100（超出的格式与提及会被 Telegram 静默丢弃）；
    HTML 源码 ≤ 8192（实体总长另有上限，约 9500，留出余量）。"""
    return (visible_length(source) <= MAX_MESSAGE_LENGTH and entity_count(source) <= MAX_ENTITIES
            and len(source) <= MAX_SOURCE_LENGTH)


def _voted_approve(approval: Approval) -> list[Approver]:
    return [v.approver for v in approval.votes.all() if v.decision == Vote.Decision.APPROVE]


def duration_ms_text(duration_ms: int | None) -> str:
    """构建耗时：精确到秒（构建常常只有几十秒，“不到 1 分钟”没有信息量）。"""
    if duration_ms is None:
        return _("未知")
    seconds = int(round(duration_ms / 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(h)d 小时 %(m)d 分 %(s)d 秒") % {"h": hours, "m": minutes, "s": secs}
    if minutes:
        return _("%(m)d 分 %(s)d 秒") % {"m": minutes, "s": secs}
    return _("%(s)d 秒") % {"s": secs}


# ---------------------------------------------------------------- 该提醒谁


class Audience:
    """谁还没投票、谁是负责人。每个（项目, 环境）只解析一次规则，按角色授权的审批人每组角色只查一次。"""

    def __init__(self) -> None:
        self._rules = list(
            ProjectRule.objects.filter(is_active=True).prefetch_related("approvers__role", "approver_roles", "owners")
        )
        self._resolved: dict[tuple[str, str], ResolvedRule] = {}
        self._by_roles: dict[tuple[int, ...], list[Approver]] = {}
        self._admins: list[Approver] | None = None

    def rule(self, project: str, environment: str) -> ResolvedRule:
        key = (project, environment)
        if key not in self._resolved:
            self._resolved[key] = resolve_rule(project, environment, rules=self._rules)
        return self._resolved[key]

    def _candidates(self, rule: ResolvedRule) -> list[Approver]:
        people = list(rule.approvers)
        if rule.approver_roles:
            key = tuple(sorted(r.pk for r in rule.approver_roles))
            if key not in self._by_roles:
                self._by_roles[key] = list(
                    Approver.objects.filter(is_active=True, role__in=key).select_related("role").order_by("username")
                )
            people += self._by_roles[key]
        if not people:
            # 没有配置审批人：只有管理员能批（P4），就提醒管理员
            if self._admins is None:
                self._admins = list(
                    Approver.objects.filter(is_active=True, role__is_admin=True, role__is_active=True)
                    .select_related("role").order_by("username")
                )
            people = self._admins
        return people

    def waiting(self, approval: Approval) -> list[Approver]:
        """此刻有权投票、还没投票、又不是发起人的审批人（R5）。"""
        rule = self.rule(approval.project, approval.environment)
        voted = {v.approver_id for v in approval.votes.all()}
        result = []
        for person in self._candidates(rule):
            if person.pk in voted or person.pk == approval.requester_id:
                continue
            if check_can_approve(person, project=approval.project, environment=approval.environment, rule=rule):
                result.append(person)
        return result

    def owners(self, project: str, environment: str) -> list[Approver]:
        return list(self.rule(project, environment).owners)


# ---------------------------------------------------------------- 原审批消息


def approval_messages(approval_ids: list[int]) -> dict[int, list[TelegramMessage]]:
    """每个审批已发出的审批消息（一条查询）。"""
    rows: dict[int, list[TelegramMessage]] = {}
    for row in TelegramMessage.objects.filter(
        approval_id__in=approval_ids, kind=MessageKind.APPROVAL, state=MessageState.SENT, message_id__isnull=False
    ).order_by("id"):
        rows.setdefault(row.approval_id, []).append(row)
    return rows


def _message_in(rows: list[TelegramMessage], chat_id: int | None) -> TelegramMessage | None:
    """优先取发在 chat_id 里的那条；否则任意一条（链接仍能带人回到原消息）。"""
    for row in rows:
        if row.chat_id == chat_id:
            return row
    return rows[0] if rows else None


# ---------------------------------------------------------------- 提醒摘要：渲染


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
    approval = item.approval
    _rank, marker = urgency(approval, now)
    emoji, env_label = environment_badge(approval.environment)
    head = f"{marker} <b>{esc(_short(approval.project))}</b> {emoji}{esc(env_label)} #{approval.build_number}"
    if approval.version:
        head += f" {esc(_short(approval.version))}"
    head += f" · <code>{esc(approval.public_id)}</code>"
    received = len(_voted_approve(approval))
    status = "⏳ " + esc(_("剩余 %(left)s · 同意 %(got)d/%(need)d") % {
        "left": time_left_text(approval.expires_at, now), "got": received, "need": approval.required_approvals,
    })
    if item.link:
        status += " · " + link(item.link, _("原消息"))
    limit = 3 if compact else MAX_MENTIONS
    who = mentions_html(item.waiting, limit=limit, mentioned=mentioned) \
        or esc(_("（没有可提醒的审批人，请管理员检查规则）"))
    return "\n".join([head, status, "👥 " + _colon(esc(_("待审批"))) + who])


@dataclass
class DigestPart:
    items: list[DigestItem]
    text: str = ""
    reply_to: int | None = None


def _assemble(blocks: list[str], items: list[DigestItem], mentioned: set[int], *, total: int, index: int,
              parts: int, compact: bool = False) -> str:
    """拼一条摘要消息：标题、每条审批一段、项目负责人（已点过名的只写名字）、操作提示。"""
    # 中文单复数同形；ngettext 让英文能写 1 release / 2 releases
    title = ngettext("审批提醒：%(n)d 条发布等待审批", "审批提醒：%(n)d 条发布等待审批", total) % {"n": total}
    if parts > 1:
        title = with_note(title, f"{index}/{parts}")
    lines = [f"⏰ <b>{esc(title)}</b>", "", "\n\n".join(blocks), ""]
    owners = [o for item in items for o in item.owners]
    if owners:
        who = mentions_html(owners, limit=3 if compact else MAX_MENTIONS, mentioned=set(mentioned))
        lines.append("📣 " + _colon(esc(_("项目负责人"))) + who)
    lines.append(esc(_("请点原消息上的按钮，或发送 /approve 编号、/reject 编号 理由。")))
    return "\n".join(lines)


def _render_part(items: list[DigestItem], now: datetime, *, total: int, index: int, parts: int) -> str:
    mentioned: set[int] = set()
    blocks = [_digest_block(i, now, mentioned=mentioned) for i in items]
    text = _assemble(blocks, items, mentioned, total=total, index=index, parts=parts)
    if len(items) == 1 and not digest_fits(text):
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
        if current and not digest_fits(_assemble([*blocks, block], [*current, item], tentative, total=total,
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


# ---------------------------------------------------------------- 提醒摘要：发送


def _load_pending(approval_ids: list[int], now: datetime) -> list[Approval]:
    return list(
        Approval.objects.filter(pk__in=approval_ids, status=Status.PENDING, expires_at__gt=now)
        .select_related("requester")
        .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("approver").order_by("id")))
        .order_by("pk")
    )


def _reminders_handled(approvals: list[Approval]) -> set[int]:
    """本次（第 reminder_count 次）提醒已经发过、或已永久失败的审批。"""
    numbers = {a.pk: a.reminder_count for a in approvals}
    handled = set()
    for approval_id, kind, details in ApprovalEvent.objects.filter(
        approval_id__in=list(numbers), kind__in=[EventKind.NOTIFIED, EventKind.NOTIFY_FAILED]
    ).values_list("approval_id", "kind", "details"):
        details = details or {}
        if details.get("notice") != NOTICE_REMINDER or details.get("number") != numbers[approval_id]:
            continue
        if kind == EventKind.NOTIFIED or details.get("permanent"):
            handled.add(approval_id)
    return handled


def _record_many(approvals: Iterable[Approval], kind: str, details: dict[str, Any],
                 per_approval: Callable[[Approval], dict[str, Any]] | None = None) -> None:
    ApprovalEvent.objects.bulk_create([
        ApprovalEvent(approval_id=a.pk, kind=kind, channel=Channel.TELEGRAM,
                      details={**details, **(per_approval(a) if per_approval else {})})
        for a in approvals
    ])


def _failure_details(exc: TelegramSendError, *, gave_up: bool = False) -> dict[str, Any]:
    # 重试用尽不算永久：同一通知以后被重放（重复投递、人工重跑）时还可以再试；永久错误则不再尝试
    return {"code": exc.code, "error": exc.message[:500], "permanent": exc.permanent,
            **({"gave_up": True} if gave_up else {})}


@dataclass
class DigestOutcome:
    chat_id: int | None
    sent: list[SentMessage] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # 已决定、已超时或本次已发过
    failed: list[int] = field(default_factory=list)


def reminder_digest_send(
    *,
    chat_id: int | None,
    approval_ids: list[int],
    sender: TelegramSender | None = None,
    time_budget: float | None = None,
) -> DigestOutcome:
    """发出一个群的提醒摘要。可重复调用：已发过本次提醒的审批会被跳过。

    抛 TelegramSendError（暂时性，已发的部分已记录）或 DigestIncomplete（时间预算用完）；永久错误记录后正常返回。
    time_budget 缺省为 DIGEST_TIME_BUDGET_SECONDS；math.inf 表示一次发完。
    """
    budget = DIGEST_TIME_BUDGET_SECONDS if time_budget is None else time_budget
    now = timezone.now()
    approvals = _load_pending(approval_ids, now)
    target = chat_id if chat_id is not None else default_chat_id()
    outcome = DigestOutcome(chat_id=target)
    handled = _reminders_handled(approvals)
    outcome.skipped = sorted(set(approval_ids) - {a.pk for a in approvals} | handled)
    approvals = [a for a in approvals if a.pk not in handled]
    if not approvals:
        return outcome
    if target is None:
        logger.warning("提醒没有可发送的群（规则未指定 chat_id，也没有默认群），%d 条审批未提醒", len(approvals))
        _record_many(approvals, EventKind.NOTIFY_FAILED, {"notice": NOTICE_REMINDER, "code": "no_chat",
                                                          "permanent": True},
                     lambda a: {"number": a.reminder_count})
        outcome.failed = [a.pk for a in approvals]
        return outcome
    target = chat_resolve(target)
    outcome.chat_id = target
    audience = Audience()
    messages = approval_messages([a.pk for a in approvals])
    items = [
        DigestItem(approval=a, waiting=audience.waiting(a), owners=audience.owners(a.project, a.environment),
                   message=_message_in(messages.get(a.pk, []), target), chat_id=target)
        for a in approvals
    ]
    parts = render_reminder_digest(items, now=now)
    sender = sender or TelegramSender()
    started = time.monotonic()
    for index, part in enumerate(parts):
        if index and time.monotonic() - started > budget:
            remaining = [i.approval.pk for p in parts[index:] for i in p.items]
            raise DigestIncomplete(remaining, retry_after=1.0)
        part = _recheck_part(part, now=timezone.now(), total=len(items), index=index + 1, parts=len(parts))
        if part is None:
            continue
        try:
            sent = sender.send_message(target, part.text, reply_to_message_id=part.reply_to)
        except TelegramSendError as exc:
            if not exc.permanent:
                raise
            rest = [i.approval for p in parts[index:] for i in p.items]
            logger.error("提醒摘要发往 chat %s 永久失败（%d 条审批）：%s", target, len(rest), exc)
            _record_many(rest, EventKind.NOTIFY_FAILED,
                         {"notice": NOTICE_REMINDER, "chat_id": target, **_failure_details(exc)},
                         lambda a: {"number": a.reminder_count})
            outcome.failed = [a.pk for a in rest]
            return outcome
        _record_many([i.approval for i in part.items], EventKind.NOTIFIED,
                     {"notice": NOTICE_REMINDER, "chat_id": sent.chat_id, "message_id": sent.message_id,
                      "part": index + 1, "parts": len(parts)},
                     lambda a: {"number": a.reminder_count})
        outcome.sent.append(sent)
    logger.info("提醒摘要已发到 chat %s：%d 条审批，%d 条消息", target, len(items), len(outcome.sent))
    return outcome


def _recheck_part(part: DigestPart, *, now: datetime, total: int, index: int, parts: int) -> DigestPart | None:
    """发送前最后确认：等待节流期间被决定的审批不再提醒（R4）。"""
    ids = [i.approval.pk for i in part.items]
    still = set(Approval.objects.filter(pk__in=ids, status=Status.PENDING, expires_at__gt=now)
                .values_list("pk", flat=True))
    if len(still) == len(ids):
        return part
    items = [i for i in part.items if i.approval.pk in still]
    if not items:
        return None
    text = _render_part(items, now, total=total, index=index, parts=parts)
    return DigestPart(items=items, text=text, reply_to=items[0].reply_to if len(items) == 1 else None)


# ---------------------------------------------------------------- 超时通知


def _notice_sent(approval: Approval, notice: str) -> bool:
    for kind, details in ApprovalEvent.objects.filter(
        approval=approval, kind__in=[EventKind.NOTIFIED, EventKind.NOTIFY_FAILED]
    ).values_list("kind", "details"):
        details = details or {}
        if details.get("notice") == notice and (kind == EventKind.NOTIFIED or details.get("permanent")):
            return True
    return False


def _approval_load(approval_id: int) -> Approval | None:
    return (
        Approval.objects.select_related("requester", "jenkins_server")
        .prefetch_related(Prefetch("votes", queryset=Vote.objects.select_related("approver").order_by("id")))
        .filter(pk=approval_id).first()
    )


def _approval_target(approval: Approval) -> tuple[int | None, int | None]:
    """(群, 回复的消息 id)：有审批消息就回复它，否则发到审批的群或默认群。"""
    rows = approval_messages([approval.pk]).get(approval.pk, [])
    preferred = chat_resolve(approval.chat_id) if approval.chat_id else None
    row = _message_in(rows, preferred)
    if row is not None:
        return int(row.chat_id), int(row.message_id)
    chat = approval.chat_id or default_chat_id()
    return (int(chat) if chat else None), None


def _summary_rows(approval: Approval) -> list[str]:
    emoji, env_label = environment_badge(approval.environment)
    rows = [
        (_("项目"), esc(approval.project)),
        (_("环境"), f"{emoji} {esc(env_label)}"),
        (_("任务"), f"{esc(approval.job_name)} #{approval.build_number}"),
    ]
    if approval.version:
        rows.append((_("版本"), esc(approval.version)))
    return [label_html(label) + value for label, value in rows]


def render_timeout_notice(approval: Approval, *, owners: list[Approver], waiting: list[Approver]) -> str:
    """超时通知（R11）：哪条审批、截止时间、票数、按哪种策略处理、接下来会怎样。"""
    title = _("审批已超时")
    lines = [f"⌛ <b>{esc(title)}</b> · <code>{esc(approval.public_id)}</code>", *_summary_rows(approval)]
    received = len(_voted_approve(approval))
    lines.append(esc(_("截止 %(t)s 前没有足够的同意票（%(got)d/%(need)d）。") % {
        "t": format_time(approval.expires_at),
        "got": received, "need": approval.required_approvals,
    }))
    policy = _("超时即拒绝") if approval.timeout_policy == "reject" else _("仅标记超时")
    lines.append(label_html(_("超时策略")) + esc(policy))
    lines.append(label_html(_("下一步")) + esc(next_step_text(approval)))
    if waiting:
        lines.append("👥 " + _colon(esc(_("未投票的审批人"))) + mentions_html(waiting))
    people = [*owners]
    if approval.requester is not None:
        people.append(approval.requester)
    if people:
        lines.append("📣 " + _colon(esc(_("负责人与发起人"))) + mentions_html(people))
    return "\n".join(lines)


def timeout_notice_send(*, approval_id: int, sender: TelegramSender | None = None) -> SentMessage | None:
    """发出超时通知（回复在原审批消息下）。已发过、或审批并未超时，则什么也不做。"""
    approval = _approval_load(approval_id)
    if approval is None or approval.status != Status.TIMEOUT or _notice_sent(approval, NOTICE_TIMEOUT):
        return None
    chat_id, reply_to = _approval_target(approval)
    if chat_id is None:
        logger.warning("审批 %s 的超时通知没有可发送的群", approval.public_id)
        event_record(approval=approval, kind=EventKind.NOTIFY_FAILED, channel=Channel.TELEGRAM,
                     details={"notice": NOTICE_TIMEOUT, "code": "no_chat", "permanent": True})
        return None
    audience = Audience()
    text = render_timeout_notice(approval, owners=audience.owners(approval.project, approval.environment),
                                 waiting=audience.waiting(approval))
    return _send_for_approval(approval, NOTICE_TIMEOUT, chat_id, text, reply_to, sender)


def _send_for_approval(approval: Approval, notice: str, chat_id: int, text: str, reply_to: int | None,
                       sender: TelegramSender | None, extra: dict[str, Any] | None = None) -> SentMessage | None:
    """发一条属于某个审批的通知并记入其历史；永久错误记录后返回 None，暂时性错误抛出。"""
    sender = sender or TelegramSender()
    try:
        sent = sender.send_message(chat_id, text, reply_to_message_id=reply_to)
    except TelegramSendError as exc:
        if not exc.permanent:
            raise
        logger.error("审批 %s 的%s通知发往 chat %s 永久失败：%s", approval.public_id, notice, chat_id, exc)
        event_record(approval=approval, kind=EventKind.NOTIFY_FAILED, channel=Channel.TELEGRAM,
                     details={"notice": notice, "chat_id": chat_id, **_failure_details(exc), **(extra or {})})
        return None
    event_record(approval=approval, kind=EventKind.NOTIFIED, channel=Channel.TELEGRAM,
                 details={"notice": notice, "chat_id": sent.chat_id, "message_id": sent.message_id,
                          **({"reply_to": reply_to} if reply_to else {}), **(extra or {})})
    return sent


# ---------------------------------------------------------------- 构建结果通知


def console_url(build_url: str) -> str | None:
    return f"{build_url.rstrip('/')}/console" if build_url else None


def build_log_tail_for(result: BuildResult, *, lines: int = LOG_TAIL_LINES) -> str:
    """失败时附带的日志末尾（B4）：从 Jenkins 增量读取并保存；Jenkins 不可达时用已存的日志。"""
    from jenkins_bridge.logs import build_log_tail

    return build_log_tail(jenkins_server=result.jenkins_server, job_name=result.job_name,
                          build_number=result.build_number, approval=result.approval, lines=lines)


def render_build_result(result: BuildResult, *, approval: Approval | None, people: list[Approver],
                        tail: str = "", project: str = "") -> str:
    """构建结果通知（B3–B7）：结果与表情、耗时、环境、版本、谁批准的、Jenkins 与日志链接，失败时附日志末尾。"""
    titles = {
        BuildResultValue.SUCCESS: _("构建成功"),
        BuildResultValue.FAILURE: _("构建失败"),
        BuildResultValue.ABORTED: _("构建已中止"),
        BuildResultValue.NOT_BUILT: _("未构建"),
        BuildResultValue.UNSTABLE: _("构建不稳定"),
    }
    emoji = RESULT_EMOJI.get(result.result, "❔")
    title = titles.get(result.result, result.result)
    project = project or (approval.project if approval else "") or result.project or result.job_name
    environment = result.environment or (approval.environment if approval else "")
    env_emoji, env_label = environment_badge(environment)
    version = result.version or (approval.version if approval else "")
    lines = [
        f"{emoji} <b>{esc(title)}</b> · {esc(project)} #{result.build_number}",
        label_html(_("结果")) + esc(result.result),
        label_html(_("任务")) + f"{esc(result.job_name)} #{result.build_number}",
        label_html(_("环境")) + f"{env_emoji} {esc(env_label)}",
    ]
    if version:
        lines.append(label_html(_("版本")) + esc(version))
    lines.append(label_html(_("耗时")) + esc(duration_ms_text(result.duration_ms)))
    if approval is not None:
        approvers = [a.label for a in _voted_approve(approval)]
        if approval.status == Status.APPROVED:
            who = _("%(names)s 同意") % {"names": join_names(approvers) or approval.decided_by_name or _("系统")}
        else:
            who = str(approval.get_status_display())
            if approval.decided_by_name:
                who = with_note(who, approval.decided_by_name)
        lines.append(label_html(_("审批")) + f"<code>{esc(approval.public_id)}</code> {esc(who)}")
    else:
        lines.append(label_html(_("审批")) + esc(_("（这次构建没有经过审批）")))
    links = [p for p in (link(console_url(result.build_url), _("Jenkins 控制台")),
                         link(log_url(approval), _("构建日志"))) if p]
    if links:
        lines.append("🔗 " + " | ".join(links))
    if people:
        lines.append("📣 " + _colon(esc(_("请关注"))) + mentions_html(people))
    head = "\n".join(lines)
    if not tail.strip():
        return fit_message(lambda extra: head + extra, "")

    def build(escaped_tail: str) -> str:
        label = label_html(_("日志末尾（最后 %(n)d 行）") % {"n": LOG_TAIL_LINES})
        return f"{head}\n\n{label}\n<pre>{escaped_tail}</pre>"

    return fit_message(build, tail, keep="tail")


# BuildResult.details 里由这里维护的键（不加字段、不加迁移）：
#   notice          送达记录 {"chat_id", "message_id", "sent_at"}；
#   notify_error    永久失败、没有群、重试用尽或补发次数用尽：不再发送；
#   notice_attempt  {"attempts", "claimed_at", "error", "retry_until", "recovered"}：认领过几次（有它才能把
#                   过旧的 notified_at 认作死掉的认领，而不是旧版本写下的通知时间）、暂时失败后的重试最晚
#                   何时到（epoch 秒，补发扫描在此之前不插手）、补发扫描重投过几次。
RESULT_RECOVERY_GRACE = timedelta(minutes=2)  # 刚收到的结果：提交后投递的任务可能还在路上
RESULT_STALE_CLAIM = timedelta(minutes=10)  # 认领后这么久既没送达也没失败记录：worker 死了（任务硬超时 90 秒）
RESULT_RECOVERY_MAX_AGE = timedelta(hours=24)  # 更早的结果不补发：已过时，也免得刚配置好 Telegram 时补发一堆历史
RESULT_MAX_RECOVERIES = 5  # 补发扫描最多重投几次（两次之间至少隔 RESULT_STALE_CLAIM），之后记为放弃


def _result_update(result_id: int, change: Callable[[BuildResult], dict[str, Any] | None],
                   **conditions: Any) -> bool:
    """行锁下读出当前行，由 change 算出要写的字段，再带同样的条件更新：条件已不成立（别人抢先）就什么也不写。

    details 是整体写回的 JSON：先锁再读，才不会覆盖别人刚写的键。SQLite 没有行锁，条件更新仍保证认领只有一方成功。
    """
    with transaction.atomic():
        row = BuildResult.objects.select_for_update().filter(pk=result_id, **conditions).first()
        values = change(row) if row is not None else None
        if not values:
            return False
        return BuildResult.objects.filter(pk=result_id, **conditions).update(**values) == 1


def _with_details(row: BuildResult, **values: Any) -> dict[str, Any]:
    return {**(row.details or {}), **values}


def _result_claim(result_id: int) -> datetime | None:
    """条件认领：notified_at 为空才改成现在。返回认领时写入的时刻；别人已认领、已送达或已放弃返回 None。"""
    now = timezone.now()

    def claim(row: BuildResult) -> dict[str, Any] | None:
        details = row.details or {}
        if "notice" in details or "notify_error" in details:
            return None  # 已经有了结局（认领被放开之后才可能走到这里）
        attempt = {k: v for k, v in (details.get("notice_attempt") or {}).items() if k != "retry_until"}
        attempt.update(attempts=attempt.get("attempts", 0) + 1, claimed_at=now.isoformat())
        return {"notified_at": now, "details": _with_details(row, notice_attempt=attempt)}

    return now if _result_update(result_id, claim, notified_at__isnull=True) else None


def _retry_window(retry_after: float | None) -> float:
    """暂时失败后，任务的下一次重试最晚多久开始（retry_countdown 的上界），再加上执行的余量。"""
    cap = getattr(settings, "CELERY_RETRY_BACKOFF_MAX", 600)
    return max(cap * 1.2, (retry_after or 0) + 1) + 1 + RESULT_STALE_CLAIM.total_seconds()


def _result_release(result_id: int, claimed_at: datetime, *, error: str, wait_seconds: float) -> None:
    """放开自己的认领，让重试（或补发扫描）能再认领；wait_seconds 内补发扫描不插手（任务自己的重试会来）。"""
    retry_until = int(timezone.now().timestamp() + wait_seconds)

    def release(row: BuildResult) -> dict[str, Any]:
        attempt = {**((row.details or {}).get("notice_attempt") or {}), "error": error, "retry_until": retry_until}
        return {"notified_at": None, "details": _with_details(row, notice_attempt=attempt)}

    _result_update(result_id, release, notified_at=claimed_at)


def _result_delivered(result: BuildResult, sent: SentMessage, *, reply_to: int | None,
                      extra: dict[str, Any]) -> None:
    """送达：记在构建结果上（补发扫描据此不再补发），有审批时也记进审批历史。"""
    record = {"chat_id": sent.chat_id, "message_id": sent.message_id, "sent_at": timezone.now().isoformat()}
    with transaction.atomic():
        if result.approval is not None:
            event_record(approval=result.approval, kind=EventKind.NOTIFIED, channel=Channel.TELEGRAM,
                         details={"notice": NOTICE_BUILD_RESULT, "chat_id": sent.chat_id,
                                  "message_id": sent.message_id, **({"reply_to": reply_to} if reply_to else {}),
                                  **extra})
        _result_update(result.pk, lambda row: {"details": _with_details(row, notice=record)})


def _result_failed(result: BuildResult, error: dict[str, Any]) -> None:
    """永久失败、没有群或放弃：记在构建结果上（后台可见，补发扫描不再重试），有审批时也记进审批历史。"""
    with transaction.atomic():
        if result.approval is not None:
            event_record(approval=result.approval, kind=EventKind.NOTIFY_FAILED, channel=Channel.TELEGRAM,
                         details=error)
        _result_update(result.pk, lambda row: {"details": _with_details(row, notify_error=error)})


@dataclass
class ResultAudience:
    chat_id: int | None
    reply_to: int | None
    people: list[Approver]
    project: str = ""


def build_result_audience(result: BuildResult) -> ResultAudience:
    """发往哪里、点名谁：有审批时回复审批消息，点名同意者与负责人；没有审批时按规则找项目群，点名负责人与审批人（B8）。"""
    approval = result.approval
    audience = Audience()
    if approval is not None:
        chat_id, reply_to = _approval_target(approval)
        people = [*_voted_approve(approval), *audience.owners(approval.project, approval.environment)]
        return ResultAudience(chat_id, reply_to, people)
    rule = audience.rule(result.project or result.job_name, result.environment)
    chat_id = rule.chat_id or default_chat_id()
    return ResultAudience(chat_resolve(int(chat_id)) if chat_id else None, None, [*rule.owners, *rule.approvers],
                          project=rule.project if rule.matched else "")


def build_result_notice_send(*, result_id: int, sender: TelegramSender | None = None) -> SentMessage | None:
    """发出构建结果通知（B3–B8）。notified_at 上的条件认领保证重试、重复投递与补发扫描只有一方在发。

    暂时性错误：放开认领后抛出，由任务重试；永久错误与“没有群”：记录后返回 None。
    送达与失败都记在 BuildResult.details 上（notice / notify_error），补发扫描据此判断还欠不欠这条通知。
    """
    claimed_at = _result_claim(result_id)
    if claimed_at is None:
        return None
    result = (
        BuildResult.objects.select_related("jenkins_server", "approval", "approval__requester",
                                           "approval__jenkins_server")
        .prefetch_related(Prefetch("approval__votes", queryset=Vote.objects.select_related("approver").order_by("id")))
        .get(pk=result_id)
    )
    try:
        target = build_result_audience(result)
        chat_id = target.chat_id
        if chat_id is None:
            logger.warning("构建结果 %s #%s 没有可发送的群", result.job_name, result.build_number)
            _result_failed(result, {"notice": NOTICE_BUILD_RESULT, "code": "no_chat", "permanent": True})
            return None
        tail = ""
        if result.result in (BuildResultValue.FAILURE, BuildResultValue.UNSTABLE):
            tail = build_log_tail_for(result)
        text = render_build_result(result, approval=result.approval, people=target.people, tail=tail,
                                   project=target.project)
        extra = {"result": result.result, "build_result_id": result.pk}
        try:
            sent = (sender or TelegramSender()).send_message(chat_id, text, reply_to_message_id=target.reply_to)
        except TelegramSendError as exc:
            if not exc.permanent:
                raise
            logger.error("构建结果 %s #%s 的通知发往 chat %s 永久失败：%s", result.job_name, result.build_number,
                         chat_id, exc)
            _result_failed(result, {"notice": NOTICE_BUILD_RESULT, "chat_id": chat_id, **_failure_details(exc),
                                    **extra})
            return None
    except TelegramSendError as exc:
        _result_release(result_id, claimed_at, error=exc.code, wait_seconds=_retry_window(exc.retry_after))
        raise
    except Exception:
        # 渲染或取日志出了意外：放开认领再把错误交给 Celery 记录；任务不会重试，隔一段时间由补发扫描重投（有次数上限）
        _result_release(result_id, claimed_at, error="exception", wait_seconds=RESULT_STALE_CLAIM.total_seconds())
        raise
    # 已经发出去了：记录失败也不放开认领（否则马上重发）；真丢了记录，补发扫描会在认领过期后补发（至少一次）
    _result_delivered(result, sent, reply_to=target.reply_to, extra=extra)
    return sent


def build_result_notice_gave_up(*, result_id: int, exc: TelegramSendError) -> None:
    """重试次数用尽：标记为已处理，并把原因记在 notify_error（任务与补发扫描都不再重试）。"""
    BuildResult.objects.filter(pk=result_id, notified_at__isnull=True).update(notified_at=timezone.now())
    result = BuildResult.objects.select_related("approval").filter(pk=result_id).first()
    if result is not None:
        _result_failed(result, {"notice": NOTICE_BUILD_RESULT, **_failure_details(exc, gave_up=True)})


def build_result_recover(*, limit: int = 50) -> dict[str, list[int]]:
    """补发扫描（构建结果通知至少送达一次）：找出欠着的通知，放开死掉的认领并重新投递通知任务。每次最多 limit 条。

    欠着 = 收到超过 2 分钟、不到 24 小时，既没有送达记录（notice）也没有放弃记录（notify_error），并且
    - notified_at 为空：任务从没跑过（提交后投递时 broker 不可用），或暂时失败后等的重试早该到了；
    - 或 notified_at 是 10 分钟前的认领：worker 在发送途中死了。
    返回 {"requeued": 重新投递的, "abandoned": 重投次数用尽、记为放弃的}。
    """
    now = timezone.now()
    epoch = int(now.timestamp())
    owed = (
        BuildResult.objects.filter(received_at__lte=now - RESULT_RECOVERY_GRACE,
                                   received_at__gte=now - RESULT_RECOVERY_MAX_AGE)
        .exclude(details__has_key="notice")
        .exclude(details__has_key="notify_error")
    )
    retry_due = Q(details__notice_attempt__retry_until__isnull=True) | Q(details__notice_attempt__retry_until__lt=epoch)
    never_ran = Q(notified_at__isnull=True) & retry_due
    died = Q(notified_at__lte=now - RESULT_STALE_CLAIM, details__has_key="notice_attempt")
    candidates = list(owed.filter(never_ran | died).order_by("received_at", "id").values_list("pk", flat=True)[:limit])
    found: dict[str, list[int]] = {"requeued": [], "abandoned": []}
    for result_id in candidates:
        outcome = _result_requeue(result_id, now)
        if outcome:
            found[outcome].append(result_id)
    if found["requeued"] or found["abandoned"]:
        logger.info("构建结果通知补发：重新投递 %d 条，放弃 %d 条", len(found["requeued"]), len(found["abandoned"]))
    return found


def _result_requeue(result_id: int, now: datetime) -> str | None:
    """行锁下重新核对一条候选，条件更新放开认领（notified_at 仍是看到的值才改）后投递任务。

    两次扫描、或扫描与刚认领的任务之间只有一方的更新生效；真正防止重复发送的仍是任务里的认领。
    """
    with transaction.atomic():
        row = BuildResult.objects.select_for_update().select_related("approval").filter(pk=result_id).first()
        if row is None:
            return None
        details = row.details or {}
        attempt = dict(details.get("notice_attempt") or {})
        if "notice" in details or "notify_error" in details:
            return None
        if row.notified_at is None:
            if attempt.get("retry_until", 0) >= int(now.timestamp()):
                return None
        elif row.notified_at > now - RESULT_STALE_CLAIM or not attempt:
            return None
        recovered = attempt.get("recovered", 0)
        seen = BuildResult.objects.filter(pk=result_id, notified_at=row.notified_at)
        if recovered >= RESULT_MAX_RECOVERIES:
            error = {"notice": NOTICE_BUILD_RESULT, "code": "recovery_exhausted", "error": attempt.get("error", ""),
                     "permanent": False, "gave_up": True, "recovered": recovered}
            if not seen.update(notified_at=row.notified_at or now, details=_with_details(row, notify_error=error)):
                return None
            logger.error("构建结果 %s #%s 的通知补发 %d 次仍未送达，放弃", row.job_name, row.build_number, recovered)
            if row.approval is not None:
                event_record(approval=row.approval, kind=EventKind.NOTIFY_FAILED, channel=Channel.TELEGRAM,
                             details=error)
            return "abandoned"
        attempt.update(recovered=recovered + 1, retry_until=int(now.timestamp() + RESULT_STALE_CLAIM.total_seconds()))
        if not seen.update(notified_at=None, details=_with_details(row, notice_attempt=attempt)):
            return None
        transaction.on_commit(lambda: build_result_notify_task.delay(result_id))
    return "requeued"


# ---------------------------------------------------------------- 配置变化通知


def render_config_changed(name: str, ok: bool, summary: str) -> str:
    """配置重新加载或被拒绝（C7）。summary 可能含文件内容，一律转义、超长截短。"""
    files = {"users": settings.USERS_CONFIG_FILE.name, "app": settings.APP_CONFIG_FILE.name}
    filename = files.get(name, name)
    if ok:
        head = "✅ " + _colon("<b>{}</b>".format(esc(_("配置已重新加载")))) + f"<code>{esc(filename)}</code>"
    else:
        head = ("⛔ " + _colon("<b>{}</b>".format(esc(_("配置被拒绝")))) + f"<code>{esc(filename)}</code>\n"
                + esc(_("文件有错误，上一个好配置继续生效。")))

    def build(escaped: str) -> str:
        return f"{head}\n<pre>{escaped}</pre>" if escaped else head

    return fit_message(build, summary or "")


def config_changed_send(*, name: str, ok: bool, summary: str, sender: TelegramSender | None = None) -> \
        SentMessage | None:
    chat_id = default_chat_id()
    if chat_id is None:
        logger.info("配置变化通知：没有默认群，只记日志（%s，ok=%s）", name, ok)
        return None
    sender = sender or TelegramSender()
    try:
        return sender.send_message(chat_id, render_config_changed(name, ok, summary))
    except TelegramSendError as exc:
        if not exc.permanent:
            raise
        logger.error("配置变化通知发往 chat %s 永久失败：%s", chat_id, exc)
        return None


# ---------------------------------------------------------------- Celery 任务（名字是契约）


def _retry_or_give_up(task: Any, exc: TelegramSendError, give_up: Callable[[TelegramSendError], None]) -> None:
    """暂时性错误：退避重试，不早于 retry_after；次数用尽则记录放弃。"""
    retries = task.request.retries or 0
    if retries >= task.max_retries:
        logger.error("任务 %s 重试 %d 次仍失败，放弃：%s", task.name, retries, exc)
        give_up(exc)
        return
    raise task.retry(exc=exc, countdown=retry_countdown(retries, exc.retry_after))


@shared_task(bind=True, name=REMINDER_DIGEST_TASK, max_retries=MAX_RETRIES, acks_late=True, ignore_result=True)
def reminder_digest_task(self, chat_id: int | None, approval_ids: list[int]) -> None:
    """一个群同时到期的提醒合成一条摘要发出（X6）。重复执行不会重复提醒。"""
    if not telegram_configured():
        logger.info("未配置 Telegram，跳过 %d 条提醒", len(approval_ids))
        return
    try:
        reminder_digest_send(chat_id=chat_id, approval_ids=approval_ids)
    except DigestIncomplete as incomplete:
        # 有进展才会走到这里（至少发出了一条），用新任务接着发，不占用错误重试次数
        reminder_digest_task.apply_async(args=[chat_id, incomplete.remaining], countdown=incomplete.retry_after)
    except TelegramSendError as exc:

        def give_up(error: TelegramSendError) -> None:
            approvals = _load_pending(approval_ids, timezone.now())
            handled = _reminders_handled(approvals)
            _record_many([a for a in approvals if a.pk not in handled], EventKind.NOTIFY_FAILED,
                         {"notice": NOTICE_REMINDER, "chat_id": chat_id, **_failure_details(error, gave_up=True)},
                         lambda a: {"number": a.reminder_count})

        _retry_or_give_up(self, exc, give_up)


@shared_task(bind=True, name=TIMEOUT_NOTICE_TASK, max_retries=MAX_RETRIES, acks_late=True, ignore_result=True)
def timeout_notice_task(self, approval_id: int) -> None:
    """超时通知（R11），回复在原审批消息下。原消息的编辑由刷新任务完成。"""
    if not telegram_configured():
        return
    try:
        timeout_notice_send(approval_id=approval_id)
    except TelegramSendError as exc:

        def give_up(error: TelegramSendError) -> None:
            approval = Approval.objects.filter(pk=approval_id).first()
            if approval is not None:
                event_record(approval=approval, kind=EventKind.NOTIFY_FAILED, channel=Channel.TELEGRAM,
                             details={"notice": NOTICE_TIMEOUT, **_failure_details(error, gave_up=True)})

        _retry_or_give_up(self, exc, give_up)


@shared_task(bind=True, name=BUILD_RESULT_NOTIFY_TASK, max_retries=MAX_RETRIES, acks_late=True, ignore_result=True)
def build_result_notify_task(self, build_result_id: int) -> None:
    """构建结果通知（B3–B8）。notified_at 上的认领保证只有一方在发；丢了的由补发扫描重投（至少一次）。"""
    if not telegram_configured():
        return
    try:
        build_result_notice_send(result_id=build_result_id)
    except TelegramSendError as exc:
        _retry_or_give_up(self, exc, lambda error: build_result_notice_gave_up(result_id=build_result_id, exc=error))


@shared_task(bind=True, name=CONFIG_CHANGED_NOTIFY_TASK, max_retries=MAX_RETRIES, acks_late=True,
             ignore_result=True)
def config_changed_notify_task(self, name: str, ok: bool, summary: str) -> None:
    """配置文件重新加载或被拒绝时通知默认群（C7）。"""
    if not telegram_configured():
        return
    try:
        config_changed_send(name=name, ok=ok, summary=summary)
    except TelegramSendError as exc:
        _retry_or_give_up(self, exc, lambda error: None)


# ---------------------------------------------------------------- 超时通知的补发（R11）

TIMEOUT_RECOVERY_AFTER = timedelta(minutes=5)
TIMEOUT_RECOVERY_WINDOW = timedelta(hours=24)


def timeout_notice_recover(*, limit: int = 50) -> list[int]:
    """超时了却没有任何超时通知的记录（既没发出、也没记失败）：多半是提交后投递时 broker 不可用。

    只补投一次：投递同时记一条 notify_failed（code=recovery_enqueued），之后任务自己的成功/失败记录接管，
    扫描不会对一直失败的通知无限重投。
    """
    now = timezone.now()
    handled = ApprovalEvent.objects.filter(
        kind__in=[EventKind.NOTIFIED, EventKind.NOTIFY_FAILED], details__notice=NOTICE_TIMEOUT
    ).values("approval_id")
    owed = list(
        Approval.objects.filter(status=Status.TIMEOUT, decided_at__lte=now - TIMEOUT_RECOVERY_AFTER,
                                decided_at__gte=now - TIMEOUT_RECOVERY_WINDOW)
        .exclude(pk__in=handled)
        .order_by("decided_at")
        .values_list("pk", flat=True)[:limit]
    )
    for approval_id in owed:
        with transaction.atomic():
            ApprovalEvent.objects.create(approval_id=approval_id, kind=EventKind.NOTIFY_FAILED,
                                         channel=Channel.TELEGRAM,
                                         details={"notice": NOTICE_TIMEOUT, "code": "recovery_enqueued"})
            transaction.on_commit(lambda pk=approval_id: timeout_notice_task.delay(pk))
    if owed:
        logger.info("补投超时通知：%d 条", len(owed))
    return owed
