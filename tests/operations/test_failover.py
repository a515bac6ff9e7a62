"""横向扩展与故障切换（H3）：真实进程。

- 两个 web 进程（webhook 模式）在同一个地址后面、两个 worker：同一个 update 不管送到哪个进程都只处理一次，
  Jenkins 只被继续一次；
- 两个 beat 对着同一个 MariaDB + Redis：只有持有租约的那个调度；提醒与告警都不重复；
  它被杀掉后，另一个在租约到期后接手；
- 轮询模式的机器人只能一个：后启动的那个遇到 409 Conflict 说明原因并以退出码 2 退出，先来的继续工作。
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from approvalbot.operations.models import Heartbeat, Lease
from approvals.models import Approval, ApprovalEvent, EventKind, Status, Vote
from telegram_bot.models import MessageKind, MessageState, ProcessedUpdate, TelegramMessage
from tests.fake_jenkins import FakeInput
from tests.telegram_bot.conftest import GROUP_ID

from .helpers import ROOT, VENV_BIN, free_port, process_env, wait_until

ADMIN_CHAT = -1009990002222
SENDING = "Scheduler: Sending due task"


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as handle:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _celery(*args: str) -> list[str]:
    return [str(VENV_BIN / "celery"), "-A", "approvalbot", *args, "--loglevel=INFO"]


SHARED_SERVICES = pytest.mark.skipif(
    connection.vendor != "mysql" or not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"),
    reason="多个进程共用同一个 MariaDB 与 Redis 才有意义（CI 的 MariaDB+Redis 轮次里运行；嵌入式 SQLite 是单机单份）")


def _shared_env(tmp_path: Path, fake_tg, **extra: str) -> dict[str, str]:
    """子进程连本测试的数据库（transaction=True：测试写的数据已提交）与同一个 Redis；Telegram 指向假服务器。"""
    import redis

    broker = os.environ["CELERY_BROKER_URL"]
    redis.Redis.from_url(broker).flushdb()  # 本测试专用的 Redis 库：上一轮留下的消息不算
    conf = connection.settings_dict
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    database = f"mysql://{conf['USER']}{password}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 3306}/{conf['NAME']}"
    return process_env(tmp_path, keep_services=True, DATABASE_URL=database, CELERY_BROKER_URL=broker,
                       TELEGRAM_BOT_TOKEN=fake_tg.token, TELEGRAM_API_URL=fake_tg.url, PYTHONUNBUFFERED="1",
                       TELEGRAM_PACING_GROUP_SECONDS="0", TELEGRAM_PACING_PRIVATE_SECONDS="0",
                       TELEGRAM_PACING_GLOBAL_SECONDS="0", PROMETHEUS_MULTIPROC_DIR=str(tmp_path), **extra)


WEBHOOK_SECRET = "failover-Secret_0123456789"


def _post_update(port: int, update: dict) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/telegram/webhook/", data=json.dumps(update).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET,
                 "Host": "localhost"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


@pytest.mark.slow
@pytest.mark.mysql
@SHARED_SERVICES
@pytest.mark.django_db(transaction=True)
def test_two_webhook_web_processes_and_two_workers_handle_each_update_once(
        tmp_path, fake_tg, tg_users, fake_jenkins, jenkins_server, make_approval, shop_rule):
    fake_jenkins.add_build("shop-backend", 777, inputs=[FakeInput(id="Release")])
    approval = make_approval(build_number=777, environment="production", input_id="Release")  # 两票
    message_id = TelegramMessage.objects.get(approval=approval, kind=MessageKind.APPROVAL).message_id
    env = _shared_env(tmp_path, fake_tg, TELEGRAM_MODE="webhook", TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
                      FAKE_JENKINS_TOKEN="svc-token")
    ports = [free_port(), free_port()]
    procs = [_start([sys.executable, "-m", "uvicorn", "approvalbot.asgi:application", "--host", "127.0.0.1",
                     "--port", str(port), "--no-access-log"], env, tmp_path / f"web{n}.log")
             for n, port in enumerate(ports)]
    procs += [_start(_celery("worker", "--concurrency=1", "-n", f"w{n}@%h"), env, tmp_path / f"worker{n}.log")
              for n in (1, 2)]
    try:
        for port in ports:
            wait_until(lambda port=port: _reachable(port), 45, f"web :{port} 启动")
        wait_until(lambda: Heartbeat.objects.filter(name__startswith="worker:").count() == 2, 45, "两个 worker 就绪")
        for person in ("approver", "approver2"):
            fake_tg.tap(tg_users[person], GROUP_ID, message_id, f"ap:{approval.public_id}:a")
            with fake_tg.cond:
                update = fake_tg._queue.pop().update  # webhook 模式：由测试 POST，不走 getUpdates
            # Telegram 没收到确认时重投：同一个 update 同时落到两个 web 进程上
            assert _post_to_all(ports, update) == [200, 200]
            wait_until(lambda u=update: fake_tg.answer(u["callback_query"]["id"]), 30, "按钮得到回答")
        wait_until(lambda: fake_jenkins.calls("POST", contains="/input/Release/proceed"), 45, "Jenkins input 被继续")
        wait_until(lambda: "已同意" in fake_tg.message(GROUP_ID, message_id).text, 30, "消息改成已同意")
        time.sleep(3)  # 再等等：不会有第二次继续
    finally:
        for proc in procs:
            _stop(proc)
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED
    assert Vote.objects.filter(approval=approval).count() == 2
    assert ProcessedUpdate.objects.count() == 2
    assert len(fake_tg.ok_calls("answerCallbackQuery")) == 2
    assert len(fake_jenkins.calls("POST", contains="/input/Release/proceed")) == 1
    workers = [(tmp_path / f"worker{n}.log").read_text(errors="replace") for n in (1, 2)]
    assert all("ready" in text for text in workers)


def _post_to_all(ports: list[int], update: dict) -> list[int]:
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda p=p: statuses.append(_post_update(p, update))) for p in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def _reachable(port: int) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/health",
                                                           headers={"Host": "localhost"}), timeout=3):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.mysql
@SHARED_SERVICES
@pytest.mark.django_db(transaction=True)
def test_two_beats_one_schedules_no_duplicates_and_the_standby_takes_over(
        tmp_path, fake_tg, make_approval, shop_rule):
    fake_tg.add_group(ADMIN_CHAT, "运维群")
    env = _shared_env(tmp_path, fake_tg,
                      TELEGRAM_ADMIN_CHAT_ID=str(ADMIN_CHAT), SWEEP_INTERVAL_SECONDS="5",
                      ALERT_CHECK_INTERVAL_SECONDS="5", ALERT_AFTER_MINUTES="0", BEAT_LEASE_SECONDS="6",
                      JENKINS_URL=f"http://127.0.0.1:{free_port()}/")  # 连不上：一条告警

    # 6 条待审批：3 条已到提醒时间，3 条在两个 beat 都在运行时陆续到期
    now = timezone.now()
    approvals = [make_approval(job_name=f"folder/shop-{i}") for i in range(6)]  # 不同任务：互不取代
    for i, approval in enumerate(approvals):
        Approval.objects.filter(pk=approval.pk).update(next_reminder_at=now + timedelta(seconds=max(0, i - 2) * 5))

    worker = _start(_celery("worker", "--concurrency=2"), env, tmp_path / "worker.log")
    beats: list[subprocess.Popen] = []
    try:
        wait_until(lambda: Heartbeat.objects.filter(name__startswith="worker:").exists(), 45, "worker 写出心跳")
        beats = [_start(_celery("beat"), env, tmp_path / f"beat{n}.log") for n in (1, 2)]
        wait_until(lambda: ApprovalEvent.objects.filter(kind=EventKind.REMINDER).count() >= 6, 45, "6 条提醒都到期")
        time.sleep(6)  # 再跑一个扫描周期：不会再多出提醒

        logs = [(tmp_path / f"beat{n}.log").read_text(errors="replace") for n in (1, 2)]
        leaders = [n for n, text in enumerate(logs) if SENDING in text]
        assert len(leaders) == 1, logs  # 只有一个 beat 在调度
        leader = beats[leaders[0]]
        assert Lease.objects.get(name="beat").holder.split(":")[1] == str(leader.pid)

        # 杀掉调度的那个（不给它放开租约的机会）：待命的在租约到期后接手
        _stop(leader, signal.SIGKILL)
        standby_log = tmp_path / f"beat{2 - leaders[0]}.log"
        wait_until(lambda: SENDING in standby_log.read_text(errors="replace"), 30, "待命的 beat 接手调度")
        assert "开始调度周期任务" in standby_log.read_text(errors="replace")
        sent_before = ApprovalEvent.objects.filter(kind=EventKind.REMINDER).count()
        time.sleep(6)
        assert ApprovalEvent.objects.filter(kind=EventKind.REMINDER).count() == sent_before
    finally:
        for proc in (*beats, worker):
            _stop(proc)

    # 每条审批恰好一次提醒：一条历史、一行发件箱，且已发出
    per_approval = Counter(ApprovalEvent.objects.filter(kind=EventKind.REMINDER).values_list("approval_id", flat=True))
    assert per_approval == {a.pk: 1 for a in approvals}
    reminders = TelegramMessage.objects.filter(kind=MessageKind.REMINDER)
    assert sorted(reminders.values_list("approval_id", flat=True)) == sorted(a.pk for a in approvals)
    assert set(reminders.values_list("state", flat=True)) == {MessageState.SENT}
    # 告警：连不上的 Jenkins 只告警一次（两个 beat、换了调度者也一样）
    alerts = [m.text for m in fake_tg.chat_messages(ADMIN_CHAT)]
    assert sum("Jenkins「default」" in text and "告警" in text for text in alerts) == 1, alerts
    firsts = [text.splitlines()[0] for text in alerts]
    assert len(firsts) == len(set(firsts)), alerts  # 没有任何一条重复


def _runbot(env: dict[str, str], log: Path) -> subprocess.Popen:
    return _start([sys.executable, "manage.py", "runbot", "--poll-timeout", "2"], env, log)


def test_second_polling_bot_exits_with_a_clear_message_and_the_first_keeps_polling(fake_tg, tmp_path):
    env = process_env(tmp_path, TELEGRAM_BOT_TOKEN=fake_tg.token, TELEGRAM_API_URL=fake_tg.url, PYTHONUNBUFFERED="1",
                      TELEGRAM_POLL_CONFLICT_GRACE_SECONDS="3")
    first = _runbot(env, tmp_path / "bot1.log")
    second = None
    try:
        wait_until(lambda: fake_tg.ok_calls("getUpdates"), 45, "第一个机器人开始轮询")
        time.sleep(3.5)  # 第一个已稳定运行
        second = _runbot(env, tmp_path / "bot2.log")
        assert second.wait(timeout=45) == 2
        text = (tmp_path / "bot2.log").read_text(errors="replace")
        assert "另一个机器人实例正在用同一个 TELEGRAM_BOT_TOKEN 轮询" in text and "只能运行一个实例" in text
        assert "ERROR" in text and fake_tg.token not in text
        polled = len(fake_tg.ok_calls("getUpdates"))
        wait_until(lambda: len(fake_tg.ok_calls("getUpdates")) > polled + 1, 20, "第一个机器人继续轮询")
        assert first.poll() is None
    finally:
        _stop(first)
        if second is not None:
            _stop(second)
    assert first.returncode == 0
    assert "继续轮询" in (tmp_path / "bot1.log").read_text(errors="replace")  # 它看到了冲突，但没有退出


def test_bot_started_while_another_instance_polls_elsewhere_exits_non_zero(fake_tg, tmp_path):
    fake_tg.other_instance_polling()
    env = process_env(tmp_path, TELEGRAM_BOT_TOKEN=fake_tg.token, TELEGRAM_API_URL=fake_tg.url, PYTHONUNBUFFERED="1")
    bot = _runbot(env, tmp_path / "bot.log")
    try:
        assert bot.wait(timeout=45) == 2
    finally:
        _stop(bot)
    text = (tmp_path / "bot.log").read_text(errors="replace")
    assert "409 Conflict" in text and "webhook 模式" in text
