"""失败通知的日志末尾（B4）：不为了 30 行把几百 MB 的日志整段下载；日志查看器照旧从头完整增量读取。"""

from __future__ import annotations

import pytest

from approvals.models import BuildLog
from jenkins_bridge.logs import TAIL_BYTES, build_log_refresh, build_log_tail

pytestmark = pytest.mark.django_db


@pytest.fixture
def big_build(fake_jenkins):
    build = fake_jenkins.add_build("shop-backend", 7, building=False, result="FAILURE")
    build.console = "".join(f"[{i:06d}] 编译模块 module-{i} …… ok\n" for i in range(60_000))  # 约 3 MB
    build.console += "ERROR: 测试失败 ❌\nFinished: FAILURE\n"
    return build


def progressive_bytes(fake_jenkins) -> int:
    return sum(r.response_bytes for r in fake_jenkins.calls(contains="progressiveText"))


def test_failure_tail_transfers_only_the_end_of_a_large_log(jenkins_server, fake_jenkins, big_build):
    tail = build_log_tail(jenkins_server=jenkins_server, job_name="shop-backend", build_number=7, lines=30)
    assert tail == "\n".join(big_build.console.rstrip("\n").split("\n")[-30:])
    assert len(big_build.console.encode()) > 40 * TAIL_BYTES
    assert progressive_bytes(fake_jenkins) <= TAIL_BYTES
    [head] = fake_jenkins.calls("HEAD", "progressiveText")
    assert head.response_bytes == 0
    # 缺头的一段不存库：日志查看器以后仍从头完整读取
    assert not BuildLog.objects.exists()
    log = build_log_refresh(jenkins_server=jenkins_server, job_name="shop-backend", build_number=7)
    assert log.content == big_build.console and log.is_complete


def test_stored_log_is_continued_incrementally(jenkins_server, fake_jenkins, big_build):
    log = build_log_refresh(jenkins_server=jenkins_server, job_name="shop-backend", build_number=7)
    assert log.is_complete
    before = progressive_bytes(fake_jenkins)
    tail = build_log_tail(jenkins_server=jenkins_server, job_name="shop-backend", build_number=7, lines=2)
    assert tail == "ERROR: 测试失败 ❌\nFinished: FAILURE"
    assert progressive_bytes(fake_jenkins) == before  # 已读完的不再请求


def test_tail_falls_back_to_a_full_read_when_head_is_blocked(jenkins_server, fake_jenkins, big_build):
    fake_jenkins.fail_next(1, status=405, path_contains="progressiveText")  # 反向代理不放行 HEAD
    tail = build_log_tail(jenkins_server=jenkins_server, job_name="shop-backend", build_number=7, lines=2)
    assert tail == "ERROR: 测试失败 ❌\nFinished: FAILURE"


def test_short_log_is_read_whole_and_stored_as_before(jenkins_server, fake_jenkins):
    build = fake_jenkins.add_build("shop-backend", 8, building=False, result="FAILURE")
    build.console = "第一行\n第二行\n"
    assert build_log_tail(jenkins_server=jenkins_server, job_name="shop-backend", build_number=8) == "第一行\n第二行"
    log = BuildLog.objects.get()  # 整段都读到了：存下来，日志查看器直接用
    assert log.content == build.console and log.is_complete


def test_tail_is_empty_when_jenkins_is_down(jenkins_server, fake_jenkins):
    fake_jenkins.down()
    assert build_log_tail(jenkins_server=jenkins_server, job_name="shop-backend", build_number=9) == ""
