"""基准：提醒扫描与超时扫描，以及同一个群里 1000 条提醒经真实摘要任务发到限速的假 Bot API。打印数字，不是测试。

    .venv/bin/python bench/sweep.py                  # 临时目录里的 SQLite 文件（WAL，与嵌入式默认相同）
    DATABASE_URL=mysql://root@127.0.0.1:3306/ab_notices_bench .venv/bin/python bench/sweep.py
    .venv/bin/python bench/sweep.py --time-scale 10  # 把 20 条/分钟的窗口与各节流间隔同比缩短 10 倍，跑得快些

第一部分（--rows 条待审批，全部到期，分布在 10 个群）：
  1. 一次提醒扫描：认领、推进时间表、写历史、按群投递摘要任务（投递被记录下来，不经 broker）；
  2. 同一次扫描连同摘要任务一起执行（Celery eager），发送换成只记录的发送器：看渲染与摘要的成本；
  3. 一次超时扫描（投递同样被记录）。
  目标：≤ 2 秒、每 500 行 ≤ 10 条查询。
第二部分（--group 条提醒在同一个群）：假 Bot API 像真实服务器那样每群 20 条/分钟、超出回 429；
  内嵌一个真正的 Celery worker（内存 broker）执行提醒扫描投递的摘要任务，重试与接续都按倒计时进行。
  打印发出的消息数、最长一条的长度（Telegram 计法，≤ 4096）、429 的次数（目标 0）。

MySQL/MariaDB 的库名必须含 “bench”：脚本会删掉重建它。
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUP_ID = -1001234567890
CHATS = [-1001000000000 - i for i in range(1, 11)]


def prepare_database(url: str) -> None:
    """MySQL/MariaDB：删掉并重建基准专用库（名字里必须有 bench，防止误删正式库）。"""
    parts = urlsplit(url)
    if not parts.scheme.startswith("mysql"):
        return
    name = parts.path.lstrip("/")
    if "bench" not in name:
        sys.exit(f"拒绝运行：库名 {name!r} 不含 “bench”，脚本会删掉重建它")
    import MySQLdb

    conn = MySQLdb.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306, user=parts.username or "root",
                           passwd=parts.password or "")
    cur = conn.cursor()
    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()


def setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["APP_IGNORE_DOTENV"] = "1"
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvalbot.settings")
    from tests.fake_telegram import DEFAULT_TOKEN

    os.environ["TELEGRAM_BOT_TOKEN"] = DEFAULT_TOKEN
    import django

    django.setup()
    import logging

    from django.core.management import call_command

    logging.getLogger().setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)


# ---------------------------------------------------------------- 数据


def people_and_rule():
    from accounts.models import Approver, ProjectRule, Role

    role, _ = Role.objects.get_or_create(key="bench-ops", defaults={"name": "运维负责人"})
    people = [
        Approver.objects.get_or_create(username=f"bench-{i}", defaults={
            "role": role, "display_name": f"审批人{i}", "telegram_id": 7000 + i, "telegram_username": f"bench{i}",
        })[0]
        for i in range(4)
    ]
    rule, _ = ProjectRule.objects.get_or_create(project="bench-service", environment="",
                                                defaults={"patterns": ["bench-*"], "chat_id": GROUP_ID})
    rule.approvers.set(people[:3])
    rule.owners.set(people[3:])
    return people


def pending(n: int, *, prefix: str, chats: list[int]) -> list[int]:
    """n 条全部到期的待审批，每条都有一条已发出的审批消息（摘要里要链接回去）。"""
    from datetime import timedelta

    from django.utils import timezone

    from approvals.models import Approval
    from jenkins_bridge.models import JenkinsServer
    from telegram_bot.models import MessageKind, MessageState, TelegramMessage

    server = JenkinsServer.objects.default()
    now = timezone.now()
    Approval.objects.bulk_create([
        Approval(public_id=f"{prefix}{i:07d}", jenkins_server=server, job_name=f"bench-{prefix}-{i}", build_number=i,
                 project="bench-service", environment="production" if i % 3 == 0 else "test",
                 version=f"v3.{i % 97}.{i % 13}", description="基准", requested_by="ci",
                 expires_at=now + timedelta(minutes=5 + i % 120), next_reminder_at=now - timedelta(seconds=1),
                 chat_id=chats[i % len(chats)], required_approvals=1 + i % 2,
                 reminder_policy={"interval_minutes": 5, "backoff": 1.5, "max_count": 6},
                 timeout_policy="reject" if i % 2 else "mark")
        for i in range(n)
    ], batch_size=1000)
    rows = list(Approval.objects.filter(public_id__startswith=prefix).values_list("pk", "chat_id"))
    TelegramMessage.objects.bulk_create([
        TelegramMessage(approval_id=pk, kind=MessageKind.APPROVAL, dedupe_key=f"approval:{pk}", chat_id=chat,
                        message_id=index + 1, state=MessageState.SENT, shown_status="pending")
        for index, (pk, chat) in enumerate(rows)
    ], batch_size=1000)
    return [pk for pk, _chat in rows]


# ---------------------------------------------------------------- 计量


class Recorder:
    """替换 approvals.effects.enqueue_on_commit：提交后只记下要投递的任务，不经 broker。"""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def __call__(self, task_name: str, *args: object) -> None:
        from django.db import transaction

        transaction.on_commit(lambda: self.calls.append((task_name, args)))


class RecordingSender:
    """替换 TelegramSender：记录文字，不联网。"""

    def __init__(self, *args, **kwargs) -> None:
        pass

    messages: list[tuple[int, str]] = []

    def send_message(self, chat_id, text, **kwargs):
        from telegram_bot.sender import SentMessage

        RecordingSender.messages.append((chat_id, text))
        return SentMessage(chat_id=chat_id, message_id=len(RecordingSender.messages))


def measure(fn):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        started = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - started
    return value, elapsed, len(ctx.captured_queries)


def line(label: str, rows: int, elapsed: float, queries: int, extra: str = "") -> None:
    per500 = queries / max(rows, 1) * 500
    print(f"  {label:<44} {rows:>6} 行  {elapsed:7.3f} s  {queries:>5} 条查询（每 500 行 {per500:4.1f}）{extra}")


# ---------------------------------------------------------------- 第一部分


def part_sweeps(rows: int) -> None:
    from django.utils import timezone

    from approvalbot.celery import app
    from approvals import effects
    from approvals.models import Approval, Status
    from approvals.tasks import reminder_sweep_task, timeout_sweep_task
    from telegram_bot import tasks as telegram_tasks
    from telegram_bot.notices import common

    people_and_rule()
    pending(rows, prefix="S", chats=CHATS)
    print(f"第一部分：{rows} 条待审批全部到期，分布在 {len(CHATS)} 个群")

    recorder = Recorder()
    original = effects.enqueue_on_commit
    effects.enqueue_on_commit = recorder
    try:
        total, elapsed, queries = measure(reminder_sweep_task)
        digests = [c for c in recorder.calls if c[0] == effects.REMINDER_DIGEST_TASK]
        line("提醒扫描（投递被记录）", total, elapsed, queries, f"  摘要任务 {len(digests)} 个")

        Approval.objects.filter(status=Status.PENDING).update(next_reminder_at=timezone.now())
        effects.enqueue_on_commit = original
        app.conf.task_always_eager = True
        telegram_tasks.TelegramSender = RecordingSender
        RecordingSender.messages.clear()
        total, elapsed, queries = measure(reminder_sweep_task)
        texts = [t for _c, t in RecordingSender.messages]
        longest = max((common.visible_length(t) for t in texts), default=0)
        entities = max((common.entity_count(t) for t in texts), default=0)
        line("提醒扫描 + 摘要任务（eager，记录发送器）", total, elapsed, queries,
             f"  消息 {len(texts)} 条，最长 {longest} 字，最多 {entities} 个实体")
        app.conf.task_always_eager = False

        effects.enqueue_on_commit = recorder
        recorder.calls.clear()
        Approval.objects.filter(status=Status.PENDING).update(expires_at=timezone.now())
        total, elapsed, queries = measure(timeout_sweep_task)
        line("超时扫描（投递被记录）", total, elapsed, queries, f"  投递 {len(recorder.calls)} 个任务")
    finally:
        effects.enqueue_on_commit = original
        app.conf.task_always_eager = False


# ---------------------------------------------------------------- 第二部分


def part_group(n: int, scale: float) -> None:
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings
    from django.db import connections

    from approvalbot.celery import app
    from approvals.effects import REMINDER_DIGEST_TASK
    from approvals.tasks import reminder_sweep_task
    from telegram_bot import sender
    from telegram_bot import tasks as telegram_tasks
    from telegram_bot.models import MessageKind, MessageState, TelegramMessage
    from telegram_bot.notices import common, reminders
    from tests.fake_telegram import FakeTelegram

    telegram_tasks.TelegramSender = sender.TelegramSender
    window = 60.0 / scale
    fake = FakeTelegram().start()
    fake.add_group(GROUP_ID, "发布审批群")
    fake.limit_groups(20, window)
    settings.TELEGRAM_API_URL = fake.url
    settings.TELEGRAM_BOT_TOKEN = fake.token
    settings.TELEGRAM_PACING_GROUP_SECONDS = 3.2 / scale
    settings.TELEGRAM_PACING_PRIVATE_SECONDS = 1.0 / scale
    settings.TELEGRAM_MAX_INLINE_WAIT_SECONDS = 10.0 / scale
    reminders.DIGEST_TIME_BUDGET_SECONDS = 30.0 / scale

    ids = pending(n, prefix="G", chats=[GROUP_ID])
    print(f"第二部分：{n} 条提醒在同一个群，假 Bot API 每群 20 条/{window:g} 秒"
          f"（时间比例 1/{scale:g}），内嵌 Celery worker 执行摘要任务")
    runs = {"n": 0}

    from celery.signals import task_prerun

    def count(sender=None, **kwargs) -> None:
        if sender is not None and sender.name in (REMINDER_DIGEST_TASK, telegram_tasks.DELIVER_TASK):
            runs["n"] += 1

    task_prerun.connect(count, weak=False)
    app.conf.task_always_eager = False
    started = time.monotonic()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING"):
        claimed = reminder_sweep_task()
        deadline = started + 30 * 60 / scale + 120
        done = 0
        while time.monotonic() < deadline:
            done = TelegramMessage.objects.filter(approval_id__in=ids, kind=MessageKind.REMINDER,
                                                  state__in=[MessageState.SENT, MessageState.FAILED]).count()
            if done >= n:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
    connections.close_all()
    fake.stop()

    calls = fake.calls_to("sendMessage")
    ok = [c for c in calls if c.status == 200]
    limited = [c for c in calls if c.status == 429]
    texts = [str(c.params["text"]) for c in ok]
    failed = TelegramMessage.objects.filter(approval_id__in=ids, kind=MessageKind.REMINDER,
                                            state=MessageState.FAILED).count()
    print(f"  扫描认领 {claimed} 条；摘要任务执行 {runs['n']} 次（含按时间预算接续的）；用时 {elapsed:.1f} s")
    print(f"  发出消息 {len(ok)} 条；429 共 {len(limited)} 次；记录为已提醒 {done - failed} 条，失败 {failed} 条")
    print(f"  最长一条：{max(common.visible_length(t) for t in texts)} 字（Telegram 计法，上限 4096），"
          f"HTML 源码 {max(len(t) for t in texts)} 字符，实体最多 {max(common.entity_count(t) for t in texts)} 个")
    times = [c.at for c in ok]
    worst = max((sum(1 for t in times if s <= t < s + window) for s in times), default=0)
    print(f"  任意 {window:g} 秒窗口内最多发出 {worst} 条（限制 20）")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--group", type=int, default=1_000)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--skip-group", action="store_true", help="只跑第一部分")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="bench-sweep-")
    url = args.database_url or f"sqlite:///{tmp.name}/bench.sqlite3"
    prepare_database(url)
    setup(url)
    from django.db import connection

    print(f"数据库：{connection.vendor}（{connection.settings_dict['NAME']}）")
    part_sweeps(args.rows)
    if not args.skip_group:
        part_group(args.group, args.time_scale)
    tmp.cleanup()


if __name__ == "__main__":
    main()
