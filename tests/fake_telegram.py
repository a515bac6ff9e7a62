"""假的 Telegram Bot API 服务器：在 127.0.0.1 上说真正的 HTTP，真实的 PTB Application/Bot 通过 base_url 连过来。

按 Bot API 文档（https://core.telegram.org/bots/api）实现测试用到的部分，并尽量照搬真实服务器的行为与错误文字：
- 请求：/bot<token>/<method>，方法名不区分大小写；参数可以在查询串、JSON、表单（PTB 的发送方式）里；
- 回答：{"ok": true, "result": …} 或 {"ok": false, "error_code": …, "description": …, "parameters": {…}}，
  HTTP 状态码等于 error_code；token 错 → 401 Unauthorized，未知方法 → 404 Not Found；
- getUpdates：offset 确认语义（offset 之前的 update 被遗忘；负 offset 只留最后几个）、limit、long polling 的
  timeout；webhook 存在时 409；另一个 getUpdates 到来时旧的得到 409 “terminated by other getUpdates request”
  （other_instance_polling() 模拟测试之外的另一个实例：每个 getUpdates 都是 409）；
- sendMessage / editMessageText：HTML parse mode 按 Telegram 规则校验（只允许它支持的标签与实体，否则
  “can't parse entities”），正文超过 4096（UTF-16 码元）→ “message is too long”，按钮 callback_data 超过
  64 字节 → BUTTON_DATA_INVALID；编辑成完全相同的内容 → “message is not modified”；editMessageText 不带
  reply_markup 会移除内联按钮（与真实服务器一致）；
- answerCallbackQuery：只能回答存在且未回答过的查询，文字 ≤ 200；
- 群发送限速（limit_groups：超过每分钟 20 条回 429）；
- 故障注入：429（parameters.retry_after）、403 “bot was blocked by the user”、群升级为超级群
  （400 + parameters.migrate_to_chat_id，之后对旧 id 的每次调用都如此）、5xx、慢响应；
- 也能当 HTTP 代理用：收到绝对形式的请求行（GET http://…/bot…）时照常处理，并记下 via_proxy。
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_TOKEN = "123456789:AAHfakeTOKENforTESTS_only-abcdefghij"
MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
MAX_ANSWER_TEXT = 200

ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "span",
    "blockquote", "tg-emoji",
}
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_AMP_RE = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _TelegramHTML(HTMLParser):
    """Telegram 的 HTML 子集：不认识的标签、未闭合的标签、未转义的 <>& 都是错误。"""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.text: list[str] = []
        self.stack: list[str] = []

    def error(self, message: str) -> None:
        raise ApiError(400, f"Bad Request: can't parse entities: {message}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.error(f'Unsupported start tag "{tag}" at byte offset {self.getpos()[1]}')
        attributes = dict(attrs)
        if tag == "a" and not attributes.get("href"):
            self.error("Can't find href attribute of the <a> tag")
        if tag == "span" and attributes.get("class") != "tg-spoiler":
            self.error('Tag "span" must have class "tg-spoiler"')
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.error(f'Unmatched end tag at byte offset {self.getpos()[1]}, expected "</{self.stack[-1]}>", '
                       f'found "</{tag}>"' if self.stack else f'Unexpected end tag "{tag}"')
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.error(f"Unexpected character in text at byte offset {self.getpos()[1]}")
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in NAMED_ENTITIES:
            self.error(f'Unsupported HTML entity "&{name};"')
        self.text.append(NAMED_ENTITIES[name])

    def handle_charref(self, name: str) -> None:
        self.text.append(chr(int(name[1:], 16) if name.lower().startswith("x") else int(name)))


def parse_telegram_html(source: str) -> str:
    """返回解析后的正文；不合 Telegram 规则时抛 ApiError(400)。"""
    # 在 HTMLParser 之前检查裸露的 &：它对 "a&b" 之类的处理与 Telegram 不同
    match = _AMP_RE.search(source)
    if match:
        raise ApiError(400, f"Bad Request: can't parse entities: Character entity expected at byte offset "
                            f"{len(source[:match.start()].encode())}")
    parser = _TelegramHTML()
    parser.feed(source)
    parser.close()
    if parser.stack:
        raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
                            f'"{parser.stack[-1]}"')
    return "".join(parser.text)


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    response: dict[str, Any]
    at: float
    via_proxy: bool = False


@dataclass
class _Fault:
    method: str
    status: int
    description: str
    parameters: dict | None = None
    times: int = 1
    chat_id: int | None = None
    raw_body: bytes | None = None


@dataclass
class _Queued:
    update: dict[str, Any]
    forced: bool = False
    delivered: bool = False


@dataclass
class StoredMessage:
    message: dict[str, Any]
    html: str | None = None
    markup: dict | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.message.get("text", "")

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [b for row in (self.markup or {}).get("inline_keyboard", []) for b in row]


class FakeTelegram:
    """一个 Bot API 服务器实例。start() 之后 url 可用；所有状态读写都在 self.cond 保护下。"""

    def __init__(self, *, token: str = DEFAULT_TOKEN, bot_username: str = "approval_test_bot") -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_user = {
            "id": self.bot_id, "is_bot": True, "first_name": "审批机器人", "username": bot_username,
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False,
        }
        self.cond = threading.Condition()
        self.users: dict[int, dict[str, Any]] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self.messages: dict[tuple[int, int], StoredMessage] = {}
        self._message_ids: dict[int, itertools.count] = {}
        self._queue: list[_Queued] = []
        self._update_ids = itertools.count(5000)
        self._query_ids = itertools.count(900000)
        self.queries: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.faults: list[_Fault] = []
        self.delays: dict[str, float] = {}
        self.blocked: set[int] = set()
        self.kicked: set[int] = set()
        self.migrated: dict[int, int] = {}
        self.group_limit: tuple[int, float] | None = None  # (条数, 窗口秒数)，见 limit_groups()
        self._group_sends: dict[int, list[float]] = {}
        self.webhook: dict[str, Any] | None = None
        self.commands: list[dict[str, Any]] = []
        self._poll_generation = 0
        self.foreign_poller = False  # 见 other_instance_polling()
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ 生命周期

    def start(self) -> FakeTelegram:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # 响应头与正文一次写出（handle_one_request 最后 flush），并关掉 Nagle：
            # 分两次写会撞上客户端的延迟确认，每个回答平白多等约 40 ms（假服务不能成为它要量的瓶颈）
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # 安静
                return

            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-telegram")
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------ 世界：用户与聊天

    def add_user(self, user_id: int, username: str | None = None, first_name: str = "User",
                 last_name: str | None = None) -> dict[str, Any]:
        user = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "zh-hans"}
        if username:
            user["username"] = username
        if last_name:
            user["last_name"] = last_name
        with self.cond:
            self.users[user_id] = user
            # 用户给机器人发过私聊（/start）之后，私聊才存在
            self.chats.setdefault(user_id, {"id": user_id, "type": "private", "first_name": first_name,
                                            **({"username": username} if username else {})})
        return user

    def add_group(self, chat_id: int, title: str = "发布审批群", chat_type: str | None = None) -> dict[str, Any]:
        chat = {"id": chat_id, "type": chat_type or ("supergroup" if str(chat_id).startswith("-100") else "group"),
                "title": title}
        with self.cond:
            self.chats[chat_id] = chat
        return chat

    # ------------------------------------------------------------ 故障注入

    def fail_next(self, method: str, *, status: int, description: str, parameters: dict | None = None,
                  times: int = 1, chat_id: int | None = None, raw_body: bytes | None = None) -> None:
        with self.cond:
            self.faults.append(_Fault(method.lower(), status, description, parameters, times, chat_id, raw_body))

    def rate_limit(self, method: str, *, retry_after: int = 1, times: int = 1, chat_id: int | None = None) -> None:
        self.fail_next(method, status=429, description=f"Too Many Requests: retry after {retry_after}",
                       parameters={"retry_after": retry_after}, times=times, chat_id=chat_id)

    def server_error(self, method: str, *, times: int = 1) -> None:
        # 真实的 5xx 往往来自前置代理，正文不是 JSON
        self.fail_next(method, status=502, description="Bad Gateway", times=times,
                       raw_body=b"<html><body><h1>502 Bad Gateway</h1></body></html>")

    def block(self, chat_id: int) -> None:
        """用户拉黑了机器人：发往其私聊一律 403。"""
        with self.cond:
            self.blocked.add(chat_id)

    def kick(self, chat_id: int) -> None:
        with self.cond:
            self.kicked.add(chat_id)

    def migrate(self, old_chat_id: int, new_chat_id: int) -> None:
        """群升级为超级群：旧 id 从此只回 400 + migrate_to_chat_id。"""
        with self.cond:
            old = self.chats.get(old_chat_id, {"title": "群"})
            self.chats[new_chat_id] = {"id": new_chat_id, "type": "supergroup", "title": old.get("title", "")}
            self.migrated[old_chat_id] = new_chat_id

    def limit_groups(self, per_window: int = 20, window: float = 60.0) -> None:
        """像真实服务器那样限制群里的发送速率（约 20 条/分钟）：超出的 sendMessage 回 429 与 retry_after。"""
        with self.cond:
            self.group_limit = (per_window, window)

    def _check_group_rate(self, chat_id: int) -> None:
        if self.group_limit is None or chat_id > 0:
            return
        per_window, window = self.group_limit
        now = time.monotonic()
        recent = [t for t in self._group_sends.get(chat_id, []) if t > now - window]
        if len(recent) >= per_window:
            retry_after = max(1, int(recent[0] + window - now + 0.999))
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})
        recent.append(now)
        self._group_sends[chat_id] = recent

    def other_instance_polling(self, active: bool = True) -> None:
        """模拟测试之外还有一个实例在用同一个 token 轮询：它的请求不断把我们的 getUpdates 挤掉（409 Conflict）。"""
        with self.cond:
            self.foreign_poller = active
            self._poll_generation += 1
            self.cond.notify_all()

    def delay(self, method: str, seconds: float) -> None:
        with self.cond:
            self.delays[method.lower()] = seconds

    # ------------------------------------------------------------ 注入 update（模拟用户）

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _push(self, update: dict[str, Any], *, forced: bool = False) -> dict[str, Any]:
        with self.cond:
            self._queue.append(_Queued(update, forced=forced))
            self.cond.notify_all()
        return update

    def user_message(self, user: dict[str, Any], chat_id: int, text: str, *,
                     reply_to_message_id: int | None = None) -> dict[str, Any]:
        """用户在聊天里发一条文字；以 / 开头时带 bot_command 实体（和真实客户端一样）。"""
        with self.cond:
            chat = self.chats[chat_id]
            message_id = self._next_message_id(chat_id)
            message: dict[str, Any] = {
                "message_id": message_id, "from": user, "chat": chat, "date": int(time.time()), "text": text,
            }
            if text.startswith("/"):
                command = text.split()[0] if text.split() else text
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
            if reply_to_message_id is not None:
                replied = self.messages.get((chat_id, reply_to_message_id))
                if replied is not None:
                    message["reply_to_message"] = copy.deepcopy(replied.message)
            self.messages[(chat_id, message_id)] = StoredMessage(message=message)
            update = {"update_id": next(self._update_ids), "message": message}
        return self._push(update)

    def tap(self, user: dict[str, Any], chat_id: int, message_id: int, data: str) -> str:
        """用户点了某条消息上的按钮（data 可以是任意字符串：改过的客户端能发送任意回调数据）。"""
        with self.cond:
            stored = self.messages[(chat_id, message_id)]
            query_id = str(next(self._query_ids))
            self.queries[query_id] = {"answered": False, "answer": None, "from": user}
            update = {
                "update_id": next(self._update_ids),
                "callback_query": {
                    "id": query_id, "from": user, "message": copy.deepcopy(stored.message),
                    "chat_instance": f"ci{chat_id}", "data": data,
                },
            }
        self._push(update)
        return query_id

    def replay(self, update: dict[str, Any]) -> None:
        """再次投递一个已经送达过的 update（同一个 update_id），模拟确认前崩溃后的重投。"""
        self._push(copy.deepcopy(update), forced=True)

    def webhook_updates(self) -> list[dict[str, Any]]:
        """webhook 模式下 Telegram 不等 getUpdates，而是把积压的 update 推给 webhook：取走它们（按 update_id），
        由测试扮演 Telegram POST 到 /telegram/webhook/。"""
        with self.cond:
            batch = sorted(self._queue, key=lambda q: q.update["update_id"])
            self._queue = []
        return [copy.deepcopy(q.update) for q in batch]

    # ------------------------------------------------------------ 查询与等待

    def calls_to(self, method: str) -> list[Call]:
        with self.cond:
            return [c for c in self.calls if c.method == method.lower()]

    def ok_calls(self, method: str) -> list[Call]:
        return [c for c in self.calls_to(method) if c.status == 200]

    def chat_messages(self, chat_id: int, *, from_bot: bool = True) -> list[StoredMessage]:
        with self.cond:
            items = [m for (cid, _mid), m in sorted(self.messages.items()) if cid == chat_id]
        return [m for m in items if (m.message["from"]["id"] == self.bot_id) == from_bot]

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        with self.cond:
            return self.messages[(chat_id, message_id)]

    def answer(self, query_id: str) -> dict[str, Any] | None:
        with self.cond:
            return self.queries.get(query_id, {}).get("answer")

    def replies_to(self, chat_id: int, message_id: int) -> list[StoredMessage]:
        return [m for m in self.chat_messages(chat_id)
                if m.message.get("reply_to_message", {}).get("message_id") == message_id]

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("等待假 Telegram 的状态超时")
                self.cond.wait(min(remaining, 0.05))

    async def await_for(self, predicate: Any, timeout: float = 5.0) -> Any:
        """异步版本：在机器人自己的事件循环里等待，不阻塞它。"""
        deadline = time.monotonic() + timeout
        while True:
            with self.cond:
                value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("等待假 Telegram 的状态超时")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------ HTTP

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        via_proxy = bool(parts.scheme)
        match = re.match(r"^/bot([^/]+)/([A-Za-z]+)$", parts.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if not match:
            self._respond(handler, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        token, method = match.group(1), match.group(2).lower()
        params = dict(parse_qsl(parts.query))
        params.update(self._body_params(handler.headers.get("Content-Type", ""), body))
        if token != self.token:
            self._record(method, params, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"},
                         via_proxy)
            self._respond(handler, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        delay = self.delays.get(method)
        if delay:
            time.sleep(delay)
        fault = self._take_fault(method, params)
        if fault is not None:
            response = {"ok": False, "error_code": fault.status, "description": fault.description}
            if fault.parameters:
                response["parameters"] = fault.parameters
            self._record(method, params, fault.status, response, via_proxy)
            self._respond(handler, fault.status, response, raw=fault.raw_body)
            return
        api = getattr(self, f"_api_{method}", None)
        if api is None:
            response = {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
            self._record(method, params, 404, response, via_proxy)
            self._respond(handler, 404, response)
            return
        try:
            result = api(params)
            status, response = 200, {"ok": True, "result": result}
        except ApiError as exc:
            status = exc.code
            response = {"ok": False, "error_code": exc.code, "description": exc.description}
            if exc.parameters:
                response["parameters"] = exc.parameters
        self._record(method, params, status, response, via_proxy)
        self._respond(handler, status, response)

    @staticmethod
    def _body_params(content_type: str, body: bytes) -> dict[str, Any]:
        if not body:
            return {}
        if content_type.startswith("application/json"):
            data = json.loads(body)
            return data if isinstance(data, dict) else {}
        if content_type.startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        if content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
            )
            return {part.get_param("name", header="content-disposition"): part.get_content()
                    for part in message.iter_parts()}
        return {}

    def _take_fault(self, method: str, params: dict[str, Any]) -> _Fault | None:
        with self.cond:
            for fault in self.faults:
                if fault.method != method or fault.times <= 0:
                    continue
                if fault.chat_id is not None and _as_int(params.get("chat_id")) != fault.chat_id:
                    continue
                fault.times -= 1
                return fault
        return None

    def _record(self, method: str, params: dict[str, Any], status: int, response: dict[str, Any],
                via_proxy: bool) -> None:
        with self.cond:
            self.calls.append(Call(method, params, status, response, time.monotonic(), via_proxy))
            self.cond.notify_all()

    @staticmethod
    def _respond(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any],
                 raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "text/html" if raw is not None else "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # 客户端已放弃（比如取消了长轮询）

    # ------------------------------------------------------------ Bot API 方法

    def _api_getme(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.bot_user)

    def _api_getupdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = _as_int(params.get("offset"))
        limit = min(max(_as_int(params.get("limit")) or 100, 1), 100)
        timeout = max(_as_int(params.get("timeout")) or 0, 0)
        allowed = _as_json(params.get("allowed_updates"))
        with self.cond:
            if self.webhook:
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use "
                                    "deleteWebhook to delete the webhook first")
            if self.foreign_poller:
                raise ApiError(409, "Conflict: terminated by other getUpdates request; make sure that only "
                                    "one bot instance is running")
            self._poll_generation += 1
            generation = self._poll_generation
            self.cond.notify_all()
            if offset is not None:
                if offset < 0:
                    self._queue = self._queue[offset:]
                else:
                    # 确认：offset 之前的 update 被遗忘（强制重投的在送达一次之前保留）
                    self._queue = [q for q in self._queue
                                   if q.update["update_id"] >= offset or (q.forced and not q.delivered)]
            if allowed:
                self._queue = [q for q in self._queue if any(k in allowed for k in q.update if k != "update_id")]
            deadline = time.monotonic() + timeout
            while not self._queue and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(min(remaining, 0.1))
                if self._poll_generation != generation:
                    raise ApiError(409, "Conflict: terminated by other getUpdates request; make sure that only "
                                        "one bot instance is running")
            batch = sorted(self._queue, key=lambda q: q.update["update_id"])[:limit]
            for queued in batch:
                queued.delivered = True
            return [copy.deepcopy(q.update) for q in batch]

    def _chat_for(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _as_int(params.get("chat_id"))
        if chat_id is None:
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in self.migrated:
            raise ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                           {"migrate_to_chat_id": self.migrated[chat_id]})
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.kicked:
            raise ApiError(403, "Forbidden: bot was kicked from the group chat")
        chat = self.chats.get(chat_id)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        return chat

    @staticmethod
    def _text(params: dict[str, Any]) -> tuple[str, str | None]:
        source = params.get("text")
        if not source or not str(source).strip():
            raise ApiError(400, "Bad Request: message text is empty")
        source = str(source)
        parse_mode = (params.get("parse_mode") or "").lower()
        plain = parse_telegram_html(source) if parse_mode == "html" else source
        if not plain.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(plain) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return plain, source if parse_mode == "html" else None

    @staticmethod
    def _markup(params: dict[str, Any]) -> dict | None:
        markup = _as_json(params.get("reply_markup"))
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        for row in markup.get("inline_keyboard", []):
            for button in row:
                if not button.get("text"):
                    raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
                data = button.get("callback_data")
                if data is not None and not (1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA):
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                url = button.get("url")
                if url is not None and not str(url).startswith(("http://", "https://", "tg://")):
                    raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
        if "force_reply" in markup:
            placeholder = markup.get("input_field_placeholder")
            if placeholder is not None and not (1 <= len(placeholder) <= 64):
                raise ApiError(400, "Bad Request: input field placeholder is invalid")
        return markup

    def _api_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            chat = self._chat_for(params)
            plain, source = self._text(params)
            markup = self._markup(params)
            self._check_group_rate(chat["id"])
            message: dict[str, Any] = {
                "message_id": self._next_message_id(chat["id"]), "from": dict(self.bot_user), "chat": chat,
                "date": int(time.time()), "text": plain,
            }
            reply = _as_json(params.get("reply_parameters")) or {}
            reply_to = _as_int(reply.get("message_id")) or _as_int(params.get("reply_to_message_id"))
            if reply_to:
                replied = self.messages.get((chat["id"], reply_to))
                if replied is not None:
                    message["reply_to_message"] = copy.deepcopy(replied.message)
                elif not reply.get("allow_sending_without_reply"):
                    raise ApiError(400, "Bad Request: message to be replied not found")
            if markup and "inline_keyboard" in markup:
                message["reply_markup"] = markup  # 只有内联键盘会出现在 Message 里
            self.messages[(chat["id"], message["message_id"])] = StoredMessage(message, source, markup)
            return copy.deepcopy(message)

    def _editable(self, params: dict[str, Any]) -> StoredMessage:
        if params.get("inline_message_id"):
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat = self._chat_for(params)
        stored = self.messages.get((chat["id"], _as_int(params.get("message_id")) or 0))
        if stored is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if stored.message["from"]["id"] != self.bot_id:
            raise ApiError(400, "Bad Request: message can't be edited")
        return stored

    def _api_editmessagetext(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            stored = self._editable(params)
            plain, source = self._text(params)
            markup = self._markup(params)
            inline = markup if markup and "inline_keyboard" in markup else None
            if plain == stored.text and source == stored.html and inline == stored.markup:
                raise ApiError(400, "Bad Request: message is not modified: specified new message content and "
                                    "reply markup are exactly the same as a current content and reply markup "
                                    "of the message")
            stored.history.append(copy.deepcopy(stored.message))
            stored.message["text"] = plain
            stored.message["edit_date"] = int(time.time())
            stored.html = source
            stored.markup = inline
            if inline:
                stored.message["reply_markup"] = inline
            else:
                stored.message.pop("reply_markup", None)
            return copy.deepcopy(stored.message)

    def _api_editmessagereplymarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            stored = self._editable(params)
            markup = self._markup(params)
            inline = markup if markup and "inline_keyboard" in markup and markup["inline_keyboard"] else None
            if inline == stored.markup:
                raise ApiError(400, "Bad Request: message is not modified: specified new message content and "
                                    "reply markup are exactly the same as a current content and reply markup "
                                    "of the message")
            stored.history.append(copy.deepcopy(stored.message))
            stored.markup = inline
            stored.message["edit_date"] = int(time.time())
            if inline:
                stored.message["reply_markup"] = inline
            else:
                stored.message.pop("reply_markup", None)
            return copy.deepcopy(stored.message)

    def _api_answercallbackquery(self, params: dict[str, Any]) -> bool:
        with self.cond:
            query = self.queries.get(str(params.get("callback_query_id")))
            if query is None or query["answered"]:
                raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is "
                                    "invalid")
            text = params.get("text")
            if text is not None and len(str(text)) > MAX_ANSWER_TEXT:
                raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
            query["answered"] = True
            query["answer"] = {"text": text, "show_alert": _as_bool(params.get("show_alert"))}
            return True

    def _api_setmycommands(self, params: dict[str, Any]) -> bool:
        commands = _as_json(params.get("commands"))
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for item in commands:
            if not _COMMAND_RE.match(str(item.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not (1 <= len(str(item.get("description", ""))) <= 256):
                raise ApiError(400, "Bad Request: command description is invalid")
        with self.cond:
            self.commands = commands
        return True

    def _api_getmycommands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self.cond:
            return list(self.commands)

    def _api_setwebhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        with self.cond:
            if not url:
                self.webhook = None
                return True
            if not url.startswith("https://"):
                raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
            if secret is not None and not _SECRET_RE.match(str(secret)):
                raise ApiError(400, "Bad Request: secret token contains unallowed characters")
            if _as_bool(params.get("drop_pending_updates")):
                self._queue.clear()
            self.webhook = {"url": url, "secret_token": secret,
                            "allowed_updates": _as_json(params.get("allowed_updates")),
                            "max_connections": _as_int(params.get("max_connections")) or 40}
            self.cond.notify_all()
        return True

    def _api_deletewebhook(self, params: dict[str, Any]) -> bool:
        with self.cond:
            self.webhook = None
            if _as_bool(params.get("drop_pending_updates")):
                self._queue.clear()
        return True

    def _api_getwebhookinfo(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            info = {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False,
                    "pending_update_count": len(self._queue)}
            if self.webhook and self.webhook.get("allowed_updates"):
                info["allowed_updates"] = self.webhook["allowed_updates"]
            return info


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_json(value: Any) -> Any:
    """表单参数里的 JSON 值是字符串；JSON 请求体里已是对象。"""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("true", "1")
    return bool(value)


class Socks5Proxy:
    """最小的 SOCKS5 代理（RFC 1928：无认证、CONNECT、IPv4/域名），用来验证 socks5:// 代理真的被使用。"""

    def __init__(self, *, resolve: dict[str, tuple[str, int]] | None = None) -> None:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.resolve = resolve or {}  # 域名 → 实际地址（测试里把 api.telegram.org 指到假服务器）
        self.connections: list[tuple[str, int]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="fake-socks5").start()

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()
        return f"socks5://{host}:{port}"

    def close(self) -> None:
        self._closed = True
        self._socket.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _addr = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Any) -> None:
        import socket
        import struct

        def recv_exact(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = client.recv(n - len(data))
                if not chunk:
                    raise ConnectionError
                data += chunk
            return data

        try:
            _version, methods = recv_exact(2)
            recv_exact(methods)
            client.sendall(b"\x05\x00")  # 不需要认证
            _ver, command, _rsv, address_type = recv_exact(4)
            if address_type == 1:
                host = socket.inet_ntoa(recv_exact(4))
            elif address_type == 3:
                host = recv_exact(recv_exact(1)[0]).decode()
            else:
                client.sendall(b"\x05\x08\x00\x01" + b"\x00" * 6)
                return
            (port,) = struct.unpack("!H", recv_exact(2))
            if command != 1:
                client.sendall(b"\x05\x07\x00\x01" + b"\x00" * 6)
                return
            self.connections.append((host, port))
            upstream = socket.create_connection(self.resolve.get(f"{host}:{port}", (host, port)))
            client.sendall(b"\x05\x00\x00\x01" + b"\x00" * 6)
        except (ConnectionError, OSError):
            client.close()
            return

        def pipe(src: Any, dst: Any) -> None:
            try:
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
