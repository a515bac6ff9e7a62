"""长轮询：决定由另一个线程做出后 1 秒内返回；等待不占线程，所有等待者共用一个观察线程、一条查询。"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from django.db import connection

from approvals.services import approval_decide
from jenkins_bridge.api.longpoll import DecisionWatcher, watcher

WAIT = "/api/stage/approval/wait"


def _decide_later(pk: int, approver, delay: float, stamp: dict) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        try:
            approval_decide(approval=pk, approver=approver, decision="approve", reason="ok", channel="telegram")
            stamp["at"] = time.monotonic()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_long_poll_returns_within_a_second_of_a_decision_in_another_thread(api, make_approval, shop_rule,
                                                                           jenkins_server, people):
    approval = make_approval()
    client = api("jenkins")
    stamp: dict = {}
    thread = _decide_later(approval.pk, people["approver"], 0.5, stamp)
    started = time.monotonic()
    response = client.get(WAIT, {"id": approval.public_id, "wait": 10})
    returned = time.monotonic()
    thread.join()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "approved" and body["proceed"] is True and body["decided_by"] == "Bob"
    assert returned - stamp["at"] < 1.0
    assert returned - started < 3


@pytest.mark.django_db(transaction=True)
def test_long_poll_gives_up_after_wait_seconds_with_current_state(api, make_approval, shop_rule, jenkins_server):
    approval = make_approval()
    started = time.monotonic()
    response = api("jenkins").get(WAIT, {"id": approval.public_id, "wait": 0.6})
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert 0.5 <= elapsed < 2.5


@pytest.mark.django_db(transaction=True)
def test_long_poll_on_create_returns_201_when_decided_meanwhile(api, shop_rule, jenkins_server, people):
    from approvals.models import Approval

    client = api("jenkins")
    stamp: dict = {}

    def decide_when_created() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = Approval.objects.filter(job_name="shop-backend", build_number=555).first()
            if found:
                approval_decide(approval=found.pk, approver=people["approver"], decision="reject",
                                reason="不行", channel="telegram")
                stamp["at"] = time.monotonic()
                break
            time.sleep(0.05)
        connection.close()

    thread = threading.Thread(target=decide_when_created)
    thread.start()
    response = client.post(WAIT, {"JOB_NAME": "shop-backend", "BUILD_NUMBER": 555, "env": "test", "wait": 10},
                           format="json")
    thread.join()
    assert response.status_code == 201
    assert response.json()["status"] == "rejected" and response.json()["reason"] == "不行"


def test_one_query_per_interval_for_all_waiters():
    """200 个等待者：观察线程每个间隔只查一次（不是每个等待者一次），决定后全部被唤醒。"""
    decided: set[int] = set()
    calls: list[int] = []

    def fetch(ids: list[int]) -> dict[int, dict]:
        calls.append(len(ids))
        return {i: {"id": i, "status": "approved"} for i in ids if i in decided}

    local = DecisionWatcher(interval=0.1, fetch=fetch)

    async def scenario() -> list:
        waiters = [asyncio.create_task(local.wait(i, 5)) for i in range(200)]
        await asyncio.sleep(0.35)
        assert local.waiting == 200
        decided.update(range(200))
        return await asyncio.gather(*waiters)

    started = time.monotonic()
    results = asyncio.run(scenario())
    assert all(r["status"] == "approved" for r in results)
    assert time.monotonic() - started < 1.5
    assert len(calls) <= 8  # 约 0.45 秒 / 0.1 秒，而不是 200 次
    assert max(calls) == 200
    assert local.waiting == 0


def test_cancelled_waiter_is_forgotten():
    local = DecisionWatcher(interval=0.05, fetch=lambda ids: {})

    async def scenario() -> None:
        task = asyncio.create_task(local.wait(1, 30))
        await asyncio.sleep(0.1)
        assert local.waiting == 1
        task.cancel()  # 客户端断开：ASGI 处理器取消视图协程
        with pytest.raises(asyncio.CancelledError):
            await task
        assert local.waiting == 0

    asyncio.run(scenario())


def test_module_watcher_is_a_single_shared_instance():
    from jenkins_bridge.api import longpoll

    assert longpoll.watcher is watcher


def _scope(query: str, token: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": WAIT, "raw_path": WAIT.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
            "server": ("testserver", 80), "client": ("127.0.0.1", 40000)}


@pytest.mark.django_db(transaction=True)
def test_production_asgi_path_waits_outside_django(make_token, make_approval, shop_rule, jenkins_server, people):
    """uvicorn 跑的 approvalbot.asgi.application：等待在 ASGI 外层里，决定后 1 秒内回答。"""
    from asgiref.testing import ApplicationCommunicator

    from approvalbot.asgi import application

    approval = make_approval()
    token = make_token("jenkins")
    stamp: dict = {}

    async def scenario() -> tuple[dict, dict, float]:
        comm = ApplicationCommunicator(application, _scope(f"id={approval.public_id}&wait=10", token))
        await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        thread = _decide_later(approval.pk, people["approver"], 0.5, stamp)
        start = await comm.receive_output(timeout=15)
        body = await comm.receive_output(timeout=5)
        returned = time.monotonic()
        thread.join()
        return start, body, returned

    start, body, returned = asyncio.run(scenario())
    assert start["status"] == 200
    assert all(name.lower() != b"x-approvalbot-longpoll" for name, _v in start["headers"])
    reply = json.loads(body["body"])
    assert reply["status"] == "approved" and reply["id"] == approval.public_id
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()
    assert returned - stamp["at"] < 1.0


@pytest.mark.django_db(transaction=True)
def test_production_asgi_path_forgets_disconnected_client(make_token, make_approval, shop_rule, jenkins_server):
    from asgiref.testing import ApplicationCommunicator

    from approvalbot.asgi import application

    approval = make_approval()
    token = make_token("jenkins")

    async def scenario() -> None:
        comm = ApplicationCommunicator(application, _scope(f"id={approval.public_id}&wait=30", token))
        await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        for _ in range(100):
            if watcher.waiting:
                break
            await asyncio.sleep(0.05)
        assert watcher.waiting == 1
        await comm.send_input({"type": "http.disconnect"})
        await comm.wait(timeout=5)
        assert watcher.waiting == 0

    asyncio.run(scenario())
