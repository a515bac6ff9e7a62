"""worker 在继续 Jenkins 的途中被 kill -9：重启后一分钟内补做，只继续一次；Redis 同时重启成空的也一样。

恢复靠数据库里的租约与计划时间（approvals.actions），不靠 broker：kill -9 留下的未确认消息要等
visibility_timeout（一小时）才会重投，Redis 重启后排队与延时中的任务全部没了。恢复扫描按默认间隔运行。
"""

from __future__ import annotations

import time

import pytest

from .deployments import Deployments, Fakes, requires_services
from .infra import wait_until
from .team import USERS, Team
from .test_faults import pipeline

pytestmark = [pytest.mark.slow, requires_services]

RECOVERY_LIMIT_SECONDS = 60


def _tap_and_kill_mid_post(service, fakes: Fakes, team: Team, job: str, number: int, *, hold: float) -> str:
    """审批人同意；Jenkins 把 proceed 请求压住 hold 秒，请求到达时 kill -9 整个 worker。"""
    public_id = pipeline(service, job, number)
    message = team.announced(public_id)
    fakes.jenkins.delay, fakes.jenkins.delay_on = hold, f"/{number}/input/"
    team.tap("bob", message, f"ap:{public_id}:a")
    wait_until(lambda: fakes.jenkins.calls("POST", contains=f"/{number}/input/"), 30, "worker 发出了 proceed")
    service.kill("worker")
    service.note(f"worker 在继续 {public_id} 的途中被 kill -9")
    fakes.jenkins.delay = 0.0  # 之后的请求不再被压住（已压住的那个照旧）
    return public_id


def _wait_done(service, public_id: str, since: float) -> float:
    service.wait_status(public_id, lambda d: d["jenkins"]["state"] == "done", RECOVERY_LIMIT_SECONDS + 30,
                        "重启后补做了 Jenkins 操作")
    elapsed = time.monotonic() - since
    service.note(f"{public_id} 在重启后 {elapsed:.1f} 秒完成")
    return elapsed


def test_worker_killed_mid_resume_completes_once_within_a_minute_of_the_restart(fakes: Fakes,
                                                                               deployments: Deployments):
    team = Team(fakes.telegram)
    service = deployments.new(fakes, users=USERS, start=("web", "bot", "worker", "beat"))
    marks = service.log_marks()
    # Jenkins 在 worker 死后才处理完那个请求：补做时 input 已不在等待，不能再继续一次
    public_id = _tap_and_kill_mid_post(service, fakes, team, "shop-backend", 501, hold=5.0)
    time.sleep(1)
    restarted = time.monotonic()
    service.start("worker")
    elapsed = _wait_done(service, public_id, restarted)
    assert elapsed < RECOVERY_LIMIT_SECONDS, f"重启后 {elapsed:.0f} 秒才完成"
    assert len(fakes.jenkins.build("shop-backend", 501).submitted) == 1
    service.check_logs(since=marks)


def test_worker_killed_and_redis_back_empty_completes_once_within_a_minute(fakes: Fakes,
                                                                          deployments: Deployments):
    team = Team(fakes.telegram)
    service = deployments.new(fakes, users=USERS, start=("web", "bot", "worker", "beat"))
    marks = service.log_marks()
    # 被压住的请求一直没有被 Jenkins 处理：补做时要真的再发一次，而且只生效一次
    public_id = _tap_and_kill_mid_post(service, fakes, team, "shop-backend", 502, hold=300.0)
    service.restart_redis()
    service.note("Redis 重启，是空的")
    back = time.monotonic()
    service.start("worker")
    elapsed = _wait_done(service, public_id, back)
    assert elapsed < RECOVERY_LIMIT_SECONDS, f"Redis 回来后 {elapsed:.0f} 秒才完成"
    assert len(fakes.jenkins.build("shop-backend", 502).submitted) == 1
    # broker 断开的那几秒：各进程记下连接错误并重连（这正是场景造成的）
    redis = ["redis", "Redis", "Connection", "broker", "kombu"]
    service.check_logs(since=marks, allowed={"beat": redis, "web": redis, "bot": redis, "worker": redis})
