"""整套系统的端到端测试底座：按 Procfile 的命令真正启动 web、bot、worker、beat，连到测试的假 Telegram 与假 Jenkins。

- 数据库：MariaDB 上每个 Service 一个全新的库（Database），部署步骤照 docker/entrypoint.sh migrate：
  migrate + load_config；为了快，整个测试会话只真正 migrate 一次（模板库），每个 Service 的库从模板复制
  （clone_from，一两秒），load_config 则每次真的执行；
- broker：每个 Service 一个私有的 redis-server（RedisServer，空端口、不落盘），所以可以被重启成空的
  （restart_redis），也不会和同机的其他测试抢 Redis 的库号；
- 每个进程一个日志文件（<工作目录>/logs/<名字>.log，重启时追加），失败时由 tests/e2e/conftest.py 复制成测试产物；
- stop() 像 honcho/systemd 那样先 SIGTERM 主进程、等它优雅退出，超时才 SIGKILL 它的全部子孙进程；
  kill() 模拟崩溃（信号同时给主进程与子孙进程）。

新场景只需组合这些积木：Service.start("worker")、Service.kill("worker")、Service.restart_redis()、
Service.kill_db_connections("web")……；夹具用的 Fakes、Deployments 在 deployments.py。
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import MySQLdb
import psutil

from tests.fake_jenkins import FakeJenkins
from tests.fake_telegram import FakeTelegram

from .infra import Database, RedisServer, Reply, free_port, http, wait_until

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROCFILE = ROOT / "Procfile"

# 日志里出现就算“有错误”的行：日志级别 ERROR/CRITICAL（我们的格式、uvicorn、celery 的格式都有这个词）或堆栈
PROBLEM_RE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
# 所有 Service 都记在这里：测试失败时 conftest 按它复制日志
SERVICES: list[Service] = []


# ---------------------------------------------------------------- 进程


def procfile() -> dict[str, str]:
    """Procfile 的每一项：名字 → 命令行。进程像 honcho 那样由 /bin/sh -c 执行这一行（展开 ${…}、行首的变量赋值）。"""
    entries: dict[str, str] = {}
    for line in PROCFILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _sep, command = line.partition(":")
        entries[name.strip()] = command.strip()
    return entries


class Process:
    """Service 里的一个进程（web、bot、worker、beat 或它们的第二份，如 worker-2）。"""

    def __init__(self, name: str, kind: str, *, env: dict[str, str], extra_args: list[str], log_path: Path,
                 port: int | None = None) -> None:
        self.name = name
        self.kind = kind
        self.port = port
        self.log_path = log_path
        self.env = env
        self.command = " ".join([procfile()[kind], *map(shlex.quote, extra_args)])
        self.popen: subprocess.Popen | None = None
        self.starts = 0
        self.graceful: bool | None = None  # 上一次 stop()：收到 SIGTERM 后是否自己按时退出了

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} 不是 web 进程"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert not self.alive, f"{self.name} 已在运行"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"===== harness: 启动 {self.name}：{self.command}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(["/bin/sh", "-c", self.command], cwd=ROOT, env=self.env,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        """主进程与它的全部子孙进程（uvicorn --workers、celery 的 prefork 子进程；bin/run-worker 让 celery
        在自己的会话里运行，所以不能只看进程组）。"""
        if not self.alive:
            return []
        assert self.popen is not None
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pids(self) -> list[int]:
        return [p.pid for p in self.tree()]

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM 给主进程（与 honcho、systemd 一样），等它优雅退出；超时后 SIGKILL 全部子孙进程。"""
        if self.popen is None:
            return None
        tree = self.tree()
        if self.popen.poll() is None:
            began = time.monotonic()
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
                # uvicorn 优雅关闭后按惯例重新发出收到的信号退出（-15）；celery、run-bot 退出码为 0
                self.graceful = self.popen.returncode in (0, -signal.SIGTERM)
                self._note(f"SIGTERM 后 {time.monotonic() - began:.1f} 秒退出，退出码 {self.popen.returncode}")
            except subprocess.TimeoutExpired:
                self.graceful = False
                self._note(f"{timeout:.0f} 秒内没有退出，SIGKILL")
        self._signal(tree, signal.SIGKILL)
        self.popen.wait()
        return self.popen.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """崩溃：信号同时发给主进程与全部子孙进程（例如 worker 连同正在执行任务的池子进程一起死）。"""
        if self.popen is None:
            return
        tree = self.tree()
        self._note(f"发送 {signal.Signals(sig).name} 给 {len(tree)} 个进程")
        self._signal(tree, sig)
        if sig == signal.SIGKILL:
            self.popen.wait(timeout=30)
            psutil.wait_procs(tree, timeout=10)  # 子进程也真的没了，才算“崩溃完成”

    @staticmethod
    def _signal(processes: list[psutil.Process], sig: int) -> None:
        for process in processes:
            try:
                process.send_signal(sig)  # psutil 先核对创建时间：pid 被复用时不会误杀别的进程
            except psutil.NoSuchProcess:
                pass

    def _note(self, text: str) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"===== harness: {text}\n".encode())

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


def base_env(workdir: Path, database: Database) -> dict[str, str]:
    """子进程按生产方式运行：不读开发者的 .env、不进测试模式，也不继承本机的服务设置。"""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "CELERY_", "TELEGRAM_", "JENKINS_", "APPROVAL_", "LOG_",
                                "PROMETHEUS_", "DJANGO_", "WEB_", "WORKER_", "APP_"))}
    env.update({
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "approvalbot.settings",
        "APP_VAR_DIR": str(workdir / "var"), "APP_IGNORE_DOTENV": "1", "APP_TESTING": "0",
        "USERS_CONFIG_FILE": str(workdir / "users.json"), "APP_CONFIG_FILE": str(workdir / "app.json"),
        "DATABASE_URL": database.url,
    })
    return env


# ---------------------------------------------------------------- 整个服务


class Service:
    """一套部署：一个库、一个 broker、若干进程，都指向同一对假 Telegram / 假 Jenkins。

    mode="webhook" 时 PUBLIC_BASE_URL 是 https 的对外地址（Telegram 只推 https），请求经 RoundRobinProxy 或
    直接带 X-Forwarded-Proto: https 到达 web 进程。
    """

    def __init__(self, workdir: Path, *, database: Database, telegram: FakeTelegram, jenkins: FakeJenkins,
                 jenkins_token: str, users: dict[str, Any], app_config: dict[str, Any] | None = None,
                 mode: str = "polling", public_url: str | None = None, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.database = database
        self.telegram = telegram
        self.jenkins = jenkins
        self.mode = mode
        self.processes: dict[str, Process] = {}
        self.redis = RedisServer(workdir, db=3)
        self.api_token = "e2e-api-" + secrets.token_hex(16)
        self.webhook_secret = "e2e_hook_" + secrets.token_hex(12)
        self.extra_tokens: list[str] = []
        self.jenkins_token = jenkins_token
        self.web_port = free_port()
        self.public_url = (public_url or f"http://127.0.0.1:{self.web_port}").rstrip("/")
        self.closed = False
        (workdir / "users.json").write_text(json.dumps(users, ensure_ascii=False, indent=1), encoding="utf-8")
        (workdir / "app.json").write_text(json.dumps(app_config or {}, ensure_ascii=False, indent=1),
                                          encoding="utf-8")
        self._extra_env = env or {}
        SERVICES.append(self)

    # ------------------------------------------------------------ 环境与部署

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    def env(self) -> dict[str, str]:
        """子进程的环境：外部系统都是测试的假服务器。"""
        env = base_env(self.workdir, self.database)
        env.update({
            "CELERY_BROKER_URL": self.redis.url,
            "TELEGRAM_BOT_TOKEN": self.telegram.token, "TELEGRAM_API_URL": self.telegram.url,
            "TELEGRAM_MODE": self.mode, "TELEGRAM_WEBHOOK_SECRET": self.webhook_secret,
            "JENKINS_URL": self.jenkins.url, "JENKINS_USER": "svc", "JENKINS_API_TOKEN": self.jenkins_token,
            "APPROVAL_API_TOKEN": self.api_token, "PUBLIC_BASE_URL": self.public_url,
            "WEB_HOST": "127.0.0.1", "WORKER_CONCURRENCY": "2", "LOG_LEVEL": "INFO",
            # 与 bin/run-all（make run）相同：worker 收到 SIGTERM 后有 25 秒做完手上的任务（热关闭）
            "WORKER_STOP_GRACE": "25",
            # 场景要快：扫描每 2 秒一次，发送节奏几乎不限（真实的 3 秒/群会让每条消息多等 3 秒）
            "SWEEP_INTERVAL_SECONDS": "2", "TELEGRAM_PACING_GROUP_SECONDS": "0.05",
            "TELEGRAM_PACING_PRIVATE_SECONDS": "0.05", "TELEGRAM_PACING_GLOBAL_SECONDS": "0.01",
        })
        env.update(self._extra_env)
        return env

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)
        with (self.logs_dir / "deploy.log").open("a", encoding="utf-8") as log:
            log.write(f"===== manage.py {' '.join(args)} → {done.returncode}\n{done.stdout}{done.stderr}")
        assert done.returncode == 0, f"manage.py {' '.join(args)} 失败：\n{done.stdout}\n{done.stderr}"
        return done

    def deploy(self, *, migrate: bool = True) -> Service:
        """部署步骤（docker/entrypoint.sh migrate）：迁移 + 加载配置。migrate=False：库是从迁移好的模板复制的。"""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if self.redis._process is None:
            self.redis.start()
        began = time.monotonic()
        if migrate:
            self.manage("migrate", "--noinput")
        self.manage("load_config")
        self.note(f"部署步骤用了 {time.monotonic() - began:.1f} 秒")
        return self

    def note(self, text: str) -> None:
        """harness 自己的记录（耗时、注入的故障），和进程日志放在一起。"""
        with (self.logs_dir / "harness.log").open("a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    def create_token(self, name: str, *scopes: str) -> str:
        """manage.py create_api_token（明文只在标准输出上出现一次）。"""
        args = ["create_api_token", name]
        for scope in scopes:
            args += ["--scope", scope]
        token = self.manage(*args).stdout.strip().splitlines()[-1].strip()
        self.extra_tokens.append(token)
        return token

    # ------------------------------------------------------------ 进程

    def add(self, kind: str, name: str | None = None, *, workers: int | None = None, port: int | None = None,
            env: dict[str, str] | None = None) -> Process:
        """登记一个进程（还不启动）。同一种进程的第二份起名如 web-2、worker-2。"""
        name = name or kind
        assert name not in self.processes, f"已有进程 {name}"
        extra_env = dict(env or {})
        extra_args: list[str] = []
        if kind == "web":
            port = port or (self.web_port if name == "web" else free_port())
            extra_env["WEB_PORT"] = str(port)
            if workers:
                extra_args += ["--workers", str(workers)]
        elif kind == "worker":
            # 两个 worker 的节点名不能相同（celery 会警告 DuplicateNodenameWarning）
            extra_args += ["-n", f"{name}@%h"]
        process = Process(name, kind, env={**self.env(), **extra_env}, extra_args=extra_args,
                          log_path=self.logs_dir / f"{name}.log", port=port)
        self.processes[name] = process
        return process

    def start(self, *names: str, wait: bool = True, **options: Any) -> None:
        """启动（必要时先登记）这些进程，并等它们就绪。名字里的种类取第一个“-”之前的部分（worker-2 → worker）。"""
        started: list[tuple[Process, int]] = []
        for name in names:
            process = self.processes.get(name) or self.add(name.split("-")[0], name, **options)
            started.append((process, self._ready_mark(process)))
            process.start()
        if wait:
            began = time.monotonic()
            for process, mark in started:
                self.wait_ready(process.name, mark)
                self.note(f"{process.name} 就绪（{time.monotonic() - began:.1f} 秒）")

    def __getitem__(self, name: str) -> Process:
        return self.processes[name]

    def stop(self, name: str, timeout: float = 30) -> int | None:
        return self.processes[name].stop(timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.processes[name].kill(sig)

    def restart_redis(self) -> None:
        """broker 重启且是空的（没有持久化）：排队中与延时重试中的任务都丢了。"""
        self.redis.restart()

    def close(self) -> None:
        """停止全部进程（同时 SIGTERM，各自等优雅退出），再停 broker。"""
        stoppers = [threading.Thread(target=p.stop) for p in self.processes.values()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        self.redis.stop()
        self.closed = True

    # ------------------------------------------------------------ 就绪

    @staticmethod
    def _ready_mark(process: Process) -> int:
        return len(process.log_text())

    def wait_ready(self, name: str, mark: int = 0, timeout: float = 60) -> None:
        process = self.processes[name]

        def ready() -> bool:
            if not process.alive:
                raise AssertionError(f"{name} 启动后退出了（{process.popen.returncode if process.popen else '?'}）："
                                     f"\n{process.log_text()[-3000:]}")
            if process.kind == "web":
                try:
                    http("GET", f"{process.url}/health", timeout=5)
                    return True
                except OSError:
                    return False
            text = process.log_text()[mark:]
            if process.kind == "bot":
                # 轮询：PTB 先开始 getUpdates 再记这一行；webhook：注册完成（假 Telegram 上已有 webhook）
                return "Application started" in text if self.mode == "polling" else self.telegram.webhook is not None
            if process.kind == "worker":
                return " ready." in text
            return "beat: Starting" in text

        wait_until(ready, timeout, f"{name} 就绪", interval=0.2)

    def wait_healthy(self, name: str = "web", timeout: float = 60) -> dict[str, Any]:
        """/health 为 200（数据库与 broker 正常）。"""
        def healthy() -> dict[str, Any] | None:
            try:
                reply = http("GET", f"{self.processes[name].url}/health", timeout=10)
            except OSError:
                return None
            return reply.json() if reply.status == 200 else None

        return wait_until(healthy, timeout, f"{name} 的 /health 为 200")

    # ------------------------------------------------------------ 请求

    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None, base: str | None = None,
            timeout: float = 15) -> Reply:
        """以 Jenkins（或给定 token）的身份调用 API；对外地址是 https 时按反向代理的方式声明原始协议。"""
        headers = {"Authorization": f"Bearer {token or self.api_token}"}
        if self.public_url.startswith("https://"):
            headers["X-Forwarded-Proto"] = "https"
        return http(method, (base or self.processes["web"].url) + path, body=body, headers=headers, timeout=timeout)

    def request_approval(self, job: str, number: int, *, base: str | None = None, **fields: Any) -> dict[str, Any]:
        """流水线申请审批（POST 等待接口，Jenkins 的字段写法），返回回答体。"""
        body = {"JOB_NAME": job, "BUILD_NUMBER": number, "BUILD_URL": f"{self.jenkins.url}job/{job}/{number}/",
                "version": "v1.0", "description": f"{job} #{number}", **fields}
        reply = self.api("POST", "/api/stage/approval/wait", body, base=base)
        assert reply.status == 201, (reply.status, reply.text)
        return reply.json()

    def status(self, public_id: str, *, base: str | None = None) -> dict[str, Any]:
        reply = self.api("GET", f"/api/status/{public_id}", base=base)
        assert reply.status == 200, (reply.status, reply.text)
        return reply.json()

    def wait_status(self, public_id: str, predicate: Callable[[dict[str, Any]], Any], timeout: float, what: str,
                    *, base: str | None = None) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            detail = self.status(public_id, base=base)
            return detail if predicate(detail) else None

        return wait_until(check, timeout, what, interval=0.3)

    # ------------------------------------------------------------ 数据库连接

    def db_connection_ids(self, name: str) -> list[int]:
        """进程 name（连同子进程）此刻连着本库的 MariaDB 会话 id：按客户端端口对上 processlist 的 host 列。"""
        ports = set()
        for pid in self.processes[name].pids():
            try:
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port == self.database.port:
                        ports.add(conn.laddr.port)
            except psutil.NoSuchProcess:
                continue
        return [cid for cid, host, _cmd in self.database.connections()
                if host.rsplit(":", 1)[-1].isdigit() and int(host.rsplit(":", 1)[-1]) in ports]

    def kill_db_connections(self, name: str) -> list[int]:
        """KILL 进程 name 的全部 MariaDB 连接（数据库重启、故障切换、wait_timeout 断开时进程看到的就是这样）。"""
        killed = []
        for cid in self.db_connection_ids(name):
            try:
                self.database.execute(f"KILL {cid}")
                killed.append(cid)
            except MySQLdb.OperationalError:
                pass  # 已经断开
        return killed

    # ------------------------------------------------------------ 日志

    def log_marks(self) -> dict[str, int]:
        """每个进程日志的当前长度：之后只检查这之后的内容。"""
        return {name: len(p.log_text()) for name, p in self.processes.items()}

    def check_logs(self, since: dict[str, int] | None = None, *, expected: dict[str, list[str]] | None = None,
                   allowed: dict[str, list[str]] | None = None) -> None:
        """日志里没有 ERROR/堆栈，除了场景故意造成的：expected（进程 → 必须出现的片段）与 allowed（可以出现的片段）
        所在的行及随后的堆栈；任何日志都不含 Bot token 与 API token。"""
        expected, allowed = expected or {}, allowed or {}
        unexpected: dict[str, list[str]] = {}
        for name, process in self.processes.items():
            text = process.log_text()[(since or {}).get(name, 0):]
            for fragment in expected.get(name, []):
                assert fragment in text, f"{name} 的日志里应当有「{fragment}」：\n{text[-3000:]}"
            bad = _problem_lines(text, [*expected.get(name, []), *allowed.get(name, [])])
            if bad:
                unexpected[name] = bad
        assert not unexpected, "进程日志里有意外的错误：\n" + "\n".join(
            f"[{name}] {line}" for name, lines in unexpected.items() for line in lines[:20])
        self.check_no_secrets()

    def secrets(self) -> list[str]:
        bot_secret = self.telegram.token.split(":", 1)[1]
        return [self.telegram.token, bot_secret, self.api_token, self.jenkins_token, self.webhook_secret,
                *self.extra_tokens]

    def check_no_secrets(self) -> None:
        for path in sorted(self.logs_dir.glob("*.log")):
            if path.name == "deploy.log":
                continue  # create_api_token 的标准输出就是 token 本身（部署步骤的输出，不是进程日志）
            text = path.read_text(encoding="utf-8", errors="replace")
            for value in self.secrets():
                assert value not in text, f"{path.name} 里出现了密钥（{value[:6]}…）"


def _problem_lines(text: str, allowed: list[str]) -> list[str]:
    """有问题的行，去掉 allowed 片段所在的行以及紧随其后的堆栈（到下一条正常日志为止）。"""
    bad: list[str] = []
    in_allowed_trace = False
    for line in text.splitlines():
        if any(fragment in line for fragment in allowed):
            in_allowed_trace = True
            continue
        if in_allowed_trace and (line.startswith((" ", "\t", "Traceback", "During handling", "The above"))
                                 or not line.strip() or re.match(r"^[\w.]+(Error|Exception|Warning)\b", line)):
            continue
        in_allowed_trace = False
        if PROBLEM_RE.search(line):
            bad.append(line)
    return bad
