"""各类通知共用的部分：发往哪个群、回复哪条审批消息、点名、Telegram 的长度与格式实体上限。

通知的样子在 templates/telegram/notices/；这里只决定点谁的名、量一条消息放不放得下。
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.utils.translation import gettext as _

from accounts.app_config import app_defaults
from accounts.models import Approver
from approvals.models import Approval, Vote

from ..models import MessageKind, MessageState, TelegramMessage
from ..rendering import MAX_MESSAGE_LENGTH, Mention, Mentions, plain_text, tg_length, truncate_plain
from ..sender import chat_resolve

MAX_MENTIONS = 10  # 一条审批最多点名几人：角色下几百人时也不会把消息撑爆
MENTION_LABEL_CHARS = 32
FIELD_CHARS = 64  # 摘要里项目名、版本的最大显示长度
MAX_ENTITIES = 100  # Telegram 每条消息只处理前 100 个格式实体（粗体、链接、提及……）
MAX_SOURCE_LENGTH = 8192
_OPEN_TAG_RE = re.compile(r"<[a-z]")
_AUTO_ENTITY_RE = re.compile(r"(?<![\w/@])[@/][A-Za-z_]")  # @用户名、/命令（“1/2” 这样的票数不算）


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


def short(value: str, limit: int = FIELD_CHARS) -> str:
    return truncate_plain(value or "", limit)


def voted_approve(approval: Approval) -> list[Approver]:
    return [v.approver for v in approval.votes.all() if v.decision == Vote.Decision.APPROVE]


def mention_list(people: Iterable[Approver], *, limit: int = MAX_MENTIONS, mentioned: set[int] | None = None) -> Mentions:
    """点名一组人（去重、保序）；超过 limit 人时只列前几位并注明人数。模板用 {{ …|mentions }} 写出。

    mentioned：同一条消息里已经点过名的人只写名字（并把这次链接的人加进去）。Telegram 每条消息只处理前 100 个
    格式实体，重复的提及链接既占这个额度，也不会让人多收到一次提醒。
    """
    unique: dict[int, Approver] = {}
    for person in people:
        unique.setdefault(person.pk, person)
    listed = list(unique.values())
    shown = []
    for person in listed[:limit]:
        linked = mentioned is None or person.pk not in mentioned
        shown.append(Mention(label=short(person.label, MENTION_LABEL_CHARS), telegram_id=person.telegram_id,
                             username=person.telegram_username, linked=linked))
        if linked and mentioned is not None:
            mentioned.add(person.pk)
    more = _("等 %(n)d 人") % {"n": len(listed)} if len(listed) > limit else ""
    return Mentions(people=tuple(shown), more=more)


def visible_length(source: str) -> int:
    """Telegram 的 4096 限制针对解析后的正文（去掉标签、还原 &lt; 之类），按 UTF-16 码元计。"""
    return tg_length(plain_text(source))


def entity_count(source: str) -> int:
    """格式实体个数的上界：每个开标签一个，另加正文里会被自动识别的 @用户名 与 /命令。"""
    plain = plain_text(source)
    return len(_OPEN_TAG_RE.findall(source)) + len(_AUTO_ENTITY_RE.findall(plain))


def fits_one_message(source: str) -> bool:
    """一条消息是否放得下：正文 ≤ 4096；实体 ≤ 100（超出的格式与提及会被 Telegram 静默丢弃）；
    HTML 源码 ≤ 8192（实体总长另有上限，约 9500，留出余量）。"""
    return (visible_length(source) <= MAX_MESSAGE_LENGTH and entity_count(source) <= MAX_ENTITIES
            and len(source) <= MAX_SOURCE_LENGTH)


def approval_messages(approval_ids: list[int]) -> dict[int, list[TelegramMessage]]:
    """每个审批已发出的审批消息（一条查询）。"""
    rows: dict[int, list[TelegramMessage]] = {}
    for row in TelegramMessage.objects.filter(
        approval_id__in=approval_ids, kind=MessageKind.APPROVAL, state=MessageState.SENT, message_id__isnull=False
    ).order_by("id"):
        rows.setdefault(row.approval_id, []).append(row)
    return rows


def message_in(rows: list[TelegramMessage], chat_id: int | None) -> TelegramMessage | None:
    """优先取发在 chat_id 里的那条；否则任意一条（链接仍能带人回到原消息）。"""
    for row in rows:
        if row.chat_id == chat_id:
            return row
    return rows[0] if rows else None


def approval_chat(approval: Approval) -> int | None:
    """审批的群：规则指定的群（创建时已快照），否则默认群；沿迁移找到现用 id。"""
    chat = approval.chat_id or default_chat_id()
    return chat_resolve(int(chat)) if chat else None


def reply_target(approval: Approval) -> tuple[int | None, int | None]:
    """(群, 回复的消息 id)：有审批消息就回复它，否则发到审批的群或默认群。"""
    chat = approval_chat(approval)
    row = message_in(approval_messages([approval.pk]).get(approval.pk, []), chat)
    if row is not None:
        return int(row.chat_id), int(row.message_id)
    return chat, None


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
