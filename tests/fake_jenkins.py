"""一个在 127.0.0.1 上说真 HTTP 的假 Jenkins，供 python-jenkins 客户端原样驱动（不 mock 我们的代码）。

照着真实 Jenkins 与插件的行为实现：
- 锁定的控制器：匿名请求 403（响应都带 X-Jenkins 头），错误口令 401，Basic 认证；
- crumbIssuer/api/json 发放与会话（JSESSIONID）绑定的 crumb，POST 必须带 Jenkins-Crumb 头；
- 构建 api/json（ApproverAction、InterruptedBuildAction/Rejection）、consoleText、logText/progressiveText
  （GET 与 HEAD；超出长度的 start 按 stapler LargeText 视为日志轮转、从头返回全文）；
- 中止 input 而流水线继续跑 post{}：Rejection 要到构建结束才出现在 actions 里（answer_input(keep_building=True)）；
- pipeline-input-step：{build}/input/{Id}/proceedEmpty、/proceed（表单字段 json 里的 parameter 列表，
  未声明的参数 → 500）、/abort；id 区分大小写（InputStep 会把首字母大写）；已处理的 input → 404；
- pipeline-stage-view：{build}/wfapi/pendingInputActions；
- 构建 /stop（302 回构建页）；
- webhook-step：POST /webhook-step/{token}（不需登录与 crumb；注册了 authToken 时比较 Authorization 头，
  不符 403；有人在等 200，否则 202；redirect_webhook() 让它像反向代理/登录页那样回 3xx）；
- 故障注入：down()/up() 关闭/重开监听端口（连接被拒绝）、fail_next() 让后续请求回 5xx/404、delay 模拟超时。
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

JENKINS_VERSION = "2.479.1"


@dataclass
class FakeInput:
    id: str
    message: str = "发布到生产？"
    parameters: list[str] = field(default_factory=list)


@dataclass
class FakeBuild:
    job: str
    number: int
    building: bool = True
    result: str | None = None
    inputs: dict[str, FakeInput] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    console: str = "Started by user Dave\n[Pipeline] stage\n[Pipeline] { (Build)\n"
    submitted: list[dict[str, Any]] = field(default_factory=list)  # 每次 proceed 的参数
    # 构建结束时才记下的动作：中止 input 的 Rejection 在 FlowInterruptedException 里，
    # 直到构建结束（或被 catchError 捕获）才变成 InterruptedBuildAction
    deferred_actions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Recorded:
    method: str
    path: str
    user: str | None
    headers: dict[str, str]
    body: bytes
    response_bytes: int = 0  # 响应体的字节数（测试“只传了末尾”用）
    at: float = field(default_factory=time.monotonic)  # 收到请求的时刻（基准测试量延迟用）


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # 客户端超时先断开时写回会 BrokenPipe：这正是超时测试想要的，不打印堆栈
        return


class FakeJenkins:
    def __init__(self, *, users: dict[str, str] | None = None, anonymous_read: bool = False,
                 crumbs: bool = True, wfapi: bool = True) -> None:
        self.users = users if users is not None else {"svc": "svc-token"}
        self.anonymous_read = anonymous_read
        self.crumbs_enabled = crumbs
        self.wfapi_enabled = wfapi
        self.builds: dict[tuple[str, int], FakeBuild] = {}
        self.requests: list[Recorded] = []
        self.webhooks: dict[str, str | None] = {}  # token → authToken
        self.webhook_waiting: set[str] = set()
        self.webhook_posts: dict[str, list[dict[str, Any]]] = {}
        self.webhook_redirects: dict[str, tuple[int, str]] = {}  # token → (3xx 状态, Location)
        self.delay = 0.0
        self.delay_on = ""  # 只让路径含此片段的请求变慢（空 = 全部）
        self._failures: list[tuple[int, str]] = []  # (status, path 包含的片段)
        self._sessions: dict[str, str] = {}  # JSESSIONID → crumb
        self._connections: set[socket.socket] = set()  # 保持着的连接（down() 时一起断开）
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ 生命周期

    def start(self) -> FakeJenkins:
        handler = self._handler_class()
        self._server = _QuietServer(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """关闭监听端口并断开保持着的连接：之后的请求得到 “connection refused”（像进程退出一样）。"""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            open_connections, self._connections = list(self._connections), set()
        for sock in open_connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def expire_sessions(self) -> None:
        """会话全部失效（Jenkins 重启、会话超时）：之前发放的 crumb 不再被接受。"""
        with self._lock:
            self._sessions.clear()

    def up(self) -> None:
        """在同一端口重新监听（Jenkins 重启完成）。"""
        if self._server is None:
            self.start()

    stop = down

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    # ------------------------------------------------------------ 场景搭建

    def add_build(self, job: str, number: int, *, inputs: list[FakeInput] | None = None,
                  building: bool = True, result: str | None = None) -> FakeBuild:
        build = FakeBuild(job=job, number=number, building=building, result=result,
                          inputs={i.id: i for i in inputs or []})
        with self._lock:
            self.builds[(job, number)] = build
        return build

    def build(self, job: str, number: int) -> FakeBuild:
        return self.builds[(job, number)]

    def finish(self, job: str, number: int, result: str = "SUCCESS") -> None:
        with self._lock:
            build = self.builds[(job, number)]
            build.building, build.result = False, result
            build.inputs.clear()
            build.actions.extend(build.deferred_actions)
            build.deferred_actions.clear()

    def answer_input(self, job: str, number: int, input_id: str, *, user: str | None, approve: bool,
                     keep_building: bool = False, rejection_visible: bool = False) -> None:
        """模拟有人在 Jenkins 自己的界面里点了 Proceed / Abort（user=None：timeout { input } 到时，由系统中止）。

        keep_building=True 的中止：流水线还在跑 post{}/清理，构建要等 finish() 才结束；按真实 Jenkins，
        Rejection 原因到那时才出现在构建的 actions 里，除非 rejection_visible=True（catchError 捕获时当场记下）。
        """
        with self._lock:
            self._settle(self.builds[(job, number)], input_id, user=user, approve=approve, params=None,
                         keep_building=keep_building, rejection_visible=rejection_visible)

    def register_webhook(self, token: str | None = None, *, auth_token: str | None = None,
                         waiting: bool = True) -> str:
        """registerWebhook()：返回 hook.url；waiting=True 表示流水线已在 waitForWebhook 里等。"""
        token = token or secrets.token_hex(8)
        with self._lock:
            self.webhooks[token] = auth_token
            if waiting:
                self.webhook_waiting.add(token)
        return f"{self.url}webhook-step/{token}"

    def redirect_webhook(self, token: str, location: str, *, status: int = 302) -> None:
        """回调地址前面挡着 SSO/反向代理：POST 得到 3xx 与 Location，决定根本没到流水线。"""
        with self._lock:
            self.webhook_redirects[token] = (status, location)

    def fail_next(self, count: int, *, status: int = 500, path_contains: str = "") -> None:
        with self._lock:
            self._failures.extend([(status, path_contains)] * count)

    def calls(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    # ------------------------------------------------------------ 内部

    def _settle(self, build: FakeBuild, input_id: str, *, user: str | None, approve: bool,
                params: dict[str, Any] | None, keep_building: bool = False, rejection_visible: bool = False) -> None:
        build.inputs.pop(input_id)
        if approve:
            if user:  # InputStepExecution.proceed：User.current() 为空时不记 ApproverAction
                build.actions.append({"_class": "org.jenkinsci.plugins.workflow.support.steps.input.ApproverAction",
                                      "userId": user})
            build.submitted.append(params or {})
            build.console += f"Approved by {user}\n"
            return
        cause: dict[str, Any] = {"_class": "org.jenkinsci.plugins.workflow.support.steps.input.Rejection",
                                 "shortDescription": f"Rejected by {user or 'SYSTEM'}"}
        if user:
            cause["user"] = {"id": user, "fullName": user}
        action = {"_class": "jenkins.model.InterruptedBuildAction", "causes": [cause]}
        build.console += f"Rejected by {user or 'SYSTEM'}\n"
        if keep_building:
            (build.actions if rejection_visible else build.deferred_actions).append(action)
            return
        build.actions.append(action)
        build.building, build.result = False, "ABORTED"
        build.console += "Finished: ABORTED\n"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # 真 Jenkins（Jetty）保持连接；每个响应都带 Content-Length。响应一次写出、关掉 Nagle（见假 Bot API）
            protocol_version = "HTTP/1.1"
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                fake._dispatch(self, "GET")

            def do_POST(self) -> None:
                fake._dispatch(self, "POST")

            def do_HEAD(self) -> None:
                # stapler 的 web 方法不限定 HTTP 动词：HEAD 与 GET 走同一个方法，容器丢掉响应体
                fake._dispatch(self, "HEAD")

        return Handler

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: Any = b"", *, content_type: str = "text/plain",
              headers: dict[str, str] | None = None) -> None:
        if isinstance(body, (dict, list)):
            body, content_type = json.dumps(body, ensure_ascii=False).encode(), "application/json;charset=utf-8"
        elif isinstance(body, str):
            body = body.encode("utf-8")
            content_type += ";charset=utf-8"
        h.send_response(status)
        h.send_header("X-Jenkins", JENKINS_VERSION)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
            recorded = getattr(h, "recorded", None)
            if recorded is not None:
                recorded.response_bytes += len(body)

    def _user(self, h: BaseHTTPRequestHandler) -> tuple[str | None, bool]:
        """返回 (用户, 凭据是否有效)。"""
        header = h.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None, True
        try:
            user, _sep, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, False
        return (user, True) if self.users.get(user) == password else (None, False)

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        user, valid = self._user(h)
        with self._lock:
            h.recorded = Recorded(method, h.path, user, dict(h.headers), body)
            self.requests.append(h.recorded)
            failure = next((f for f in self._failures if f[1] in h.path), None)
            if failure:
                self._failures.remove(failure)
        if self.delay and self.delay_on in h.path:
            time.sleep(self.delay)
        if failure:
            return self._send(h, failure[0], f"<html><body>Error {failure[0]}</body></html>", content_type="text/html")

        # webhook-step：UnprotectedRootAction + CrumbExclusion
        if path.startswith("/webhook-step/") and method == "POST":
            return self._webhook(h, path[len("/webhook-step/"):], body)
        if not valid:
            return self._send(h, 401, "Invalid password/token for user", headers={"WWW-Authenticate": 'Basic realm="Jenkins"'})
        if user is None and not self.anonymous_read:
            # 锁定的控制器：匿名什么都看不到（X-Jenkins 头仍在）
            return self._send(h, 403, "<html>Authentication required</html>", content_type="text/html")

        if path == "/crumbIssuer/api/json" and method == "GET":
            if not self.crumbs_enabled:
                return self._send(h, 404, "Not Found")
            session = secrets.token_hex(8)
            crumb = secrets.token_hex(16)
            with self._lock:
                self._sessions[session] = crumb
            return self._send(h, 200, {"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": crumb,
                                       "crumbRequestField": "Jenkins-Crumb"},
                              headers={"Set-Cookie": f"JSESSIONID.fake={session}; Path=/; HttpOnly"})
        if method == "POST" and self.crumbs_enabled:
            session = ""
            for cookie in (h.headers.get("Cookie") or "").split(";"):
                name, _sep, value = cookie.strip().partition("=")
                if name == "JSESSIONID.fake":
                    session = value
            with self._lock:
                expected = self._sessions.get(session)
            if not expected or h.headers.get("Jenkins-Crumb") != expected:
                return self._send(h, 403, "HTTP ERROR 403 No valid crumb was included in the request",
                                  content_type="text/html")

        if path in ("/", "/api/json"):
            return self._send(h, 200, {"_class": "hudson.model.Hudson", "mode": "NORMAL", "nodeName": "",
                                       "useSecurity": True, "jobs": []})
        if path == "/me/api/json":
            return self._send(h, 200, {"_class": "hudson.model.User", "id": user or "anonymous",
                                       "fullName": user or "anonymous"})
        return self._build_route(h, method, path, query, body, user)

    def _parse_job(self, path: str) -> tuple[str, list[str]]:
        segments = [s for s in path.strip("/").split("/")]
        names = []
        while len(segments) >= 2 and segments[0] == "job":
            names.append(segments[1])
            segments = segments[2:]
        return "/".join(names), segments

    def _build_route(self, h: BaseHTTPRequestHandler, method: str, path: str, query: dict[str, list[str]],
                     body: bytes, user: str | None) -> None:
        job, rest = self._parse_job(path)
        if not job or not rest or not rest[0].isdigit():
            return self._send(h, 404, "Not Found")
        with self._lock:
            build = self.builds.get((job, int(rest[0])))
        if build is None:
            return self._send(h, 404, "<html>Not Found</html>", content_type="text/html")
        tail = rest[1:]
        build_url = f"{self.url}{''.join('job/' + p + '/' for p in job.split('/'))}{build.number}/"
        if method == "GET" and tail in ([], [""]):
            return self._send(h, 200, "<html>build page</html>", content_type="text/html")
        if method == "GET" and tail == ["api", "json"]:
            return self._send(h, 200, {
                "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun", "number": build.number,
                "url": build_url, "building": build.building, "result": build.result, "duration": 0,
                "actions": [{"_class": "hudson.model.CauseAction"}, *build.actions],
            })
        if method == "GET" and tail == ["consoleText"]:
            return self._send(h, 200, build.console)
        if method in ("GET", "HEAD") and tail == ["logText", "progressiveText"]:
            start = int((query.get("start") or ["0"])[0])
            data = build.console.encode("utf-8")
            if start > len(data):
                start = 0  # stapler LargeText：超出长度的 start 视为“日志被轮转”，从头返回全文
            headers = {"X-Text-Size": str(len(data))}
            if build.building:
                headers["X-More-Data"] = "true"
            return self._send(h, 200, data[start:], content_type="text/plain;charset=UTF-8", headers=headers)
        if method == "GET" and tail == ["wfapi", "pendingInputActions"]:
            if not self.wfapi_enabled:
                return self._send(h, 404, "Not Found")
            prefix = f"/{''.join('job/' + p + '/' for p in job.split('/'))}{build.number}/"
            return self._send(h, 200, [
                {"id": i.id, "proceedText": "Proceed", "message": i.message,
                 "inputs": [{"type": "StringParameterDefinition", "name": p, "definition": {"defaultVal": ""}}
                            for p in i.parameters],
                 "proceedUrl": f"{prefix}wfapi/inputSubmit?inputId={i.id}",
                 "abortUrl": f"{prefix}input/{i.id}/abort", "redirectApprovalUrl": f"{prefix}input/"}
                for i in build.inputs.values()
            ])
        if method == "POST" and tail == ["stop"]:
            with self._lock:
                build.building, build.result = False, "ABORTED"
                build.inputs.clear()
            return self._send(h, 302, b"", headers={"Location": build_url})
        if method == "POST" and len(tail) == 3 and tail[0] == "input":
            return self._input(h, build, tail[1], tail[2], body, user)
        return self._send(h, 404, "Not Found")

    def _input(self, h: BaseHTTPRequestHandler, build: FakeBuild, input_id: str, verb: str, body: bytes,
               user: str | None) -> None:
        with self._lock:
            pending = build.inputs.get(input_id)  # InputAction.getExecution：精确匹配
            if pending is None:
                return self._send(h, 404, "<html>Not Found</html>", content_type="text/html")
            if verb == "proceedEmpty":
                self._settle(build, input_id, user=user, approve=True, params=None)
            elif verb == "proceed":
                form = parse_qs(body.decode("utf-8"))
                params: dict[str, Any] = {}
                for item in json.loads((form.get("json") or ["{}"])[0]).get("parameter", []):
                    if item["name"] not in pending.parameters:
                        # IllegalArgumentException("No such parameter definition") → 500
                        return self._send(h, 500, f"No such parameter definition: {item['name']}")
                    params[item["name"]] = item.get("value")
                self._settle(build, input_id, user=user, approve=True, params=params)
            elif verb == "abort":
                self._settle(build, input_id, user=user, approve=False, params=None)
            else:
                return self._send(h, 404, "Not Found")
        return self._send(h, 200, "")

    def _webhook(self, h: BaseHTTPRequestHandler, token: str, body: bytes) -> None:
        with self._lock:
            redirect = self.webhook_redirects.get(token)
        if redirect is not None:
            return self._send(h, redirect[0], "<html>Moved</html>", content_type="text/html",
                              headers={"Location": redirect[1]})
        with self._lock:
            auth = self.webhooks.get(token)
            if auth is not None and h.headers.get("Authorization") != auth:
                return self._send(h, 403, "", headers={"Result": "Unauthorized"})
            try:
                payload = json.loads(body.decode("utf-8"))
            except ValueError:
                payload = {"raw": body.decode("utf-8", "replace")}
            self.webhook_posts.setdefault(token, []).append(payload)
            waiting = token in self.webhook_waiting
            self.webhook_waiting.discard(token)
        if waiting:
            return self._send(h, 200, "", headers={"Result": "WebhookTriggered"})
        return self._send(h, 202, "")
