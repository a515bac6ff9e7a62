"""Jenkins 客户端：全项目唯一 import python-jenkins 的地方。

所有失败都折算成一个 JenkinsError(permanent=…)：
- 永久（permanent=True）：404 构建/input 不存在、input 已被处理、认证/权限错误——重试也不会好，记录后停止；
- 暂时（permanent=False）：连接失败、超时、5xx、429、CSRF crumb 过期——按退避重试。
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import jenkins
import requests
from django.utils.translation import gettext as _

from .models import JenkinsServer, secret_env_name_problem

logger = logging.getLogger(__name__)

T = TypeVar("T")

APPROVER_ACTION_CLASS = "org.jenkinsci.plugins.workflow.support.steps.input.ApproverAction"
REJECTION_CLASS = "org.jenkinsci.plugins.workflow.support.steps.input.Rejection"
BUILD_TREE = "number,url,building,result,duration,actions[_class,userId,causes[_class,shortDescription,user[id,fullName]]]"


class JenkinsError(Exception):
    """对 Jenkins 的一次调用失败。kind 是机器可读的原因，status 是 HTTP 状态（如有）。"""

    def __init__(self, message: str, *, permanent: bool, kind: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.kind = kind
        self.status = status

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PendingInput:
    """wfapi/pendingInputActions 里的一项。"""

    id: str
    message: str = ""
    parameters: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuildState:
    """构建的要点：是否还在跑、结果、在 Jenkins 里批准/拒绝 input 的人。"""

    building: bool
    result: str | None
    approvers: list[str]
    rejected_by: str | None
    rejected: bool
    raw: dict[str, Any]
    rejections: int = 0  # Rejection 原因的个数（多个 input 的流水线里可能不止一个）


def unless_not_found(call: Callable[..., T], *args: Any) -> T | None:
    """调用 Jenkins；404（构建、input 或 wfapi 不存在）时返回 None，其他错误照常抛出。"""
    try:
        return call(*args)
    except JenkinsError as exc:
        if exc.kind != "not_found":
            raise
        return None


def normalize_input_id(raw: str) -> str:
    """Jenkins 的 InputStep 会把 id 首字母大写（a-z 开头的 URL 段留给 InputAction 自己）。"""
    value = (raw or "").strip()
    if value and "a" <= value[0] <= "z":
        value = value[0].upper() + value[1:]
    return value


def job_path(name: str) -> str:
    """folder/sub/job → job/folder/job/sub/job/job/（每段单独 URL 编码，支持中文与空格）。"""
    parts = [p for p in name.strip("/").split("/") if p]
    return "".join(f"job/{quote(p, safe='')}/" for p in parts)


def _http_status(exc: BaseException) -> tuple[int | None, str]:
    """python-jenkins 把 401/403/404/500 包成自己的异常，原始 HTTPError 留在异常链上。"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(current, requests.HTTPError) and response is not None:
            return response.status_code, (response.text or "")[:500]
        current = current.__cause__ or current.__context__
    return None, ""


def classify(exc: BaseException, what: str) -> JenkinsError:
    """把任何底层异常折算成 JenkinsError。"""
    if isinstance(exc, JenkinsError):
        return exc
    status, body = _http_status(exc)
    if isinstance(exc, (jenkins.TimeoutException, requests.Timeout)):
        return JenkinsError(_("%(what)s: 超时") % {"what": what}, permanent=False, kind="timeout")
    if isinstance(exc, requests.ConnectionError) and status is None:
        return JenkinsError(_("%(what)s: 无法连接 Jenkins") % {"what": what}, permanent=False, kind="connection")
    if status is not None:
        if status == 404:
            return JenkinsError(_("%(what)s: 404 不存在") % {"what": what}, permanent=True, kind="not_found",
                                status=status)
        if status == 403 and "crumb" in body.lower():
            # crumb 与会话绑定，过期后换一个新客户端重试即可
            return JenkinsError(_("%(what)s: CSRF crumb 无效") % {"what": what}, permanent=False, kind="crumb",
                                status=status)
        if status in (401, 403):
            return JenkinsError(_("%(what)s: 认证或权限失败（HTTP %(status)s）") % {"what": what, "status": status},
                                permanent=True, kind="auth", status=status)
        if status == 400 and "already" in body.lower():
            return JenkinsError(_("%(what)s: input 已被处理") % {"what": what}, permanent=True, kind="input_answered",
                                status=status)
        if status == 429 or status >= 500:
            return JenkinsError(f"{what}: HTTP {status}", permanent=False, kind="server_error", status=status)
        return JenkinsError(f"{what}: HTTP {status}", permanent=True, kind="http_error", status=status)
    if isinstance(exc, requests.RequestException):
        return JenkinsError(f"{what}: {exc.__class__.__name__}", permanent=False, kind="connection")
    # python-jenkins 自己的其他异常（如“Unable to authenticate”）：不确定，按暂时处理
    return JenkinsError(f"{what}: {exc}", permanent=False, kind="error")


# 每个进程、每个线程、每套连接参数一个 python-jenkins 对象：保持着的 HTTP 连接与 crumb（crumb 绑定在会话
# cookie 上）在任务之间复用，一次继续只剩一个请求。crumb 过期（Jenkins 重启、会话超时）时得到 403 “No valid
# crumb”，丢掉它重取一次再发（请求被拒绝，重发不会重复操作）。
_shared = threading.local()
_SHARED_LIMIT = 16


def _shared_jenkins(url: str, username: str | None, password: str | None, timeout: float) -> jenkins.Jenkins:
    pid = os.getpid()
    if getattr(_shared, "pid", None) != pid:  # fork 出来的 worker 子进程不沿用父进程的连接
        _shared.pid, _shared.clients = pid, {}
    clients: dict[tuple, jenkins.Jenkins] = _shared.clients
    secret = hashlib.sha256((password or "").encode()).hexdigest()
    key = (url, username, secret, timeout)
    client = clients.get(key)
    if client is None:
        if len(clients) >= _SHARED_LIMIT:  # 地址或口令改过很多次：丢掉最早的
            clients.pop(next(iter(clients)))._session.close()
        client = clients[key] = jenkins.Jenkins(url, username=username, password=password, timeout=timeout)
    return client


def shared_clients_clear() -> None:
    """丢掉本线程缓存的客户端（测试里每个用例换一个假 Jenkins）。"""
    for client in getattr(_shared, "clients", {}).values():
        client._session.close()
    _shared.clients = {}


def _forget_crumb(client: jenkins.Jenkins) -> None:
    client.crumb = None
    client._session.cookies.clear()


class JenkinsClient:
    """一台 Jenkins 的客户端。底下的 python-jenkins 对象按进程与线程共享（见 _shared_jenkins）。"""

    def __init__(self, server: JenkinsServer, *, timeout: float | None = None) -> None:
        if not server.base_url:
            raise JenkinsError(_("Jenkins「%(name)s」没有配置地址") % {"name": server.name}, permanent=True,
                              kind="not_configured")
        problem = secret_env_name_problem(server.api_token_env)
        if problem:
            # 绕过后台直接写进库的非法变量名：宁可不连，也不把别的密钥当口令发出去
            raise JenkinsError(_("Jenkins「%(name)s」的 API Token 环境变量名不可用：%(problem)s")
                               % {"name": server.name, "problem": problem}, permanent=True, kind="not_configured")
        self.server = server
        self.timeout = timeout or server.timeout_seconds or 10.0
        token = server.api_token()
        self._jenkins = _shared_jenkins(server.base_url, server.username or None,
                                        token if server.username else None, self.timeout)

    # ------------------------------------------------------------ 底层

    def _url(self, path: str) -> str:
        return self._jenkins._build_url(path)

    def _request(self, method: str, path_or_url: str, *, what: str, data: Any = None,
                 headers: dict[str, str] | None = None) -> requests.Response:
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self._url(path_or_url)
        for attempt in (1, 2):
            reused_crumb = bool(self._jenkins.crumb)
            req = requests.Request(method, url, data=data, headers=dict(headers or {}))
            try:
                return self._jenkins.jenkins_request(req)
            except Exception as exc:  # 统一折算成 JenkinsError（带原异常链）
                error = classify(exc, what)
                if error.kind == "crumb" and reused_crumb and attempt == 1:
                    logger.info("Jenkins「%s」不再接受缓存的 crumb，重新获取后重发 %s", self.server.name, what)
                    _forget_crumb(self._jenkins)
                    continue
                raise error from exc
        raise AssertionError("unreachable")

    def _json(self, path: str, *, what: str) -> Any:
        response = self._request("GET", path, what=what)
        try:
            return response.json()
        except ValueError as exc:
            raise JenkinsError(_("%(what)s: 返回的不是 JSON") % {"what": what}, permanent=False,
                               kind="bad_response") from exc

    # ------------------------------------------------------------ 读

    def version(self) -> str:
        """Jenkins 版本。先解析认证：python-jenkins 的 get_version 否则会匿名请求，锁定的控制器回 403。"""
        try:
            self._jenkins._maybe_add_auth()
            return self._jenkins.get_version()
        except Exception as exc:  # 统一折算成 JenkinsError（带原异常链）
            raise classify(exc, "get_version") from exc

    def whoami(self) -> dict[str, Any]:
        try:
            return self._jenkins.get_whoami()
        except Exception as exc:  # 统一折算成 JenkinsError（带原异常链）
            raise classify(exc, "whoami") from exc

    def build_info(self, job_name: str, number: int) -> dict[str, Any]:
        # tree 只取需要的字段：大构建的 depth=1 全量 JSON 可能有几 MB
        return self._json(f"{job_path(job_name)}{int(number)}/api/json?tree={BUILD_TREE}", what="build_info")

    def build_state(self, job_name: str, number: int) -> BuildState:
        info = self.build_info(job_name, number)
        approvers: list[str] = []
        rejected_by: str | None = None
        rejections = 0
        for action in info.get("actions") or []:
            if not isinstance(action, dict):
                continue
            if action.get("_class") == APPROVER_ACTION_CLASS and action.get("userId"):
                approvers.append(str(action["userId"]))
            for cause in action.get("causes") or []:
                if isinstance(cause, dict) and cause.get("_class") == REJECTION_CLASS:
                    rejections += 1
                    user = cause.get("user") or {}
                    if isinstance(user, dict):
                        rejected_by = user.get("id") or user.get("fullName") or rejected_by
        return BuildState(
            building=bool(info.get("building")),
            result=info.get("result"),
            approvers=approvers,
            rejected_by=rejected_by,
            rejected=rejections > 0,
            raw=info,
            rejections=rejections,
        )

    def console_text(self, job_name: str, number: int) -> str:
        response = self._request("GET", f"{job_path(job_name)}{int(number)}/consoleText", what="consoleText")
        return response.content.decode("utf-8", "replace")

    def progressive_text(self, job_name: str, number: int, start: int = 0) -> tuple[str, int, bool]:
        """增量日志：返回 (新文本, 下次的 start, 构建是否还在输出)。"""
        response = self._request(
            "GET", f"{job_path(job_name)}{int(number)}/logText/progressiveText?start={int(start)}",
            what="progressiveText",
        )
        size = int(response.headers.get("X-Text-Size") or start)
        more = (response.headers.get("X-More-Data") or "").lower() == "true"
        # Jenkins 的日志是 UTF-8；不依赖响应头里的 charset（反向代理常把它弄丢）
        return response.content.decode("utf-8", "replace"), size, more

    def log_size(self, job_name: str, number: int) -> int | None:
        """日志当前的字节数，不下载日志：对 progressiveText 发 HEAD，只看 X-Text-Size 头。

        不能用 GET ?start=<很大>：Jenkins（stapler LargeText）把超出长度的 start 当作“日志被轮转”，从 0 返回全文。
        拿不到（反向代理不放行 HEAD、没有该头）时返回 None，由调用方退回整段读取。
        """
        response = self._request(
            "HEAD", f"{job_path(job_name)}{int(number)}/logText/progressiveText?start=0", what="progressiveText",
        )
        raw = response.headers.get("X-Text-Size")
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    def pending_inputs(self, job_name: str, number: int) -> list[PendingInput]:
        data = self._json(f"{job_path(job_name)}{int(number)}/wfapi/pendingInputActions", what="pendingInputActions")
        result = []
        for item in data or []:
            if isinstance(item, dict) and item.get("id"):
                params = [str(p.get("name")) for p in item.get("inputs") or [] if isinstance(p, dict) and p.get("name")]
                result.append(PendingInput(id=str(item["id"]), message=str(item.get("message") or ""),
                                           parameters=params))
        return result

    # ------------------------------------------------------------ 写

    def _input_path(self, job_name: str, number: int, input_id: str, verb: str) -> str:
        return f"{job_path(job_name)}{int(number)}/input/{quote(normalize_input_id(input_id), safe='')}/{verb}"

    def input_proceed(self, job_name: str, number: int, input_id: str, parameters: dict[str, str] | None = None) -> str:
        """批准 input：有参数时 POST /proceed（表单字段 json），否则 /proceedEmpty。返回所用的动作名。"""
        if parameters:
            payload = {"parameter": [{"name": k, "value": v} for k, v in parameters.items()]}
            self._request("POST", self._input_path(job_name, number, input_id, "proceed"), what="input proceed",
                          data={"json": json.dumps(payload, ensure_ascii=False)})
            return "proceed"
        self._request("POST", self._input_path(job_name, number, input_id, "proceedEmpty"), what="input proceedEmpty")
        return "proceedEmpty"

    def input_abort(self, job_name: str, number: int, input_id: str) -> None:
        self._request("POST", self._input_path(job_name, number, input_id, "abort"), what="input abort")

    def stop_build(self, job_name: str, number: int) -> bool:
        self._request("POST", f"{job_path(job_name)}{int(number)}/stop", what="stop")
        return True

    def post_webhook(self, url: str, payload: dict[str, Any]) -> int:
        """Webhook Step 回调：该端点不要求 Jenkins 登录与 crumb；Authorization 头只用于它自己的 authToken。"""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        auth = self.server.webhook_auth_header()
        if auth:
            headers["Authorization"] = auth
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            response = requests.post(url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False)
            response.raise_for_status()
        except Exception as exc:  # 统一折算成 JenkinsError（带原异常链）
            raise classify(exc, "webhook") from exc
        if response.is_redirect or 300 <= response.status_code < 400:
            # 不跟随重定向（认证头不能带去别处），raise_for_status 对 3xx 又不报错：不拦下就会被当成已送达
            raise redirect_error(url, response)
        return response.status_code


def _location_host(url: str, location: str) -> str:
    """Location 的主机（和端口）：整段地址可能带着票据或 token，不写进记录。"""
    try:
        target = urlsplit(urljoin(url, location))
        port = target.port
    except ValueError:
        return ""
    host = target.hostname or ""
    return f"{host}:{port}" if host and port else host


def redirect_error(url: str, response: requests.Response) -> JenkinsError:
    """回调地址回了 3xx：通常是地址写错，或前面有登录页/反向代理。重试也不会好，是永久失败。"""
    status = response.status_code
    host = _location_host(url, response.headers.get("Location") or "")
    if host:
        message = _("webhook: 回调地址返回重定向 HTTP %(status)s（转向 %(host)s），决定没有送达流水线；"
                    "请检查回调地址，或它是否被登录页、反向代理拦截") % {"status": status, "host": host}
    else:
        message = _("webhook: 回调地址返回重定向 HTTP %(status)s（没有给出去向），决定没有送达流水线；"
                    "请检查回调地址，或它是否被登录页、反向代理拦截") % {"status": status}
    return JenkinsError(message, permanent=True, kind="redirect", status=status)


def server_status(server: JenkinsServer, *, timeout: float | None = None) -> dict[str, Any]:
    """一台 Jenkins 是否可达：{"reachable", "version", "latency_ms", "error", "kind"}。/jenkins 命令与健康检查共用。"""
    started = time.monotonic()
    try:
        version = JenkinsClient(server, timeout=timeout).version()
    except JenkinsError as exc:
        return {"reachable": False, "version": None, "latency_ms": None, "error": exc.message, "kind": exc.kind}
    return {"reachable": True, "version": version, "latency_ms": (time.monotonic() - started) * 1000, "error": "",
            "kind": ""}
