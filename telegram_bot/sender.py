"""从 Celery（同步代码）发送与编辑 Telegram 消息的唯一出口。

设计要点（参考 healthchecks 的 transports）：
- 一个类 TelegramSender，一个异常 TelegramSendError（permanent / retry_after / code）；
  暂时性错误（超时、网络、5xx、429）由调用方的 Celery 任务退避重试，永久错误（被拉黑、被踢、
  聊天不存在、内容非法）记录下来，不无限重试。
- 429 的 retry_after 写进该聊天的冷却时间，所有 worker 都会遵守；短的冷却就地等待后重试一次。
- 群升级为超级群（migrate_to_chat_id）：记录迁移，send_message 自动改发到新群并返回新 chat_id。
- 节流：每个聊天和全局都有“下一个可用时刻”，用数据库行锁预约，多个 worker 进程之间也成立
  （群 ≤ 20 条/分钟，私聊 ≤ 1 条/秒，全局 ≤ 30 条/秒）。
- token 在 URL 里：异常信息与日志从不包含 URL。

用法（给提醒、超时、构建结果通知等任务）::

    sender = TelegramSender()
    sent = sender.send_message(chat_id, html_text, reply_markup=keyboard)   # -> SentMessage
    changed = sender.edit_message_text(chat_id, message_id, html_text)       # False = 内容未变
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.app_config import allowed_chat_ids
from approvalbot.logging import redact

from .models import GLOBAL_PACING_CHAT_ID, TelegramChat

logger = logging.getLogger(__name__)

# 这些错误代码说明聊天本身不可用（被拉黑/踢出/不存在）：记到聊天上，/health 可见
CHAT_LEVEL_ERRORS = {"forbidden", "chat_not_found"}


class TelegramSendError(Exception):
    """发送或编辑失败。

    permanent=True：重试无意义（被拉黑、被踢、聊天不存在、内容被拒），记录后放弃；
    permanent=False：稍后重试，retry_after（秒）给出至少等待多久。
    code 是机器可读的原因：timeout、network、server_error、rate_limited、paced、chat_migrated、
    unauthorized、forbidden、chat_not_found、message_not_found、not_modified、bad_request、not_configured。
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: str,
        retry_after: float | None = None,
        error_code: int | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
        self.retry_after = retry_after
        self.error_code = error_code
        self.migrate_to_chat_id = migrate_to_chat_id

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


@dataclass(frozen=True)
class SentMessage:
    """发送结果：chat_id 可能因群迁移而不同于请求的 chat_id（migrated_from 记录原值）。"""

    chat_id: int
    message_id: int
    migrated_from: int | None = None


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


# ---------------------------------------------------------------- HTTP 客户端（进程内复用连接）

_clients: dict[tuple, httpx.Client] = {}
_clients_lock = threading.Lock()


def _http_client(proxy: str, timeout: float) -> httpx.Client:
    # 按进程缓存：Celery prefork 子进程不能共享父进程的连接
    key = (os.getpid(), proxy, timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None or client.is_closed:
            client = httpx.Client(proxy=proxy or None, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
            _clients[key] = client
        return client


def close_http_clients() -> None:
    """释放连接（测试与进程退出时用）。"""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


# ---------------------------------------------------------------- 聊天状态

def chats_with_successors(chat_ids: set[int], *, hops: int = 5) -> set[int]:
    """这些群，加上它们（沿已记录的迁移）升级成的超级群。配置里写旧 id 的群迁移后仍算同一个群。"""
    chats = set(chat_ids)
    frontier = set(chat_ids)
    for _hop in range(hops):
        migrated = set(
            TelegramChat.objects.filter(chat_id__in=frontier, migrated_to_chat_id__isnull=False)
            .values_list("migrated_to_chat_id", flat=True)
        ) - chats
        if not migrated:
            break
        chats |= migrated
        frontier = migrated
    return chats


def chat_resolve(chat_id: int) -> int:
    """沿着已记录的迁移找到聊天现在的 id（旧群 → 超级群）。"""
    seen = {chat_id}
    current = chat_id
    for _hop in range(5):
        nxt = TelegramChat.objects.filter(chat_id=current).values_list("migrated_to_chat_id", flat=True).first()
        if not nxt or nxt in seen:
            break
        seen.add(nxt)
        current = nxt
    return current


def chat_allowed(chat_id: int) -> bool:
    """config/app.json 的 telegram.allowed_chat_ids 设置了时，只有这些群（及其迁移后的超级群）可以发；私聊不受限。"""
    if chat_id > 0:
        return True
    allowed = allowed_chat_ids()
    return allowed is None or chat_id in chats_with_successors(set(allowed))


def chat_record_migration(*, old_chat_id: int, new_chat_id: int) -> None:
    """记录群升级为超级群；以后发往旧 id 的消息都改发到新 id。配置里的旧 id 需要管理员更新。"""
    TelegramChat.objects.update_or_create(chat_id=old_chat_id, defaults={"migrated_to_chat_id": new_chat_id})
    TelegramChat.objects.get_or_create(chat_id=new_chat_id)
    logger.warning(
        "Telegram 群 %s 已升级为超级群 %s：消息改发到新群；请把配置中的 chat_id 更新为 %s",
        old_chat_id, new_chat_id, new_chat_id,
    )


def _chat_record_error(chat_id: int, exc: TelegramSendError) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {"error_code": exc.code, "last_error": exc.message[:2000], "last_error_at": now}
    if exc.code in CHAT_LEVEL_ERRORS:
        fields["error_permanent"] = True
    if exc.code == "rate_limited" and exc.retry_after:
        fields["cooldown_until"] = now + timedelta(seconds=exc.retry_after)
    TelegramChat.objects.update_or_create(chat_id=chat_id, defaults=fields)


def _chat_record_success(chat_id: int) -> None:
    TelegramChat.objects.filter(chat_id=chat_id).update(
        last_sent_at=timezone.now(), error_permanent=False, error_code="", last_error=""
    )


# ---------------------------------------------------------------- 节流


class ChatPacer:
    """用数据库预约发送时刻，多个 worker 进程共同遵守每聊天与全局的速率。"""

    def __init__(
        self,
        *,
        group_interval: float | None = None,
        private_interval: float | None = None,
        global_interval: float | None = None,
        max_wait: float | None = None,
    ) -> None:
        # 群 20 条/分钟 → 3 秒一条，再留 0.2 秒余量：正好 3 秒时网络抖动就会让 60 秒窗口里出现第 21 条；
        # 私聊 1 秒一条；全局 30 条/秒
        self.group_interval = _setting("TELEGRAM_PACING_GROUP_SECONDS", 3.2) if group_interval is None \
            else group_interval
        self.private_interval = _setting("TELEGRAM_PACING_PRIVATE_SECONDS", 1.0) if private_interval is None \
            else private_interval
        self.global_interval = _setting("TELEGRAM_PACING_GLOBAL_SECONDS", 1 / 30) if global_interval is None \
            else global_interval
        self.max_wait = _setting("TELEGRAM_MAX_INLINE_WAIT_SECONDS", 10.0) if max_wait is None else max_wait

    def reserve(self, chat_id: int) -> float:
        """预约一个发送时刻，返回需要等待的秒数；要等太久则不预约，抛出可重试的 TelegramSendError。"""
        ids = sorted({GLOBAL_PACING_CHAT_ID, chat_id})
        for cid in ids:
            TelegramChat.objects.get_or_create(chat_id=cid)
        with transaction.atomic():
            rows = {r.chat_id: r for r in TelegramChat.objects.select_for_update().filter(chat_id__in=ids)
                    .order_by("chat_id")}
            chat, glob = rows[chat_id], rows[GLOBAL_PACING_CHAT_ID]
            now = timezone.now()
            chat_ready = max(t for t in (now, chat.next_send_at, chat.cooldown_until) if t)
            global_ready = max(now, glob.next_send_at or now)
            # 全局指针只管“马上要发”的突发：某个群排到几秒后的发送不应挡住其他聊天
            start = max(chat_ready, global_ready)
            wait = (start - now).total_seconds()
            if wait > self.max_wait:
                raise TelegramSendError(
                    _("聊天 %(chat)s 发送过于频繁，%(sec)d 秒后再试") % {"chat": chat_id, "sec": int(wait) + 1},
                    permanent=False, code="paced", retry_after=wait,
                )
            interval = self.group_interval if chat_id < 0 else self.private_interval
            TelegramChat.objects.filter(pk=chat.pk).update(next_send_at=start + timedelta(seconds=interval))
            if chat.pk != glob.pk and chat_ready <= global_ready:
                TelegramChat.objects.filter(pk=glob.pk).update(
                    next_send_at=global_ready + timedelta(seconds=self.global_interval)
                )
        return max(wait, 0.0)

    def acquire(self, chat_id: int) -> None:
        wait = self.reserve(chat_id)
        if wait > 0:
            time.sleep(wait)


# ---------------------------------------------------------------- 发送器


def _classify(status: int, data: dict[str, Any] | None) -> TelegramSendError:
    """把 Bot API 的失败回答归类为一个 TelegramSendError。"""
    data = data or {}
    description = str(data.get("description") or f"HTTP {status}")
    parameters = data.get("parameters") or {}
    error_code = data.get("error_code", status)
    if parameters.get("migrate_to_chat_id"):
        return TelegramSendError(description, permanent=False, code="chat_migrated", error_code=error_code,
                                 migrate_to_chat_id=int(parameters["migrate_to_chat_id"]))
    if status == 429 or parameters.get("retry_after"):
        retry_after = float(parameters.get("retry_after") or 5)
        return TelegramSendError(description, permanent=False, code="rate_limited", retry_after=retry_after,
                                 error_code=error_code)
    if status >= 500:
        return TelegramSendError(description, permanent=False, code="server_error", error_code=error_code)
    if status in (401, 404):
        # token 错或 API 地址错：是配置问题，修好后应能恢复，所以不算永久（重试次数由任务限制）
        return TelegramSendError(description, permanent=False, code="unauthorized", error_code=error_code)
    if status == 403:
        return TelegramSendError(description, permanent=True, code="forbidden", error_code=error_code)
    if status == 400:
        lowered = description.lower()
        if "message is not modified" in lowered:
            code = "not_modified"
        elif "message to edit not found" in lowered or "message_id_invalid" in lowered:
            code = "message_not_found"
        elif "chat not found" in lowered:
            code = "chat_not_found"
        else:
            code = "bad_request"
        return TelegramSendError(description, permanent=True, code=code, error_code=error_code)
    return TelegramSendError(description, permanent=False, code="http_error", error_code=error_code)


def _markup(reply_markup: Any) -> Any:
    if reply_markup is None:
        return None
    if hasattr(reply_markup, "to_dict"):  # python-telegram-bot 的对象
        return reply_markup.to_dict()
    return reply_markup


class TelegramSender:
    """同步的 Bot API 客户端，供 Celery 任务调用。线程安全；每次调用都可能抛 TelegramSendError。"""

    def __init__(
        self,
        *,
        token: str | None = None,
        api_url: str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        pacer: ChatPacer | None = None,
        pacing: bool = True,
    ) -> None:
        self.token = settings.TELEGRAM_BOT_TOKEN if token is None else token
        self.api_url = (settings.TELEGRAM_API_URL if api_url is None else api_url).rstrip("/")
        self.proxy = settings.TELEGRAM_PROXY_URL if proxy is None else proxy
        self.timeout = _setting("TELEGRAM_SEND_TIMEOUT_SECONDS", 15.0) if timeout is None else timeout
        self.pacer = (pacer or ChatPacer()) if pacing else None

    @property
    def configured(self) -> bool:
        return bool(self.token)

    # ------------------------------------------------------------ 底层

    def call(self, method: str, params: dict[str, Any], *, chat_id: int | None = None) -> Any:
        """调用一个 Bot API 方法并返回 result。chat_id 给出时按该聊天节流；短的 429 冷却就地等待重试一次。"""
        if not self.token:
            raise TelegramSendError(_("没有配置 TELEGRAM_BOT_TOKEN"), permanent=False, code="not_configured")
        if chat_id is not None and not chat_allowed(chat_id):
            raise TelegramSendError(_("群 %(chat)s 不在 telegram.allowed_chat_ids 里，不往这里发消息")
                                    % {"chat": chat_id}, permanent=True, code="chat_not_allowed")
        payload = {k: v for k, v in params.items() if v is not None}
        for attempt in range(2):
            if self.pacer is not None and chat_id is not None:
                self.pacer.acquire(chat_id)
            try:
                result = self._post(method, payload)
            except TelegramSendError as exc:
                if chat_id is not None:
                    if exc.code == "chat_migrated" and exc.migrate_to_chat_id:
                        chat_record_migration(old_chat_id=chat_id, new_chat_id=exc.migrate_to_chat_id)
                    elif exc.code not in ("not_modified", "message_not_found"):
                        _chat_record_error(chat_id, exc)
                short_wait = self.pacer.max_wait if self.pacer is not None else 0
                if (exc.code == "rate_limited" and attempt == 0 and chat_id is not None
                        and (exc.retry_after or 0) <= short_wait):
                    logger.info("Telegram 限流（%s 秒），稍等后重试 %s（chat %s）", exc.retry_after, method, chat_id)
                    continue  # 冷却已记到聊天上，下一轮 acquire 会等够时间
                raise
            if chat_id is not None:
                _chat_record_success(chat_id)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, method: str, payload: dict[str, Any]) -> Any:
        url = f"{self.api_url}/bot{self.token}/{method}"
        client = _http_client(self.proxy or "", self.timeout)
        try:
            response = client.post(url, json=payload)
        except httpx.TimeoutException:
            raise TelegramSendError(_("请求 Telegram 超时（%(method)s）") % {"method": method},
                                    permanent=False, code="timeout") from None
        except httpx.HTTPError as exc:
            # 不链接原异常：其中可能带有含 token 的 URL 或代理凭据
            detail = redact(f"{type(exc).__name__}: {exc}")
            raise TelegramSendError(_("连接 Telegram 失败：%(detail)s") % {"detail": detail},
                                    permanent=False, code="network") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 200 and isinstance(data, dict) and data.get("ok"):
            return data.get("result")
        raise _classify(response.status_code, data if isinstance(data, dict) else None)

    # ------------------------------------------------------------ 常用方法

    def get_me(self) -> dict[str, Any]:
        return self.call("getMe", {})

    def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        reply_markup: Any = None,
        parse_mode: str | None = "HTML",
        disable_notification: bool = False,
        reply_to_message_id: int | None = None,
    ) -> SentMessage:
        """发送消息。群已迁移时改发到新群（返回的 chat_id 即新群）。"""
        target = chat_resolve(chat_id)
        params = {
            "text": text,
            "parse_mode": parse_mode,
            "reply_markup": _markup(reply_markup),
            "link_preview_options": {"is_disabled": True},
            "disable_notification": disable_notification or None,
        }
        if reply_to_message_id:
            params["reply_parameters"] = {"message_id": reply_to_message_id, "allow_sending_without_reply": True}
        try:
            result = self.call("sendMessage", {"chat_id": target, **params}, chat_id=target)
        except TelegramSendError as exc:
            if exc.code != "chat_migrated" or not exc.migrate_to_chat_id:
                raise
            new_chat = exc.migrate_to_chat_id
            params.pop("reply_parameters", None)  # 原消息在旧群里，新群里无从回复
            result = self.call("sendMessage", {"chat_id": new_chat, **params}, chat_id=new_chat)
        sent_chat = int(result["chat"]["id"])
        return SentMessage(chat_id=sent_chat, message_id=int(result["message_id"]),
                           migrated_from=chat_id if sent_chat != chat_id else None)

    def edit_message_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        reply_markup: Any = None,
        parse_mode: str | None = "HTML",
    ) -> bool:
        """编辑消息文字；不带 reply_markup 时按钮被移除。返回 False 表示内容未变（不是错误）。

        群已迁移时抛 code=chat_migrated（旧消息无法再编辑，调用方应在新群重发）。
        """
        params = {
            "chat_id": chat_id,
            "message_id": message_id,
            "text": text,
            "parse_mode": parse_mode,
            "reply_markup": _markup(reply_markup),
            "link_preview_options": {"is_disabled": True},
        }
        try:
            self.call("editMessageText", params, chat_id=chat_id)
        except TelegramSendError as exc:
            if exc.code == "not_modified":
                return False
            raise
        return True

    def edit_message_reply_markup(self, chat_id: int, message_id: int, *, reply_markup: Any = None) -> bool:
        """只改按钮（None 表示移除）。返回 False 表示未变。"""
        params = {"chat_id": chat_id, "message_id": message_id, "reply_markup": _markup(reply_markup)}
        try:
            self.call("editMessageReplyMarkup", params, chat_id=chat_id)
        except TelegramSendError as exc:
            if exc.code == "not_modified":
                return False
            raise
        return True
