"""故障下的整套系统：每个测试一套新进程、新库、新的假 Telegram/Jenkins（故障不会漏到别的测试里）。

- Jenkins 在决定时宕机、随后恢复：只继续一次；Jenkins 处理了请求但回答丢了（超时）：重试时不再继续第二次；
- Telegram 一阵子回 429（带 retry_after）和 5xx：消息一条不丢、一条不重；
- 横向扩展：两个 webhook 模式的 web 进程在同一个地址后面（测试里的轮询反向代理）、两个 worker：
  每个决定只做一次（Telegram 重投同一个 update 也一样），每条消息只改一次；
- web 进程的数据库连接被 KILL：请求干净地失败（JSON 错误，没有 HTML 500，不会挂住），不重启就恢复；
  等到时间的长轮询、检查途中断开的 /health 也一样；
- worker 在执行 Jenkins 操作途中被 kill -9、Redis 重启后是空的：重启后一分钟内补做，只做一次。
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.fake_jenkins import FakeInput

from .deployments import Deployments, Fakes, requires_services
from .harness import Service
from .infra import Reply, RoundRobinProxy, http, wait_until
from .team import GROUP, USERS, Team, buttons

pytestmark = [pytest.mark.slow, requires_services]


def pipeline(service: Service, job: str, number: int, *, base: str | None = None, input_id: bool = True,
             **fields: Any) -> str:
    """Jenkins 上停在 input 'Release' 的构建申请审批，返回审批编号。"""
    service.jenkins.add_build(job, number, inputs=[FakeInput(id="Release")] if input_id else [])
    if input_id:
        fields["input_id"] = "release"
    return service.request_approval(job, number, base=base, environment="staging", **fields)["id"]


def proceeds(fakes: Fakes, job: str, number: int) -> int:
    return len(fakes.jenkins.calls("POST", contains=f"/job/{job}/{number}/input/Release/proceed"))


# ---------------------------------------------------------------- Jenkins


def test_jenkins_down_during_a_decision_resumes_exactly_once_when_back(fakes: Fakes, deployments: Deployments):
    team = Team(fakes.telegram)
    # 客户端超时 2 秒：下面“回答丢了”的那一段不必等 10 秒
    service = deployments.new(fakes, users=USERS, start=("web", "bot", "worker"),
                              env={"JENKINS_TIMEOUT_SECONDS": "2"})
    marks = service.log_marks()

    # 1) 决定时 Jenkins 连不上：记下暂时失败，恢复后由重试继续，只继续一次
    first = pipeline(service, "shop-backend", 201)
    message = team.announced(first)
    fakes.jenkins.down()
    service.note("Jenkins 宕机")
    team.tap("bob", message, f"ap:{first}:a")
    failing = service.wait_status(first, lambda d: d["jenkins"]["attempts"] >= 1, 30, "第一次继续 Jenkins 失败")
    assert failing["status"] == "approved" and failing["jenkins"]["state"] == "pending"
    assert "连" in failing["jenkins"]["error"] or "Jenkins" in failing["jenkins"]["error"]
    time.sleep(2)
    fakes.jenkins.up()
    service.note("Jenkins 恢复")
    done = service.wait_status(first, lambda d: d["jenkins"]["state"] == "done", 60, "Jenkins 恢复后继续了 input")
    assert done["jenkins"]["error"] == ""
    assert not fakes.jenkins.build("shop-backend", 201).inputs
    edited = team.edited(message, "已同意发布")
    assert "⚠️" not in edited.text, "暂时失败不该作为错误显示在群里"

    # 2) Jenkins 处理了 proceed，但回答在路上丢了（客户端超时）：重试时发现 input 已不在等待，不再继续第二次
    second = pipeline(service, "shop-backend", 202)
    message2 = team.announced(second)
    fakes.jenkins.delay, fakes.jenkins.delay_on = 3.0, "/202/input/Release/proceed"
    team.tap("bob", message2, f"ap:{second}:a")
    done2 = service.wait_status(second, lambda d: d["jenkins"]["state"] == "done", 60, "超时之后的重试记为完成")
    fakes.jenkins.delay = 0.0
    assert done2["jenkins"]["attempts"] >= 2
    team.edited(message2, "已同意发布")

    time.sleep(3)
    assert proceeds(fakes, "shop-backend", 201) == 1
    assert proceeds(fakes, "shop-backend", 202) == 1
    service.check_logs(since=marks)


# ---------------------------------------------------------------- Telegram


def test_telegram_429_and_5xx_for_a_while_lose_nothing_and_send_nothing_twice(fakes: Fakes,
                                                                              deployments: Deployments):
    team = Team(fakes.telegram)
    telegram = fakes.telegram
    service = deployments.new(fakes, users=USERS, start=("web", "bot", "worker", "beat"))
    marks = service.log_marks()

    # 一阵子：发送先被限流、再遇到网关错误；编辑也一样
    telegram.rate_limit("sendMessage", retry_after=2, times=3)
    telegram.server_error("sendMessage", times=3)
    telegram.rate_limit("editMessageText", retry_after=1, times=2)
    telegram.server_error("editMessageText", times=2)
    jobs = [f"fleet-{n}" for n in range(1, 5)]
    ids = [pipeline(service, job, 300 + n) for n, job in enumerate(jobs)]
    messages = [team.announced(public_id, timeout=90) for public_id in ids]
    assert all(buttons(m) for m in messages)

    for public_id, message in zip(ids, messages, strict=True):
        assert "已同意发布" in team.tap("bob", message, f"ap:{public_id}:a")["text"]
    for message in messages:
        assert not team.edited(message, "已同意发布", timeout=90).buttons

    # 构建结果：发送又遇到两次 5xx
    telegram.server_error("sendMessage", times=2)
    for n, job in enumerate(jobs):
        fakes.jenkins.finish(job, 300 + n)
        reply = service.api("POST", "/api/build/result", {"JOB_NAME": job, "BUILD_NUMBER": 300 + n,
                                                          "result": "SUCCESS", "duration": 1000})
        assert reply.status in (200, 201), reply.text
    for message in messages:
        wait_until(lambda m=message: team.notices(m, "SUCCESS"), 90, "构建结果通知")

    failed = [(c.method, c.status, c.response.get("description")) for c in telegram.calls if c.status != 200]
    assert sorted(s for _m, s, _d in failed) == [429] * 5 + [502] * 7, f"注入的故障都被遇到了，没有别的失败：{failed}"
    time.sleep(5)  # 再过几轮扫描与重试：不会补发第二份
    for public_id, message in zip(ids, messages, strict=True):
        copies = [m for m in telegram.chat_messages(GROUP) if public_id in m.text and "发布审批" in m.text
                  and m.message.get("reply_to_message") is None]
        assert len(copies) == 1, f"{public_id} 的审批消息发了 {len(copies)} 次"
        assert len(team.current(message).history) == 1, "每条审批消息只改一次"
        assert len(team.notices(message, "SUCCESS")) == 1
    for n, job in enumerate(jobs):
        assert proceeds(fakes, job, 300 + n) == 1
    service.check_logs(since=marks)


# ---------------------------------------------------------------- 横向扩展


def _deliver(url: str, update: dict[str, Any], secret: str) -> Reply:
    """扮演 Telegram：把 update POST 到 webhook。"""
    return http("POST", f"{url}/telegram/webhook/", body=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": secret, "X-Forwarded-Proto": "https"})


def test_scale_out_two_webhook_webs_and_two_workers_decide_once_and_edit_once(fakes: Fakes,
                                                                              deployments: Deployments):
    team = Team(fakes.telegram)
    telegram = fakes.telegram
    service = deployments.new(fakes, users=USERS, mode="webhook", public_url="https://approvals.e2e.test")
    # 第二个 web 自己又是 uvicorn --workers 2：同一个地址后面一共三个 Django 进程
    service.start("web", "worker", "worker-2", "beat", "bot")
    service.start("web-2", workers=2)
    proxy = RoundRobinProxy([service["web"].url, service["web-2"].url])
    try:
        marks = service.log_marks()
        assert telegram.webhook is not None and telegram.webhook["url"] == "https://approvals.e2e.test/telegram/webhook/"
        secret = telegram.webhook["secret_token"]

        jobs = [f"fleet-{n}" for n in range(1, 7)]
        ids = [pipeline(service, job, 400 + n, base=proxy.url) for n, job in enumerate(jobs)]
        messages = [team.announced(public_id) for public_id in ids]

        # 不是 Telegram（密钥不对）：403，什么都不做
        for public_id, message in zip(ids, messages, strict=True):
            telegram.tap(team.people["bob"], GROUP, message.message["message_id"], f"ap:{public_id}:a")
        updates = telegram.webhook_updates()
        assert len(updates) == len(ids)
        forged = _deliver(proxy.url, updates[0], "not-the-secret")
        assert forged.status == 403 and forged.json()["error"]["code"] == "forbidden"

        # 每个 update 经代理送一次，再直接送给另一个 web 进程一次（Telegram 没等到回答时会重投）
        for n, update in enumerate(updates):
            assert _deliver(proxy.url, update, secret).status == 200
            other = service["web-2"].url if n % 2 == 0 else service["web"].url
            assert _deliver(other, update, secret).status == 200
        answers = [wait_until(lambda u=u: telegram.answer(u["callback_query"]["id"]), 30, "按钮得到回答")
                   for u in updates]
        assert all("已同意发布" in a["text"] for a in answers)
        for message in messages:
            team.edited(message, "已同意发布")
        for public_id in ids:
            service.wait_status(public_id, lambda d: d["jenkins"]["state"] == "done", 30, "Jenkins 操作完成",
                                base=proxy.url)

        time.sleep(4)  # 两个 worker 的补发扫描、重复的刷新都过去之后再数
        assert set(proxy.served) == {service["web"].url, service["web-2"].url}
        for n, (public_id, message) in enumerate(zip(ids, messages, strict=True)):
            detail = service.status(public_id, base=proxy.url)
            assert [v["approver"] for v in detail["votes"]] == ["bob"]
            assert [e["kind"] for e in detail["events"]].count("approved") == 1, detail["events"]
            assert proceeds(fakes, jobs[n], 400 + n) == 1
            assert len(team.current(message).history) == 1, "每条消息只改一次"
        assert len(telegram.calls_to("answerCallbackQuery")) == len(ids), "重投的 update 没有被再处理一次"
        # 两个 worker 都干了活
        assert all("succeeded" in service[name].log_text()[marks[name]:] for name in ("worker", "worker-2"))
        service.check_logs(since=marks)
    finally:
        proxy.close()


# ---------------------------------------------------------------- 数据库连接断开


def _clean(reply: Reply, what: str) -> None:
    """一个回答要么成功，要么是统一形状的 JSON 错误；决不是 HTML（或纯文本）的错误页。"""
    assert reply.is_json, f"{what}：{reply.status} {reply.content_type} {reply.text[:300]}"
    if reply.status >= 400:
        error = reply.json().get("error")
        assert error and error.get("code") and error.get("message"), f"{what}：{reply.text[:300]}"


def _keep_killing(service: Service, stop: threading.Event, killed: list[int]) -> None:
    while not stop.is_set():
        killed.extend(service.kill_db_connections("web"))
        time.sleep(0.02)


def _long_poll(service: Service, public_id: str, seconds: int, replies: list[Reply]) -> None:
    replies.append(service.api("GET", f"/api/stage/approval/wait?id={public_id}&wait={seconds}", timeout=seconds + 15))


# 数据库连接断开时 web 进程可以记的错误（都是故意造成的）：观察线程的查询失败、API 的 500、Django 的请求日志
DB_DROP_ERRORS = ["长轮询观察线程查询失败", "API 未处理的异常", "Internal Server Error: /api/"]


def test_killed_database_connections_fail_requests_cleanly_and_recover_without_restart(fakes: Fakes,
                                                                                        deployments: Deployments):
    service = deployments.new(fakes, users=USERS, start=("web",))
    approver_token = service.create_token("e2e-approver", "approve", "read")
    marks = service.log_marks()
    failures: list[str] = []

    for round_number in range(3):
        public_id = pipeline(service, "fleet-1", 501 + round_number)
        long_poll: list[Reply] = []
        waiting = threading.Thread(target=_long_poll, args=(service, public_id, 30, long_poll))
        waiting.start()
        time.sleep(1)  # 长轮询已在等待：观察线程持有自己的连接

        # 几秒钟里 web 的连接一出现就被 KILL（数据库重启、故障切换），同时请求照常到达
        # （/health 在这时的回答见下面的测试）
        stop = threading.Event()
        killed: list[int] = []
        thread = threading.Thread(target=_keep_killing, args=(service, stop, killed))
        thread.start()
        deadline = time.monotonic() + 3
        try:
            number = 0
            while time.monotonic() < deadline:
                number += 1
                replies = {
                    "status": service.api("GET", f"/api/status/{public_id}", timeout=20),
                    "totals": service.api("GET", "/api/status", timeout=20),
                    "create": service.api("POST", "/api/stage/approval/wait", timeout=20, body={
                        "JOB_NAME": f"fleet-{10 + number}", "BUILD_NUMBER": 600 + round_number,
                        "environment": "staging"}),
                }
                for what, reply in replies.items():
                    _clean(reply, what)
                    if reply.status >= 400:
                        failures.append(f"{what} {reply.status} {reply.json()['error']['code']}")
        finally:
            stop.set()
            thread.join()
        service.note(f"第 {round_number + 1} 轮：KILL 了 web 的 {len(killed)} 个数据库连接")
        assert killed, "web 进程应当持有数据库连接"

        # 不重启就恢复：请求都成功，正在等的长轮询照样在决定时得到回答
        assert service.api("GET", f"/api/status/{public_id}").status == 200
        decided = service.api("POST", f"/api/approve/{public_id}", {"approver": "bob"}, token=approver_token)
        assert decided.status == 200, decided.text
        waiting.join(timeout=20)
        assert not waiting.is_alive(), "长轮询挂住了"
        assert long_poll[0].status == 200 and long_poll[0].json()["status"] == "approved"
        service.wait_healthy(timeout=10)
    service.note(f"断开期间失败的请求：{failures}")
    assert failures, "连接被 KILL 时应当有请求失败过（否则没测到“干净地失败”）"
    assert service["web"].starts == 1 and service["web"].alive
    service.check_logs(since=marks, expected={"web": ["长轮询观察线程查询失败"]}, allowed={"web": DB_DROP_ERRORS})


def test_long_poll_that_times_out_after_the_connection_dropped_still_answers_with_json(fakes: Fakes,
                                                                                      deployments: Deployments):
    service = deployments.new(fakes, users=USERS, start=("web",))
    public_id = pipeline(service, "fleet-1", 701)
    # 一个等到时间的长轮询：回答在 Django 请求之外生成（这时打开了那条连接）
    assert service.api("GET", f"/api/stage/approval/wait?id={public_id}&wait=1").status == 200
    assert service.kill_db_connections("web")
    replies = [service.api("GET", f"/api/stage/approval/wait?id={public_id}&wait=1", timeout=20) for _ in range(3)]
    for reply in replies:
        _clean(reply, "等到时间的长轮询")
    assert replies[-1].status == 200 and replies[-1].json()["status"] == "pending", "不重启就恢复"


def test_health_answers_json_when_the_connection_drops_during_the_check(fakes: Fakes, deployments: Deployments):
    service = deployments.new(fakes, users=USERS, start=("web",))
    # 第一条审批建起默认 Jenkins 服务器那一行：/health 对它的检查还没有缓存，要真的问 Jenkins
    pipeline(service, "fleet-1", 801)
    # Jenkins 慢（检查要 2 秒）：数据库那一项已经查过，连接在检查 Jenkins 时断开
    fakes.jenkins.delay = 2.0
    replies: list[Reply] = []
    probe = threading.Thread(target=lambda: replies.append(http("GET", f"{service['web'].url}/health", timeout=20)))
    probe.start()
    time.sleep(1)
    assert service.kill_db_connections("web")
    probe.join(timeout=20)
    # /health 的 503 是健康报告本身（status + 各组件），不是错误形状：断掉的那一项写明出了什么错
    assert replies[0].is_json, f"/health：{replies[0].status} {replies[0].content_type} {replies[0].text[:300]}"
    report = replies[0].json()
    assert replies[0].status == 503 and report["status"] == "error"
    assert any(c.get("status") == "error" for c in report["components"].values()), report
