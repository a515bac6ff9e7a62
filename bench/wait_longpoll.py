"""基准：一个 uvicorn web 进程同时挂 1000 个长轮询等待，然后把它们全部决定掉。

打印 web 进程的峰值 RSS，以及“决定提交 → 流水线收到回答”的 p50/p99。目标：RSS ≤ 400 MB，p99 ≤ 1 秒。

    .venv/bin/python bench/wait_longpoll.py                 # 临时 SQLite 文件（WAL）
    .venv/bin/python bench/wait_longpoll.py --database-url mysql://root@127.0.0.1:3306/bench_db

决定由本进程的另一个线程通过 approvals.services.approval_decide 逐条做出（与 Telegram/API 相同的路径），
每条记下提交时刻；客户端记下每个回答到达的时刻，两者之差就是延迟。
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def prepare(n: int) -> tuple[str, list[tuple[int, str]]]:
    """迁移、建审批人与 token、建 n 条待审批（不同任务名，互不取代）。"""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from accounts.models import Approver, Role
    from approvals.services import approval_create
    from jenkins_bridge.services import api_token_create

    role, _ = Role.objects.get_or_create(key="bench-admin", defaults={"name": "管理员", "is_admin": True})
    Approver.objects.get_or_create(username="bench-approver", defaults={"role": role, "display_name": "压测审批人"})
    _token, raw = api_token_create(name=f"bench-{int(time.time())}", scopes=["jenkins", "read"])
    approvals = []
    stamp = int(time.time())
    for i in range(n):
        approval, _created = approval_create(job_name=f"bench-{stamp}-{i}", build_number=1, environment="test",
                                             description="压测", requested_by="ci")
        approvals.append((approval.pk, approval.public_id))
    return raw, approvals


def decide_all(approvals: list[tuple[int, str]]) -> dict[str, float]:
    """在独立进程里逐条同意（与 Telegram/API 同一个服务函数），返回每条提交后的单调时钟时刻。"""
    import django

    django.setup()
    from accounts.models import Approver
    from approvals.services import approval_decide

    approver = Approver.objects.get(username="bench-approver")
    decided: dict[str, float] = {}
    for pk, public_id in approvals:
        approval_decide(approval=pk, approver=approver, decision="approve", reason="压测", channel="api")
        decided[public_id] = time.monotonic()  # CLOCK_MONOTONIC 全机一致，可跨进程比较
    return decided


def rss_of(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0


async def run(args: argparse.Namespace, env: dict[str, str], token: str, approvals: list[tuple[int, str]]) -> int:
    import httpx

    base = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "approvalbot.asgi:application", "--host", "127.0.0.1", "--port",
         str(args.port), "--no-access-log", "--log-level", "warning", "--backlog", "4096"],
        cwd=ROOT, env=env,
    )
    peak = {"rss": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak["rss"] = max(peak["rss"], rss_of(server.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=args.n + 50, max_keepalive_connections=args.n + 50)
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=120) as client:
            for _ in range(200):
                try:
                    if (await client.get("/metrics")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                print("web 进程没有启动", file=sys.stderr)
                return 2
            idle_rss = rss_of(server.pid)
            arrived: dict[str, float] = {}
            bodies: dict[str, dict] = {}

            async def wait_one(public_id: str) -> None:
                # 裸 asyncio 连接发 HTTP/1.1：httpx 的连接池在上千并发连接时自己就成了瓶颈，会把测量拖慢
                reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
                writer.write((f"GET /api/stage/approval/wait?id={public_id}&wait=60 HTTP/1.1\r\n"
                              f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                              "Connection: close\r\n\r\n").encode())
                await writer.drain()
                raw = await reader.read()
                arrived[public_id] = time.monotonic()
                writer.close()
                head, _sep, body = raw.partition(b"\r\n\r\n")
                status = int(head.split()[1])
                bodies[public_id] = json.loads(body) if status == 200 else {"http": status}

            started = time.monotonic()
            tasks = [asyncio.create_task(wait_one(pid)) for _pk, pid in approvals]
            # 等到服务端确实挂起了全部等待（/metrics 报告本进程的等待数）
            waiting = 0
            while time.monotonic() - started < 120:
                try:
                    text = (await client.get("/metrics")).text
                except httpx.TransportError:
                    await asyncio.sleep(0.2)  # 1000 个连接同时涌入时 /metrics 也可能排不上
                    continue
                line = next((x for x in text.splitlines() if x.startswith("approvalbot_longpoll_waiters ")), "0 0")
                waiting = int(float(line.split()[1]))
                if waiting >= args.n:
                    break
                await asyncio.sleep(0.2)
            ramp = time.monotonic() - started
            print(f"{waiting} 个等待已挂起（用时 {ramp:.1f} 秒），web 进程 RSS {rss_of(server.pid) / 2**20:.0f} MB")
            await asyncio.sleep(1.0)
            decided: dict[str, float] = {}

            # 决定放在另一个进程里做：同进程的线程会和客户端的事件循环争 GIL，把“收到回答”的时刻推迟
            decide_started = time.monotonic()
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(1) as pool:
                decided = await asyncio.to_thread(pool.apply, decide_all, (approvals,))
            decide_seconds = time.monotonic() - decide_started
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=90)
    finally:
        sampling.set()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    latencies = [arrived[pid] - decided[pid] for pid in decided if pid in arrived]
    ok = sum(1 for b in bodies.values() if b.get("status") == "approved")
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    print(f"数据库：{env.get('DATABASE_URL', '').split('@')[-1]}")
    print(f"并发等待：{args.n}；收到“approved”回答：{ok}；{args.n} 条决定用时 {decide_seconds:.1f} 秒")
    print(f"web 进程 RSS：空闲 {idle_rss / 2**20:.0f} MB，峰值 {peak['rss'] / 2**20:.0f} MB（目标 ≤ 400 MB）")
    print(f"决定 → 回答：p50 {p50 * 1000:.0f} ms，p99 {p99 * 1000:.0f} ms，最大 {max(latencies) * 1000:.0f} ms"
          f"（目标 p99 ≤ 1000 ms）")
    passed = ok == args.n and peak["rss"] <= 400 * 2**20 and p99 <= 1.0
    print("结果：" + ("达标" if passed else "未达标"))
    return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="并发等待数（默认 1000）")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--database-url", default="", help="默认：临时目录里的 SQLite 文件")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-longpoll-")
    env = {**os.environ, "APP_VAR_DIR": workdir, "APP_IGNORE_DOTENV": "1", "CELERY_BROKER_URL": "memory://",
           "DJANGO_SETTINGS_MODULE": "approvalbot.settings", "LOG_LEVEL": "WARNING",
           "DATABASE_URL": args.database_url or f"sqlite:///{workdir}/bench.sqlite3"}
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    token, approvals = prepare(args.n)  # ORM 是同步的：在事件循环之外准备数据
    from django.db import connections

    connections.close_all()
    return asyncio.run(run(args, env, token, approvals))


if __name__ == "__main__":
    sys.exit(main())
