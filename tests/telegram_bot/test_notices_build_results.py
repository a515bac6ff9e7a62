"""构建结果通知（B3–B8）：每种结果、有无审批、失败时的日志末尾（已存的或从假 Jenkins 读取），只发一次。"""

from __future__ import annotations

import pytest

from approvals.builds import build_result_record
from approvals.models import Approval, BuildLog, BuildResult
from approvals.services import approval_decide
from jenkins_bridge.models import JenkinsServer
from telegram_bot.messages import MAX_MESSAGE_LENGTH, tg_length
from telegram_bot.models import MessageKind, MessageState, TelegramMessage
from telegram_bot.tasks import build_result_notify_task
from tests.fake_jenkins import FakeJenkins
from tests.telegram_bot.conftest import GROUP_ID

pytestmark = pytest.mark.django_db

BUILD_URL = "https://ci.example.com/job/shop-backend/{n}/"
EXPECTED = {
    "SUCCESS": ("✅", "构建成功"),
    "FAILURE": ("❌", "构建失败"),
    "ABORTED": ("⚪", "构建已中止"),
    "NOT_BUILT": ("⚪", "未构建"),
    "UNSTABLE": ("⚠️", "构建不稳定"),
}
WITH_TAIL = {"FAILURE", "UNSTABLE"}
LOG = "".join(f"step {i}: compiling module {i}\n" for i in range(1, 51)) + 'ERROR <Main.java> failed & "quoted"\n'


@pytest.fixture
def approved(shop_rule, people, make_approval, django_capture_on_commit_callbacks):
    """一条已同意的测试环境审批，审批消息已在群里。"""
    with django_capture_on_commit_callbacks(execute=True):
        approval = make_approval(build_number=321, build_url=BUILD_URL.format(n=321))
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="telegram")
    return Approval.objects.get(pk=approval.pk)


def record(capture, **kwargs) -> BuildResult:
    with capture(execute=True):
        result, created = build_result_record(**kwargs)
    assert created
    return BuildResult.objects.get(pk=result.pk)


def notices(fake) -> list:
    return [m for m in fake.chat_messages(GROUP_ID) if "耗时" in m.text]


@pytest.mark.parametrize("value", list(EXPECTED))
def test_result_notice_replies_to_the_approval_message(fake_tg, approved, value, django_capture_on_commit_callbacks):
    BuildLog.objects.create(jenkins_server=approved.jenkins_server, job_name=approved.job_name, build_number=321,
                            approval=approved, content=LOG, size=len(LOG), is_complete=True)
    result = record(django_capture_on_commit_callbacks, job_name="shop-backend", build_number=321, result=value,
                    duration_ms=205_000)

    [notice] = notices(fake_tg)
    emoji, title = EXPECTED[value]
    html, text = notice.html, notice.text
    message_id = TelegramMessage.objects.get(approval=approved, kind=MessageKind.APPROVAL).message_id
    assert notice.message["reply_to_message"]["message_id"] == message_id
    assert text.startswith(f"{emoji} {title} · shop-backend #321")
    assert f"结果：{value}" in text and "耗时：3 分 25 秒" in text
    assert "环境：🟢 测试" in text and "版本：v1.2.3" in text
    assert f"审批：{approved.public_id} Bob 同意" in text
    assert f'<a href="{BUILD_URL.format(n=321)}console">Jenkins 控制台</a>' in html
    assert f"/logs/{approved.public_id}?t=" in html
    # 同意者与项目负责人都被点名（B8）
    assert 'href="tg://user?id=1002"' in html and 'href="tg://user?id=1001"' in html
    if value in WITH_TAIL:
        assert "日志末尾（最后 30 行）" in text
        assert "<pre>" in html and "ERROR &lt;Main.java&gt; failed &amp; &quot;quoted&quot;" in html
        assert "step 22: compiling" in text and "step 21: compiling" not in text  # 正好最后 30 行
    else:
        assert "<pre>" not in html and "step 50" not in text

    row = TelegramMessage.objects.get(build_result=result)
    assert (row.kind, row.state, row.approval_id, row.reply_to_message_id) == (
        MessageKind.BUILD_RESULT, MessageState.SENT, approved.pk, message_id)
    # 重试或重复投递不会再发一次
    build_result_notify_task.delay(result.pk)
    assert len(notices(fake_tg)) == 1


@pytest.mark.parametrize("value", list(EXPECTED))
def test_result_without_an_approval_still_notifies_the_project_chat(fake_tg, shop_rule, value,
                                                                     django_capture_on_commit_callbacks):
    server = JenkinsServer.objects.default()
    BuildLog.objects.create(jenkins_server=server, job_name="folder/shop-nightly", build_number=77, content=LOG,
                            size=len(LOG), is_complete=True)
    result = record(django_capture_on_commit_callbacks, job_name="folder/shop-nightly", build_number=77,
                    result=value, duration_ms=3_725_000,
                    build_url="https://ci.example.com/job/folder/job/shop-nightly/77/")
    assert result.approval is None

    [notice] = notices(fake_tg)
    emoji, title = EXPECTED[value]
    assert notice.text.startswith(f"{emoji} {title} · shop-backend #77")  # 规则认出了项目
    assert "任务：folder/shop-nightly #77" in notice.text
    assert "reply_to_message" not in notice.message
    assert "耗时：1 小时 2 分 5 秒" in notice.text and "这次构建没有经过审批" in notice.text
    assert "/console" in notice.html and "/logs/" not in notice.html
    # 按规则（folder/shop-* → shop-backend）找到项目群，点名负责人与审批人
    assert 'href="tg://user?id=1001"' in notice.html and 'href="tg://user?id=1002"' in notice.html
    assert ("ERROR &lt;Main.java&gt;" in notice.html) is (value in WITH_TAIL)
    assert TelegramMessage.objects.get(build_result=result).state == MessageState.SENT
    build_result_notify_task.delay(result.pk)
    assert len(notices(fake_tg)) == 1


def test_failure_log_tail_is_fetched_from_jenkins_and_escaped(fake_tg, shop_rule, people, make_approval,
                                                             django_capture_on_commit_callbacks, monkeypatch):
    from jenkins_bridge.models import JenkinsServer

    jenkins = FakeJenkins().start()
    try:
        monkeypatch.setenv("FAKE_JENKINS_TOKEN", "svc-token")
        server = JenkinsServer.objects.create(name="ci", url=jenkins.url, username="svc",
                                              api_token_env="FAKE_JENKINS_TOKEN", timeout_seconds=2.0)
        build = jenkins.add_build("shop-backend", 555, building=False, result="FAILURE")
        build.console = LOG + "<script>alert(1)</script>\nFinished: FAILURE\n"
        with django_capture_on_commit_callbacks(execute=True):
            approval = make_approval(build_number=555, jenkins_server=server)
        record(django_capture_on_commit_callbacks, job_name="shop-backend", build_number=555, result="FAILURE",
               jenkins_server=server, duration_ms=1000)
    finally:
        jenkins.down()

    [notice] = notices(fake_tg)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in notice.html and "<script>" not in notice.html
    assert notice.text.rstrip().endswith("Finished: FAILURE")
    assert jenkins.calls("GET", "progressiveText")
    # 读到的日志也存下来了，日志页可以直接用（G5）
    assert BuildLog.objects.get(approval=approval).content.endswith("Finished: FAILURE\n")


def test_a_huge_log_tail_is_cut_at_the_front_to_fit_4096(fake_tg, approved, django_capture_on_commit_callbacks):
    noisy = "".join(f"[{i:02d}] " + "噪音" * 150 + "\n" for i in range(40)) + "真正的错误在最后一行\n"
    BuildLog.objects.create(jenkins_server=approved.jenkins_server, job_name=approved.job_name, build_number=321,
                            approval=approved, content=noisy, size=len(noisy), is_complete=True)
    record(django_capture_on_commit_callbacks, job_name="shop-backend", build_number=321, result="FAILURE")
    [notice] = notices(fake_tg)
    assert tg_length(notice.html) <= MAX_MESSAGE_LENGTH
    assert "<pre>…" in notice.html and notice.text.rstrip().endswith("真正的错误在最后一行")
    assert "耗时：未知" in notice.text
