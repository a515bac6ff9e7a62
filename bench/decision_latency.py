"""基准：按下「同意发布」到 Jenkins 收到 proceed 要多久。打印数字，不是测试。

    .venv/bin/python bench/decision_latency.py                      # 两种配置都跑：MariaDB + Redis、嵌入式默认
    .venv/bin/python bench/decision_latency.py --setup embedded --taps 100 --runs 1
    BENCH_MYSQL_URL=mysql://root@127.0.0.1:3306/ BENCH_REDIS_URL=redis://127.0.0.1:6379/1 …（默认即此）

真实的进程，与 Procfile 相同的命令（uvicorn、manage.py runbot、celery worker、celery beat），对着测试用的
假 Bot API 与假 Jenkins（真 HTTP，在本进程里）：每一轮依次创建 --taps 条审批（input 方式），等审批消息出现后
由“审批人”点按钮，量从点按（假 Bot API 把 update 交给长轮询）到假 Jenkins 收到 POST …/input/Release/proceedEmpty。
同一轮里还量：
- 基线：一次本机 HTTP 往返 + 同一数据库上一次写入并提交 + 一次 POST 到假 Jenkins（物理下限的近似）；
- 分段：各进程在 APPROVALBOT_TRACE=1 下写的打点（update 到达 bot、决定提交、worker 收到任务、任务开始），
  与假 Jenkins 记下的每个请求的时刻；
- 创建：POST /api/stage/approval/wait 的响应时间，以及创建 → sendMessage 到达假 Bot API。
每种配置跑 --runs 轮（每轮重新启动进程），打印各轮与中位数。节流间隔置 0：发消息的节奏不在被量的路径上。
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_jenkins import FakeInput, FakeJenkins  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402
from tests.operations.helpers import free_port, wait_until  # noqa: E402

GROUP = -1009000000001
API_TOKEN = "bench-api-token-0123456789abcdef"
TRACE_RE = re.compile(r"trace (\S+) (\S+) (\d+\.\d+)")


def progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Run:
    taps: list[float] = field(default_factory=list)  # 秒
    baseline: list[float] = field(default_factory=list)
    creates: list[float] = field(default_factory=list)
    create_to_send: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)

    def stage(self, name: str, seconds: float) -> None:
        self.stages.setdefault(name, []).append(seconds)


# ---------------------------------------------------------------- 进程


class Service:
    def __init__(self, setup: str, tmp: Path, telegram: FakeTelegram, jenkins: FakeJenkins) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "DJANGO_"))}
        env.update({
            "APP_VAR_DIR": str(tmp / "var"), "APP_IGNORE_DOTENV": "1", "APPROVALBOT_TRACE": "1",
            "USERS_CONFIG_FILE": str(tmp / "users.json"), "APP_CONFIG_FILE": str(tmp / "app.json"),
            "TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_API_URL": telegram.url,
            "JENKINS_URL": jenkins.url, "JENKINS_USER": "svc", "JENKINS_API_TOKEN": "svc-token",
            "APPROVAL_API_TOKEN": API_TOKEN, "PUBLIC_BASE_URL": self.base,
            "TELEGRAM_PACING_GROUP_SECONDS": "0", "TELEGRAM_PACING_PRIVATE_SECONDS": "0",
            "TELEGRAM_PACING_GLOBAL_SECONDS": "0", "SWEEP_INTERVAL_SECONDS": "30",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        })
        self.db_name = ""
        if setup == "redis":
            base = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
            self.db_name = f"bench_latency_{os.getpid()}"
            self._mysql(f"DROP DATABASE IF EXISTS `{self.db_name}`; CREATE DATABASE `{self.db_name}` "
                        "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci", base)
            env["DATABASE_URL"] = base.rstrip("/") + "/" + self.db_name
            env["CELERY_BROKER_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
            subprocess.run(["redis-cli", "-u", env["CELERY_BROKER_URL"], "FLUSHDB"], capture_output=True)
            self.mysql_base = base
        self.env = env
        users = {"users": {"bob": {"role": "运维负责人", "telegram_id": 2002, "telegram_username": "bob_ops",
                                   "name": "Bob"}},
                 "projects": {"bench": {"approvers": ["bob"], "chat_id": GROUP}}}
        (tmp / "users.json").write_text(json.dumps(users, ensure_ascii=False), encoding="utf-8")

    @staticmethod
    def _mysql(sql: str, url: str) -> None:
        parts = urlsplit(url)
        subprocess.run(["mysql", "-h", parts.hostname or "127.0.0.1", "-P", str(parts.port or 3306),
                        "-u", parts.username or "root", "-e", sql], check=True)

    def manage(self, *args: str) -> None:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=300)
        if done.returncode:
            raise SystemExit(done.stdout + done.stderr)

    def start(self) -> None:
        progress("迁移数据库")
        self.manage("migrate", "--noinput")
        self.manage("load_config")
        commands = {
            "web": [sys.executable, "-m", "uvicorn", "approvalbot.asgi:application", "--host", "127.0.0.1",
                    "--port", str(self.port), "--no-access-log"],
            "bot": [sys.executable, "manage.py", "runbot"],
            "worker": ["celery", "-A", "approvalbot", "worker", "--loglevel=INFO", "--concurrency=2"],
            "beat": ["celery", "-A", "approvalbot", "beat", "--loglevel=INFO"],
        }
        for name, command in commands.items():
            log = (self.tmp / f"{name}.log").open("w")
            self.procs[name] = subprocess.Popen(command, cwd=ROOT, env={**self.env, "APP_PROCESS": name},
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self._up(), 60, "web 启动", interval=0.2)
        progress("进程已启动")

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/health", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.db_name:
            self._mysql(f"DROP DATABASE IF EXISTS `{self.db_name}`", self.mysql_base)

    def traces(self) -> dict[tuple[str, str], float]:
        found: dict[tuple[str, str], float] = {}
        for name in self.procs:
            for match in TRACE_RE.finditer((self.tmp / f"{name}.log").read_text(errors="replace")):
                found.setdefault((match.group(1), match.group(2)), float(match.group(3)))
        return found

    def api(self, body: dict) -> tuple[int, dict, float]:
        request = urllib.request.Request(f"{self.base}/api/stage/approval/wait", data=json.dumps(body).encode(),
                                         method="POST", headers={"Authorization": f"Bearer {API_TOKEN}",
                                                                 "Content-Type": "application/json"})
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
            return response.status, payload, time.monotonic() - started


# ---------------------------------------------------------------- 基线


def baseline_once(service: Service, jenkins: FakeJenkins, conn, webhook_url: str) -> float:
    """一次本机 HTTP 往返（带认证 GET 假 Jenkins 的 api/json）+ 一次写入并提交 + 一次 POST（webhook-step 入口）。"""
    auth = "Basic " + base64.b64encode(b"svc:svc-token").decode()
    started = time.monotonic()
    with urllib.request.urlopen(urllib.request.Request(jenkins.url + "api/json", headers={"Authorization": auth}),
                                timeout=5) as response:
        response.read()
    conn.execute_commit()
    with urllib.request.urlopen(urllib.request.Request(webhook_url, data=b"{}", method="POST"), timeout=5) as response:
        response.read()
    return time.monotonic() - started


class Committer:
    """与被测服务同一个数据库：一张临时表上写一行并提交。"""

    def __init__(self, service: Service) -> None:
        self.service = service
        if service.db_name:
            import MySQLdb

            parts = urlsplit(service.env["DATABASE_URL"])
            self.conn = MySQLdb.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                                        db=service.db_name)
        else:
            import sqlite3

            self.conn = sqlite3.connect(str(service.tmp / "var" / "db.sqlite3"), timeout=20, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
        key = "BIGINT AUTO_INCREMENT PRIMARY KEY" if service.db_name else "INTEGER PRIMARY KEY"
        self.conn.cursor().execute(f"CREATE TABLE IF NOT EXISTS bench_baseline (id {key}, at DOUBLE)")

    def close(self) -> None:
        self.conn.close()  # 不关就拿着元数据锁，DROP DATABASE 会一直等

    def execute_commit(self) -> None:
        cur = self.conn.cursor()
        if self.service.db_name:
            cur.execute("INSERT INTO bench_baseline (at) VALUES (%s)", (time.time(),))
        else:
            cur.execute("BEGIN IMMEDIATE")
            cur.execute("INSERT INTO bench_baseline (at) VALUES (?)", (time.time(),))
        self.conn.commit() if self.service.db_name else cur.execute("COMMIT")


# ---------------------------------------------------------------- 一轮


def one_run(setup: str, taps: int) -> Run:
    telegram, jenkins = FakeTelegram().start(), FakeJenkins().start()
    telegram.add_group(GROUP, "基准群")
    bob = telegram.add_user(2002, "bob_ops", "Bob")
    clock_offset = time.time() - time.monotonic()
    run = Run()
    with tempfile.TemporaryDirectory(prefix=f"bench-latency-{setup}-") as tmp_name:
        service = Service(setup, Path(tmp_name), telegram, jenkins)
        closers: list = []
        try:
            service.start()
            committer = Committer(service)
            closers.append(committer.close)
            webhook_url = jenkins.register_webhook()
            ids: list[str] = []
            for n in range(1, taps + 1):
                jenkins.add_build("bench", n, inputs=[FakeInput(id="Release")])
                before = len(telegram.calls_to("sendMessage"))
                status, body, seconds = service.api({"JOB_NAME": "bench", "BUILD_NUMBER": n, "env": "test",
                                                     "input_id": "Release", "version": f"v{n}"})
                assert status == 201, body
                created_at = time.monotonic()
                run.creates.append(seconds)
                public_id = body["id"]
                ids.append(public_id)
                message = wait_until(lambda pid=public_id: next(
                    (m for m in telegram.chat_messages(GROUP) if pid in m.text and m.buttons), None), 30, "审批消息", interval=0.001)
                sent = wait_until(lambda pid=public_id, before=before: next(
                    (c for c in telegram.calls_to("sendMessage")[before:] if pid in str(c.params)), None), 5, "记录", interval=0.001)
                run.create_to_send.append(sent.at - created_at + seconds)
                tapped = time.monotonic()
                telegram.tap(bob, GROUP, message.message["message_id"], f"ap:{public_id}:a")
                proceed = wait_until(lambda n=n: next((r for r in jenkins.calls("POST", f"/job/bench/{n}/input/")),
                                                      None), 30, "Jenkins proceed", interval=0.001)
                run.taps.append(proceed.at - tapped)
                for label, call in _jenkins_calls(jenkins, n, tapped, proceed.at):
                    run.stage(f"jenkins {label}（距点按）", call.at - tapped)
                run.baseline.append(baseline_once(service, jenkins, committer, webhook_url))
                run.stage("_tapped", tapped + clock_offset)
            traces = service.traces()
            _stages_from_traces(run, ids, traces, service)
        except BaseException:
            traceback.print_exc()  # 收尾可能要等几十秒：先把原因打出来
            raise
        finally:
            progress("停止进程")
            for close in closers:
                close()
            service.stop()
            telegram.stop()
            jenkins.down()
    return run


def _jenkins_calls(jenkins: FakeJenkins, n: int, tapped: float, proceeded: float):
    """点按之后、proceed 到达之前（含）假 Jenkins 收到的请求：这一次继续用了哪几个调用。"""
    for call in jenkins.calls():
        if not tapped <= call.at <= proceeded:
            continue
        if f"/job/bench/{n}/" in call.path:
            yield f"{call.method} {call.path.split(f'/job/bench/{n}/', 1)[1].split('?')[0]}", call
        elif "crumbIssuer" in call.path:
            yield "GET crumbIssuer", call


def _stages_from_traces(run: Run, ids: list[str], traces: dict[tuple[str, str], float], service: Service) -> None:
    tapped = run.stages.pop("_tapped", [])
    pk_of = _pks(service, ids)
    for public_id, tap_at in zip(ids, tapped, strict=False):
        got = traces.get(("update_received", public_id))
        committed = traces.get(("decision_committed", public_id))
        received = traces.get(("task_received", f"pk:{pk_of.get(public_id)}"))
        started = traces.get(("task_started", public_id))
        points = [("点按 → bot 收到 update", tap_at, got), ("bot 收到 → 决定提交", got, committed),
                  ("决定提交 → worker 收到任务", committed, received), ("worker 收到 → 任务开始", received, started)]
        for name, a, b in points:
            if a is not None and b is not None:
                run.stage(name, b - a)


def _pks(service: Service, ids: list[str]) -> dict[str, int]:
    code = ("import json; from approvals.models import Approval; "
            f"print(json.dumps(dict(Approval.objects.filter(public_id__in={ids!r}).values_list('public_id', 'pk'))))")
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=service.env,
                          capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}


# ---------------------------------------------------------------- 输出


def ms(value: float) -> str:
    return f"{value * 1000:7.1f}"


def report(setup: str, runs: list[Run]) -> None:
    title = {"redis": "MariaDB + Redis", "embedded": "嵌入式默认（SQLite + 文件系统 broker）"}[setup]
    print(f"\n== {title}：{len(runs[0].taps)} 次点按 × {len(runs)} 轮 ==")
    print("轮次   p50     p90     p99     max   | 基线p50 | 比值 | 创建p50 创建p99 | 创建→发消息p50")
    rows = []
    for index, run in enumerate(runs, 1):
        p50, p90, p99, top = (percentile(run.taps, q) for q in (50, 90, 99, 100))
        base = statistics.median(run.baseline)
        rows.append((p50, p90, p99, top, base))
        print(f"{index:>3} {ms(p50)} {ms(p90)} {ms(p99)} {ms(top)} | {ms(base)} | {p50 / base:4.0f}× |"
              f" {ms(percentile(run.creates, 50))} {ms(percentile(run.creates, 99))} |"
              f" {ms(percentile(run.create_to_send, 50))}")
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(f"中位 {ms(med[0])} {ms(med[1])} {ms(med[2])} {ms(med[3])} | {ms(med[4])} | {med[0] / med[4]:4.0f}×"
          "   （毫秒）")
    print("分段（中位数，毫秒；各轮合并）：")
    stages: dict[str, list[float]] = {}
    for run in runs:
        for name, values in run.stages.items():
            stages.setdefault(name, []).extend(values)
    for name, values in sorted(stages.items(), key=lambda kv: statistics.median(kv[1])):
        print(f"  {name:<34} {ms(statistics.median(values))}  (p99 {ms(percentile(values, 99))})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", choices=["redis", "embedded", "both"], default="both")
    parser.add_argument("--taps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"机器：{os.cpu_count()} 核；{time.strftime('%Y-%m-%d %H:%M')}")
    for setup in (["redis", "embedded"] if args.setup == "both" else [args.setup]):
        report(setup, [one_run(setup, args.taps) for _ in range(args.runs)])


if __name__ == "__main__":
    main()
