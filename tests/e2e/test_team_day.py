"""一个团队的一天：四个真进程（web、bot 长轮询、worker、beat）从早到晚只起一次，按顺序演下面的场景。

流水线（测试）用 HTTP 申请审批，审批人在假 Telegram 的群里点按钮、发命令，worker 继续/中止假 Jenkins、改消息、
发通知；每个场景结束时各进程日志里没有 ERROR/堆栈，也没有任何 token。
开头就申请一条 1 分钟超时的审批，它在别的场景进行时到期，最后检查超时的处理。
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.fake_jenkins import FakeInput

from .deployments import Fakes, requires_services
from .harness import Service
from .infra import http, wait_until
from .team import GROUP, USERS, Team, buttons, links

pytestmark = [pytest.mark.slow, requires_services]

PROCESSES = ("web", "bot", "worker", "beat")


class Day:
    def __init__(self, service: Service, fakes: Fakes, team: Team) -> None:
        self.service = service
        self.telegram = fakes.telegram
        self.jenkins = fakes.jenkins
        self.team = team
        self.timeout_id = ""

    def pipeline(self, job: str, number: int, *, input_id: str | None = "release", **fields: Any) -> dict[str, Any]:
        """Jenkins 上有这次构建（input 模式时停在 input 'Release'），流水线申请审批。"""
        self.jenkins.add_build(job, number, inputs=[FakeInput(id="Release")] if input_id else [])
        if input_id:
            fields["input_id"] = input_id
        return self.service.request_approval(job, number, **fields)

    def posts(self, fragment: str) -> int:
        return len(self.jenkins.calls("POST", contains=fragment))


@pytest.fixture(scope="module")
def day(module_fakes, module_deployments) -> Day:
    team = Team(module_fakes.telegram)
    service = module_deployments.new(module_fakes, users=USERS, start=PROCESSES)
    team_day = Day(service, module_fakes, team)
    team_day.timeout_id = team_day.pipeline("nightly-report", 900, environment="staging", timeout_minutes=1)["id"]
    return team_day


@pytest.fixture
def marks(day: Day) -> dict[str, int]:
    """场景开始时各进程日志的位置：场景结束时只检查这之后的部分。"""
    return day.service.log_marks()


def test_input_mode_outsider_refused_then_approved_resumed_edited_and_result_announced(day: Day, marks):
    service, team = day.service, day.team
    reply = day.pipeline("shop-backend", 101, environment="staging", version="v2.3.0",
                         description="修复支付回调 🚀 <b>不是标签</b>", BUILD_USER_ID="dave")
    assert (reply["status"], reply["proceed"], reply["required_approvals"]) == ("pending", False, 1)
    public_id = reply["id"]

    # worker 把带按钮的审批消息发到项目群；用户写的内容原样显示（被转义，不是 HTML）
    message = team.announced(public_id)
    assert "修复支付回调 🚀 <b>不是标签</b>" in message.text
    assert buttons(message) == [f"ap:{public_id}:a", f"ap:{public_id}:r"]

    # 局外人点「同意」：弹窗说明原因，什么都没变
    refused = team.tap("mallory", message, f"ap:{public_id}:a")
    assert refused["show_alert"] is True
    assert "只允许以下人员审批" in refused["text"] and "Bob" in refused["text"]
    assert service.status(public_id)["status"] == "pending"
    assert day.posts("/input/") == 0
    assert team.current(message).history == [] and buttons(team.current(message))

    # 审批人点「同意」：Jenkins 的 input 被继续一次，消息改成结果、按钮移除
    answer = team.tap("bob", message, f"ap:{public_id}:a")
    assert answer["show_alert"] is False and "已同意发布" in answer["text"]
    wait_until(lambda: day.posts("/job/shop-backend/101/input/Release/proceed"), 30, "Jenkins input 被继续")
    edited = team.edited(message, "已同意发布")
    assert not edited.buttons and "Bob" in edited.text
    detail = service.wait_status(public_id, lambda d: d["jenkins"]["state"] == "done", 30, "Jenkins 操作记为完成")
    assert (detail["status"], detail["proceed"], detail["decided_by"]) == ("approved", True, "Bob")
    assert [v["decision"] for v in detail["votes"]] == ["approve"]

    # 构建结束：结果回复在审批消息下
    day.jenkins.finish("shop-backend", 101)
    result = service.api("POST", "/api/build/result", {"JOB_NAME": "shop-backend", "BUILD_NUMBER": 101,
                                                       "result": "SUCCESS", "duration": 65000})
    assert result.status in (200, 201), result.text
    notice = wait_until(lambda: team.notices(message, "SUCCESS"), 30, "构建结果通知")[0]
    assert public_id in notice.text and "v2.3.0" in notice.text

    time.sleep(2)  # 再等一轮扫描：没有重复的继续、重复的通知或多余的编辑
    assert day.posts("/input/Release/proceed") == 1
    assert len(team.notices(message, "SUCCESS")) == 1
    assert len(team.current(message).history) == 1
    service.check_logs(since=marks)


def test_reject_by_command_with_reason(day: Day, marks):
    service, team = day.service, day.team
    public_id = day.pipeline("shop-backend", 102, environment="staging")["id"]
    message = team.announced(public_id)

    command = team.say("bob", f"/reject {public_id} 数据库迁移未评审")
    assert f"已拒绝发布 {public_id}" in team.reply_to(command).text

    wait_until(lambda: day.posts("/job/shop-backend/102/input/Release/abort"), 30, "Jenkins input 被中止")
    edited = team.edited(message, "已拒绝发布")
    assert "数据库迁移未评审" in edited.text and not edited.buttons
    waited = service.api("GET", f"/api/stage/approval/wait?id={public_id}&wait=5")
    assert waited.status == 200
    assert (waited.json()["status"], waited.json()["proceed"], waited.json()["reason"]) == (
        "rejected", False, "数据库迁移未评审")
    assert day.posts("/job/shop-backend/102/input/") == 1
    service.check_logs(since=marks)


def test_webhook_resume_mode_posts_the_decision_to_the_pipeline(day: Day, marks):
    service, team = day.service, day.team
    hook = day.jenkins.register_webhook("e2e-hook-103")
    public_id = day.pipeline("shop-backend", 103, input_id=None, environment="staging", callback_url=hook)["id"]
    message = team.announced(public_id)

    team.tap("bob", message, f"ap:{public_id}:a")
    posted = wait_until(lambda: day.jenkins.webhook_posts.get("e2e-hook-103"), 30, "决定 POST 到流水线的回调")
    assert posted[0]["id"] == public_id and posted[0]["approved"] is True and posted[0]["status"] == "approved"
    team.edited(message, "已同意发布")
    service.wait_status(public_id, lambda d: d["jenkins"]["state"] == "done", 30, "回调记为完成")
    assert len(day.jenkins.webhook_posts["e2e-hook-103"]) == 1
    service.check_logs(since=marks)


def test_long_poll_answers_as_soon_as_the_decision_is_made(day: Day, marks):
    service, team = day.service, day.team
    public_id = day.pipeline("shop-backend", 104, input_id=None, environment="staging")["id"]
    team.announced(public_id)
    replies: list[Any] = []

    def pipeline_waits() -> None:
        started = time.monotonic()
        replies.append(service.api("GET", f"/api/stage/approval/wait?id={public_id}&wait=40", timeout=60))
        replies.append(time.monotonic() - started)

    waiter = threading.Thread(target=pipeline_waits)
    waiter.start()
    time.sleep(1.5)
    assert waiter.is_alive(), "等待接口应当挂着，直到有结果"
    decided_at = time.monotonic()
    team.reply_to(team.say("bob", f"/approve {public_id} 已核对变更单"))
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    reply, waited = replies
    assert reply.status == 200 and reply.json()["status"] == "approved" and reply.json()["proceed"] is True
    assert time.monotonic() - decided_at < 5 and waited < 20
    service.check_logs(since=marks)


def test_two_of_two_in_production(day: Day, marks):
    service, team = day.service, day.team
    reply = day.pipeline("shop-backend", 105, environment="生产", version="v3.0.0")
    assert reply["required_approvals"] == 2
    public_id = reply["id"]
    message = team.announced(public_id)
    assert "生产" in message.text

    first = team.tap("bob", message, f"ap:{public_id}:a")
    assert "1/2" in first["text"]
    counted = team.edited(message, "1/2")
    assert buttons(counted), "还差一票：按钮仍在"
    again = team.tap("bob", message, f"ap:{public_id}:a")
    assert again["show_alert"] is True, "同一人不能投两票"
    assert service.status(public_id)["approvals_received"] == 1
    assert day.posts("/job/shop-backend/105/") == 0

    team.tap("erin", message, f"ap:{public_id}:a")
    wait_until(lambda: day.posts("/job/shop-backend/105/input/Release/proceed"), 30, "两票齐了才继续 Jenkins")
    final = team.edited(message, "已同意发布")
    assert not final.buttons
    detail = service.status(public_id)
    assert detail["status"] == "approved" and sorted(v["approver"] for v in detail["votes"]) == ["bob", "erin"]
    assert day.posts("/job/shop-backend/105/input/") == 1
    service.check_logs(since=marks)


def test_requester_cannot_approve_own_build(day: Day, marks):
    service, team = day.service, day.team
    public_id = day.pipeline("billing", 106, environment="staging", BUILD_USER_ID="bob")["id"]
    message = team.announced(public_id)

    refused = team.tap("bob", message, f"ap:{public_id}:a")
    assert refused["show_alert"] is True and "发起人" in refused["text"]
    assert service.status(public_id)["status"] == "pending"

    team.tap("erin", message, f"ap:{public_id}:a")
    team.edited(message, "已同意发布")
    wait_until(lambda: day.posts("/job/billing/106/input/Release/proceed"), 30, "Jenkins input 被继续")
    assert service.status(public_id)["decided_by"] == "Erin"
    service.check_logs(since=marks)


def test_log_page_opens_through_the_signed_link(day: Day, marks):
    service, team = day.service, day.team
    public_id = day.pipeline("shop-backend", 107, environment="staging")["id"]
    day.jenkins.build("shop-backend", 107).console += "[Pipeline] { (Deploy)\n部署到 staging：完成 ✅\n"
    message = team.announced(public_id)
    url = links(message)["构建日志"]
    assert url.startswith(f"{service.public_url}/logs/{public_id}?t=")

    page = http("GET", url)
    assert page.status == 200 and page.content_type.startswith("text/html")
    assert "部署到 staging：完成 ✅" in page.text

    token = url.split("?t=", 1)[1]
    tail = http("GET", f"{service.public_url}/logs/{public_id}/tail?t={token}&offset=0")
    assert tail.status == 200 and "部署到 staging" in tail.json()["text"]
    # 签名不对或没有签名：拒绝，并说明怎么办
    for bad in (f"{service.public_url}/logs/{public_id}?t={token[:-2]}xx", f"{service.public_url}/logs/{public_id}"):
        denied = http("GET", bad)
        assert denied.status == 403 and "链接无效或已过期" in denied.text
    service.check_logs(since=marks)


def test_timeout_with_the_reject_policy_aborts_the_input_and_tells_the_group(day: Day, marks):
    service, team = day.service, day.team
    public_id = day.timeout_id
    message = team.announced(public_id)
    detail = service.wait_status(public_id, lambda d: d["status"] == "timeout", 100, "审批超时（1 分钟）")
    assert detail["proceed"] is False

    wait_until(lambda: day.posts("/job/nightly-report/900/input/Release/abort"), 30, "超时中止 Jenkins 的 input")
    timed_out = team.edited(message, "审批已超时")
    assert not timed_out.buttons
    notice = wait_until(lambda: team.notices(message, "超时即拒绝"), 30, "超时通知回复在审批消息下")[0]
    assert public_id in notice.text
    time.sleep(4)  # 再过两轮扫描：不会第二次中止或第二次通知
    assert day.posts("/job/nightly-report/900/input/") == 1
    assert len(team.notices(message, "超时即拒绝")) == 1
    service.check_logs(since=marks)


def test_the_day_ends_with_a_graceful_stop_and_clean_logs(day: Day):
    service = day.service
    # 一整天里每条审批消息只发了一次
    announced = [m for m in day.telegram.chat_messages(GROUP) if "发布审批" in m.text
                 and m.message.get("reply_to_message") is None]
    ids = [m.text.split("·", 1)[1].split()[0] for m in announced]
    assert len(ids) == len(set(ids)) == 8, ids
    service.close()
    for name, process in service.processes.items():
        assert process.graceful, (name, process.popen and process.popen.returncode, process.log_text()[-2000:])
    service.check_logs()
