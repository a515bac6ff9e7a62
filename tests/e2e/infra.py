"""e2e 的基础设施：HTTP 小工具、轮询的反向代理、MariaDB 上的库、私有的 redis-server。"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import MySQLdb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{timeout:.0f} 秒内没有等到：{what}")
        time.sleep(interval)


# ---------------------------------------------------------------- HTTP


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def is_json(self) -> bool:
        return self.content_type.startswith("application/json")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 15) -> Reply:
    """一次真正的 HTTP 请求（不跟随重定向：3xx 原样返回）。连不上时抛 OSError。"""
    parts = urllib.parse.urlsplit(url)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body, ensure_ascii=False).encode()
    sent = {"Content-Type": "application/json"} if data is not None else {}
    sent.update(headers or {})
    connection = HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        connection.request(method, f"{path}?{parts.query}" if parts.query else path, body=data, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


class RoundRobinProxy:
    """最小的反向代理：请求轮流转给几个 web 进程，像终结 TLS 的负载均衡那样加 X-Forwarded-Proto: https。"""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.served: list[str] = []  # 每个请求交给了哪个后端（按顺序）
        self._next = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                proxy._forward(self)

            do_POST = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            backend = self.backends[self._next % len(self.backends)]
            self._next += 1
            self.served.append(backend)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "content-length")}
        headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-For": handler.client_address[0]})
        try:
            reply = http(handler.command, backend + handler.path, body=body, headers=headers, timeout=90)
        except OSError:
            reply = Reply(502, {"content-type": "text/plain"}, b"bad gateway")
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            if name not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        handler.wfile.write(reply.body)


# ---------------------------------------------------------------- MariaDB


class Database:
    """MariaDB 上的一个库。base_url 给出服务器与账号（DATABASE_URL），库名由调用方定。"""

    def __init__(self, base_url: str, name: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 3306
        self.user = urllib.parse.unquote(parts.username or "root")
        self.password = urllib.parse.unquote(parts.password or "")
        self.name = name
        self._netloc = parts.netloc

    @property
    def url(self) -> str:
        return f"mysql://{self._netloc}/{self.name}"

    def connect(self, database: str | None = None) -> MySQLdb.Connection:
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user, "charset": "utf8mb4",
                                  "autocommit": True}
        if self.password:
            kwargs["password"] = self.password
        if database:
            kwargs["database"] = database
        return MySQLdb.connect(**kwargs)

    def execute(self, sql: str, args: Iterable[Any] | None = None, *, database: str | None = None) -> list[tuple]:
        connection = self.connect(database)
        try:
            cursor = connection.cursor()
            cursor.execute(sql, tuple(args) if args is not None else None)
            return list(cursor.fetchall() or [])
        finally:
            connection.close()

    def query(self, sql: str, args: Iterable[Any] | None = None) -> list[tuple]:
        """在本库里查询（断言用；场景本身只通过 HTTP 与假服务器观察系统）。"""
        return self.execute(sql, args, database=self.name)

    def create(self) -> Database:
        self.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        self.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return self

    def drop(self) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{self.name}`")

    def clone_from(self, template: Database) -> Database:
        """建库并复制 template 的表（SHOW CREATE TABLE，含外键）与数据：比 migrate 快几倍。"""
        self.create()
        connection = self.connect(self.name)
        try:
            cursor = connection.cursor()
            cursor.execute("SET FOREIGN_KEY_CHECKS=0")
            cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema=%s "
                           "AND table_type='BASE TABLE'", (template.name,))
            tables = [row[0] for row in cursor.fetchall()]
            for table in tables:
                cursor.execute(f"SHOW CREATE TABLE `{template.name}`.`{table}`")
                cursor.execute(cursor.fetchone()[1])
            for table in tables:
                cursor.execute(f"INSERT INTO `{table}` SELECT * FROM `{template.name}`.`{table}`")
            cursor.execute("SET FOREIGN_KEY_CHECKS=1")
        finally:
            connection.close()
        return self

    def connections(self) -> list[tuple[int, str, str]]:
        """连到本库的会话：(id, 客户端地址 host:port, 命令)。"""
        rows = self.execute("SELECT id, host, command FROM information_schema.processlist WHERE db=%s", (self.name,))
        return [(int(i), str(h), str(c)) for i, h, c in rows]


# ---------------------------------------------------------------- Redis


class RedisServer:
    """一个私有的 redis-server（不落盘）：重启后是空的，正像没有持久化的 Redis 进程被重启。"""

    def __init__(self, workdir: Path, *, db: int = 0) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.db = db
        self.log_path = workdir / "logs" / "redis.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("找不到 redis-server（Debian 包 redis-server）")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.ping, 15, f"redis-server 在端口 {self.port} 就绪")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        """停掉再在同一端口启动：所有队列里的消息都没了。"""
        self.stop()
        self.start()
