"""发件箱（DESIGN “The outbox”）：发往 Telegram 的每一条消息的状态机。

- 入箱：outbox_add，按幂等键取或建一行——同一条通知无论任务跑几次、补发扫描补几次，都只有一行；
- 认领：outbox_claim，一次条件更新（状态、租约空闲、到了下次尝试时间）写入随机令牌——谁拿到令牌谁发，
  一行或一批（提醒摘要）都是这一个认领；worker 死在中途，租约到期后可以再认领；
- 结果：outbox_sent / outbox_failed / outbox_skip / outbox_give_up 都只改“仍由我持有”的行；
- 重试：outbox_failed 是唯一的重试策略：永久错误不再试；暂时错误按 approvalbot.celery.retry_countdown 排下次时间，
  最多 MAX_ATTEMPTS 次；
- 补发：outbox_due 找出到时间、没人持有的待发行（补发扫描据此重新投递，见 tasks.telegram_recovery_sweep_task）。
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, F, PositiveIntegerField, Q, QuerySet, When
from django.utils import timezone

from approvalbot.celery import retry_countdown
from approvalbot.metrics import EXTERNAL_CALL_ERRORS

from .models import MessageState, TelegramMessage
from .sender import SentMessage, TelegramSender, TelegramSendError

logger = logging.getLogger(__name__)

# 一次发送最坏要多久：节流就地等待 ≤10 s + 请求超时 15 s，短 429 再来一轮；租约要比它长，又不能长到耽误补发
LEASE_SECONDS = 90
MAX_ATTEMPTS = 8
# 入箱（或该发）之后这么久还没人认领，才由补发扫描接手：正常情况下投递任务几毫秒内就到，
# Redis 重启后丢了任务时，扫描（每 15 秒）在半分钟左右补上
RECOVERY_GRACE = timedelta(seconds=20)
# 补发只管这么久以内的消息：更早的已经过时（也免得刚配置好 Telegram 时补发一堆历史）
RECOVERY_WINDOW = timedelta(hours=24)


def outbox_key(kind: str, *parts: object) -> str:
    return ":".join([kind, *(str(p) for p in parts)])


def outbox_add(
    *,
    key: str,
    kind: str,
    chat_id: int | None,
    approval_id: int | None = None,
    build_result_id: int | None = None,
    sequence: int = 0,
    reply_to: int | None = None,
    payload: dict[str, Any] | None = None,
) -> TelegramMessage:
    """按幂等键取或建一行（待发送）。已存在的行原样返回：已发过的不会再发。"""
    row = TelegramMessage.objects.filter(dedupe_key=key).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return TelegramMessage.objects.create(
                dedupe_key=key, kind=kind, chat_id=chat_id, approval_id=approval_id, build_result_id=build_result_id,
                sequence=sequence, reply_to_message_id=reply_to, payload=payload or {},
            )
    except IntegrityError:  # 并发的同一条通知刚建好
        return TelegramMessage.objects.get(dedupe_key=key)


def outbox_add_many(rows: list[TelegramMessage]) -> list[int]:
    """outbox_add 的批量版（一个群的几百条提醒）：已存在的键不动，返回这些键对应行的 id（按键的顺序）。"""
    if not rows:
        return []
    TelegramMessage.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    ids = dict(TelegramMessage.objects.filter(dedupe_key__in=[r.dedupe_key for r in rows])
               .values_list("dedupe_key", "pk"))
    return [ids[r.dedupe_key] for r in rows]


def _lease_free(now: Any) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def outbox_claim(ids: Iterable[int], *, states: tuple[str, ...] = (MessageState.PENDING,),
                 due_only: bool = True) -> list[TelegramMessage]:
    """认领这些行（一次条件更新）：状态对、租约空闲、（due_only 时）到了下次尝试时间。返回认领到的行。

    认领待发的行就算一次尝试（attempts 加一）：worker 死在发送途中也计数，补发不会无限进行下去。
    编辑已发出的审批消息时传 states=(SENT,)、due_only=False：状态变了就该马上改，不等重试时间。
    补发扫描认领后把令牌交给投递任务（outbox_held），两次并发的扫描不会各投一次。
    """
    now = timezone.now()
    token = uuid.uuid4().hex
    claimable = TelegramMessage.objects.filter(pk__in=list(ids), state__in=states).filter(_lease_free(now))
    if due_only:
        claimable = claimable.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    attempts = Case(When(state=MessageState.PENDING, then=F("attempts") + 1), default=F("attempts"),
                    output_field=PositiveIntegerField())
    if not claimable.update(lease_token=token, lease_until=now + timedelta(seconds=LEASE_SECONDS), attempts=attempts,
                            updated_at=now):
        return []
    return outbox_held(TelegramMessage.objects.filter(lease_token=token).values_list("pk", flat=True), token)


def outbox_held(ids: Iterable[int], token: str) -> list[TelegramMessage]:
    """仍由令牌 token 持有的行（投递任务接手补发扫描的认领；租约已过期被别人接手的不算）。"""
    return list(TelegramMessage.objects.filter(pk__in=list(ids), lease_token=token, lease_until__gt=timezone.now())
                .order_by("pk"))


def _held(rows: Iterable[TelegramMessage]) -> QuerySet[TelegramMessage]:
    """仍由这次认领持有的行：租约被别人接手后，迟到的结果不会覆盖别人的。"""
    rows = list(rows)
    tokens = {r.lease_token for r in rows}
    return TelegramMessage.objects.filter(pk__in=[r.pk for r in rows], lease_token__in=tokens)


def outbox_extend(rows: Iterable[TelegramMessage]) -> None:
    """长的提醒摘要分几条发：每发一条续一次租约。"""
    now = timezone.now()
    _held(rows).update(lease_until=now + timedelta(seconds=LEASE_SECONDS))


def outbox_release(rows: Iterable[TelegramMessage]) -> None:
    """不发了、也没失败（例如时间预算用完）：放开租约，留给下一次。"""
    _held(rows).update(lease_token="", lease_until=None)


def outbox_sent(rows: Iterable[TelegramMessage], sent: SentMessage, *, content_hash: str = "",
                shown_status: str = "") -> None:
    """已送达：记下消息 id（群迁移后是新群的 id）。"""
    now = timezone.now()
    _held(rows).update(
        state=MessageState.SENT, chat_id=sent.chat_id, message_id=sent.message_id, sent_at=now,
        content_hash=content_hash, shown_status=shown_status, next_attempt_at=None,
        error_code="", last_error="", permanent=False, lease_token="", lease_until=None, updated_at=now,
    )


def outbox_edited(row: TelegramMessage, *, content_hash: str, shown_status: str) -> None:
    """审批消息改成了当前状态（租约仍持有：同步循环还要再核对一轮）。"""
    now = timezone.now()
    _held([row]).update(content_hash=content_hash, shown_status=shown_status, edited_at=now, next_attempt_at=None,
                        error_code="", last_error="", permanent=False, updated_at=now)


def outbox_failed(rows: Iterable[TelegramMessage], exc: TelegramSendError) -> float | None:
    """唯一的重试策略。永久错误（被拉黑、被踢、群不存在）：失败，不再试。暂时错误：排下一次（返回多少秒后）；
    待发的行试满 MAX_ATTEMPTS 次记为失败（permanent=False：重试用尽，问题修好后可在后台重发）。
    已发出的审批消息改失败时行仍是“已发送”，按同样的退避继续改（补发扫描只补最近一天的）。"""
    rows = list(rows)
    if not rows:
        return None
    now = timezone.now()
    if exc.code == "paced":
        # 我们自己的节流（没有请求 Telegram）：不算一次尝试，到了预约的时刻再来
        countdown = float(exc.retry_after or 1) + 1
        _held(rows).update(next_attempt_at=now + timedelta(seconds=countdown), error_code=exc.code,
                           last_error=exc.message[:2000], lease_token="", lease_until=None, updated_at=now,
                           attempts=Case(When(state=MessageState.PENDING, attempts__gt=0, then=F("attempts") - 1),
                                         default=F("attempts"), output_field=PositiveIntegerField()))
        return countdown
    if exc.code != "render_error":  # 渲染出错是我们自己的问题，不算 Telegram 调用失败
        EXTERNAL_CALL_ERRORS.labels(system="telegram", kind=exc.code).inc()
    common = {"error_code": exc.code, "last_error": exc.message[:2000], "last_error_at": now,
              "permanent": exc.permanent, "lease_token": "", "lease_until": None, "updated_at": now}
    exhausted = [r for r in rows if r.state == MessageState.PENDING and r.attempts >= MAX_ATTEMPTS]
    if exc.permanent or len(exhausted) == len(rows):
        _held(rows).update(state=MessageState.FAILED, next_attempt_at=None, **common)
        return None
    _held(exhausted).update(state=MessageState.FAILED, next_attempt_at=None, **common)
    retrying = [r for r in rows if r not in exhausted]
    countdown = retry_countdown(max(r.attempts for r in retrying) - 1, exc.retry_after)
    # 已发出的审批消息改失败：认领时不计数，这里计上，持续失败时退避才会拉长
    _held(retrying).update(next_attempt_at=now + timedelta(seconds=countdown), **common,
                           attempts=Case(When(state=MessageState.SENT, then=F("attempts") + 1), default=F("attempts"),
                                         output_field=PositiveIntegerField()))
    return countdown


def outbox_give_up(rows: Iterable[TelegramMessage], *, code: str, message: str = "") -> None:
    """发不了也不该再试（没有可发送的群……）：记为永久失败。"""
    now = timezone.now()
    _held(rows).update(state=MessageState.FAILED, permanent=True, error_code=code, last_error=message[:2000],
                       last_error_at=now, next_attempt_at=None, lease_token="", lease_until=None, updated_at=now)


def outbox_skip(rows: Iterable[TelegramMessage]) -> None:
    """已经不需要了（例如提醒发出前审批已被决定）。"""
    now = timezone.now()
    _held(rows).update(state=MessageState.SKIPPED, next_attempt_at=None, lease_token="", lease_until=None,
                       updated_at=now)


def outbox_due(*, limit: int = 200, grace: timedelta = RECOVERY_GRACE) -> list[int]:
    """到了重试时间（或入箱超过 grace 还没人发：投递任务丢了）、没人持有、还在补发窗口里的待发行的 id。

    重试次数已用尽、却死在发送途中（没能记下失败）的行在这里记为失败，不再补发。
    """
    now = timezone.now()
    due = Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True, created_at__lte=now - grace)
    candidates = (TelegramMessage.objects.filter(state=MessageState.PENDING, created_at__gte=now - RECOVERY_WINDOW)
                  .filter(due).filter(_lease_free(now)))
    exhausted = candidates.filter(attempts__gte=MAX_ATTEMPTS)
    if exhausted.update(state=MessageState.FAILED, permanent=False, error_code="attempts_exhausted",
                        last_error_at=now, next_attempt_at=None, updated_at=now):
        logger.error("有通知试了 %d 次仍未送达（worker 在发送途中死掉），不再补发", MAX_ATTEMPTS)
    return list(candidates.order_by("created_at", "pk").values_list("pk", flat=True)[:limit])


def outbox_send_each(rows: Iterable[TelegramMessage], render: Callable[[TelegramMessage], str | None],
                     sender: TelegramSender) -> float | None:
    """一行一条消息的通知（超时、构建结果、配置变化、告警……）的发送：render 返回 HTML，返回 None 表示已不需要发。

    已认领的行逐条发送、记录结果；返回最早的重试秒数（有暂时失败时），否则 None。
    """
    retry: float | None = None
    for row in rows:
        if row.chat_id is None:
            outbox_give_up([row], code="no_chat")
            continue
        try:
            text = render(row)
        except Exception:
            logger.exception("渲染 %s 通知（%s）失败", row.kind, row.dedupe_key)
            error = TelegramSendError("render failed", permanent=False, code="render_error")
            again = outbox_failed([row], error)
            retry = again if retry is None or (again is not None and again < retry) else retry
            continue
        if text is None:
            outbox_skip([row])
            continue
        try:
            sent = sender.send_message(row.chat_id, text, reply_to_message_id=row.reply_to_message_id)
        except TelegramSendError as exc:
            (logger.error if exc.permanent else logger.warning)(
                "%s 通知（%s）发往 chat %s 失败：%s", row.kind, row.dedupe_key, row.chat_id, exc)
            again = outbox_failed([row], exc)
            if again is not None:
                retry = again if retry is None else min(retry, again)
            continue
        outbox_sent([row], sent)
    return retry
