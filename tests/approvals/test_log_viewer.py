"""日志查看器：签名链接才能看、内容转义、高亮所需结构、下载、Jenkins 不可达时仍可看已存内容。"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import time_machine
from django.utils import timezone

from approvals.builds import build_log_append
from approvals.links import LOG_LINK_MAX_AGE, log_token, log_url
from approvals.models import BuildLog

pytestmark = pytest.mark.django_db


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def approval_with_log(shop_rule, make_approval):
    approval = make_approval()
    build_log_append(jenkins_server=approval.jenkins_server, job_name=approval.job_name,
                     build_number=approval.build_number, approval=approval, text="[Pipeline] stage\n<script>alert(1)</script>\nERROR: 部署失败 🚨\n",
                     next_start=64, complete=True)
    return approval


def test_signed_link_shows_escaped_log(client, approval_with_log, settings):
    settings.PUBLIC_BASE_URL = "https://approval.example.com"
    url = log_url(approval_with_log)
    assert url.startswith(f"https://approval.example.com/logs/{approval_with_log.public_id}?t=")
    response = client.get(local(url))
    assert response.status_code == 200
    body = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert(1)" not in body
    assert "部署失败 🚨" in body and "构建已结束" in body


def test_without_or_with_forged_token_is_forbidden(client, approval_with_log):
    for query in ("", "?t=forged", f"?t={log_token(approval_with_log)}x"):
        response = client.get(f"/logs/{approval_with_log.public_id}{query}")
        assert response.status_code == 403
        assert "链接无效或已过期" in response.content.decode()


def test_link_expires(client, approval_with_log):
    token = log_token(approval_with_log)
    with time_machine.travel(timezone.now().timestamp() + LOG_LINK_MAX_AGE + 60):
        assert client.get(f"/logs/{approval_with_log.public_id}?t={token}").status_code == 403


def test_token_of_one_approval_does_not_open_another(client, approval_with_log, make_approval):
    other = make_approval(environment="production")
    token = log_token(approval_with_log)
    assert client.get(f"/logs/{other.public_id}?t={token}").status_code == 403


def test_staff_session_may_view_without_token(admin_client, approval_with_log):
    assert admin_client.get(f"/logs/{approval_with_log.public_id}").status_code == 200


def test_unknown_id_is_404(client):
    assert client.get("/logs/ZZZZZZZZ?t=x").status_code == 404


def test_tail_returns_only_new_text_and_download(client, approval_with_log):
    token = log_token(approval_with_log)
    full = BuildLog.objects.get().content
    data = client.get(f"/logs/{approval_with_log.public_id}/tail?t={token}&offset=10").json()
    assert data["text"] == full[10:] and data["offset"] == len(full) and data["complete"]
    bad = client.get(f"/logs/{approval_with_log.public_id}/tail?t={token}&offset=abc")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_offset"
    download = client.get(f"/logs/{approval_with_log.public_id}/download?t={token}")
    assert download.status_code == 200 and download["Content-Disposition"].endswith('shop-backend-101.log"')
    assert download.content.decode() == full


def test_jenkins_unreachable_shows_stored_log_and_reason(client, shop_rule, make_approval):
    with socket.socket() as s:  # 找一个没人监听的端口
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    approval = make_approval()
    server = approval.jenkins_server
    server.url = f"http://127.0.0.1:{port}/"
    server.timeout_seconds = 2
    server.save()
    response = client.get(local(log_url(approval)))
    assert response.status_code == 200
    assert "暂时无法从 Jenkins 获取日志" in response.content.decode()


def test_the_same_chunk_appended_twice_is_stored_once(shop_rule, make_approval):
    """两个标签页（或日志页与失败通知）同时从同一位置续读：同一段只存一次。"""
    approval = make_approval()
    where = {"jenkins_server": approval.jenkins_server, "job_name": approval.job_name,
             "build_number": approval.build_number}
    build_log_append(**where, text="line 1\n", next_start=7, complete=False, start=0)
    build_log_append(**where, text="line 2\n", next_start=14, complete=False, start=7)
    build_log_append(**where, text="line 2\n", next_start=14, complete=False, start=7)  # 迟到的同一段
    assert BuildLog.objects.get().content == "line 1\nline 2\n"


def test_page_gives_the_tail_offset_in_server_characters(client, shop_rule, make_approval):
    """emoji 与 CRLF 让浏览器算出的长度与服务器不同：续读起点由服务器给出。"""
    approval = make_approval()
    text = "构建 🚀\r\n进度 50%\r进度 100%\n"
    build_log_append(jenkins_server=approval.jenkins_server, job_name=approval.job_name,
                     build_number=approval.build_number, approval=approval, text=text, next_start=99, complete=False)
    body = client.get(local(log_url(approval))).content.decode()
    assert f'data-offset="{len(text)}"' in body


# ---------------------------------------------------------------- 安定下来：构建或审批结束后不再轮询，并说明为什么没有日志


def _unreachable_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _point_jenkins(approval, url: str) -> None:
    server = approval.jenkins_server
    server.url = url
    server.timeout_seconds = 2
    server.save()


def test_cancelled_build_without_log_settles_and_says_why(client, shop_rule, make_approval):
    """构建结果 FAILURE 已回报（审批随之取消），Jenkins 没配置：页面不再说“构建进行中”，也不再轮询。"""
    from approvals.builds import build_result_record

    approval = make_approval()
    _point_jenkins(approval, "")
    build_result_record(job_name=approval.job_name, build_number=approval.build_number, result="FAILURE")
    approval.refresh_from_db()
    assert approval.status == "cancelled"
    url = local(log_url(approval))

    body = client.get(url).content.decode()

    assert 'data-final="1"' in body and "构建进行中" not in body
    assert "构建已结束（失败），没有可显示的日志。" in body
    assert "无法从 Jenkins 获取日志：这次构建所属的 Jenkins「default」没有配置地址" in body
    assert "之前也没有保存过这次构建的日志。" in body
    tail_url = url.replace(f"/logs/{approval.public_id}?", f"/logs/{approval.public_id}/tail?") + "&offset=0"
    data = client.get(tail_url).json()
    assert data["final"] is True and data["complete"] is False and data["text"] == ""
    assert data["status"] == "构建已结束（失败），没有可显示的日志。"
    assert "没有配置地址" in data["notice"]
    assert "error" not in data  # 页面脚本只认 {"error": {"code": …}}：不再有字符串形式的 error
    download = client.get(url.replace(f"/logs/{approval.public_id}?", f"/logs/{approval.public_id}/download?"))
    assert download.status_code == 404 and "attachment" not in download.get("Content-Disposition", "")
    text = download.content.decode()
    assert "这次构建没有可下载的日志。" in text and "没有配置地址" in text and "回到日志页" in text


def test_rejected_approval_with_jenkins_down_shows_the_saved_part(client, shop_rule, people, make_approval):
    from approvals.services import approval_decide

    approval = make_approval()
    build_log_append(jenkins_server=approval.jenkins_server, job_name=approval.job_name,
                     build_number=approval.build_number, approval=approval, text="[Pipeline] stage\n编译中…\n",
                     next_start=30, complete=False)
    approval_decide(approval=approval, approver=people["approver"], decision="reject", reason="不发", channel="api")
    _point_jenkins(approval, f"http://127.0.0.1:{_unreachable_port()}/")
    BuildLog.objects.update(fetched_at=timezone.now() - timezone.timedelta(minutes=1))
    url = local(log_url(approval))

    body = client.get(url).content.decode()

    assert 'data-final="1"' in body
    assert "审批已拒绝，构建不会再继续，日志不完整。" in body
    assert "连不上 Jenkins「default」" in body and "下面是之前保存的部分。" in body
    download = client.get(url.replace(f"/logs/{approval.public_id}?", f"/logs/{approval.public_id}/download?"))
    assert download.status_code == 200 and download.content.decode() == "[Pipeline] stage\n编译中…\n"


def test_pending_build_with_jenkins_down_keeps_trying_but_logs_once(client, shop_rule, make_approval, caplog):
    """还在等审批的构建：稍后自动重试；30 秒内不再问 Jenkins，也不再写一条 WARNING。"""
    approval = make_approval()
    _point_jenkins(approval, f"http://127.0.0.1:{_unreachable_port()}/")
    tail_url = local(log_url(approval)).replace(f"/logs/{approval.public_id}?", f"/logs/{approval.public_id}/tail?")

    with caplog.at_level("WARNING", logger="approvals.views"):
        first = client.get(tail_url + "&offset=0").json()
        second = client.get(tail_url + "&offset=0").json()

    assert first["final"] is False and first["status"] == "暂时无法获取日志，稍后自动重试…"
    assert first["notice"] == "暂时无法从 Jenkins 获取日志：连不上 Jenkins「default」"
    assert second == first
    assert len([r for r in caplog.records if r.name == "approvals.views"]) == 1


def test_server_log_is_in_the_configured_language_whatever_the_browser(client, shop_rule, make_approval, caplog):
    approval = make_approval()
    _point_jenkins(approval, f"http://127.0.0.1:{_unreachable_port()}/")

    with caplog.at_level("WARNING", logger="approvals.views"):
        page = client.get(local(log_url(approval)), HTTP_ACCEPT_LANGUAGE="en")

    assert page.status_code == 200
    (record,) = [r for r in caplog.records if r.name == "approvals.views"]
    message = record.getMessage()
    assert "无法连接 Jenkins" in message and "cannot connect" not in message


def test_a_live_build_is_followed_until_jenkins_says_it_is_complete(client, shop_rule, make_approval):
    from tests.fake_jenkins import FakeJenkins

    fake = FakeJenkins(anonymous_read=True).start()
    try:
        approval = make_approval()
        _point_jenkins(approval, fake.url)
        build = fake.add_build(approval.job_name, approval.build_number)
        url = local(log_url(approval))

        body = client.get(url).content.decode()
        assert 'data-final="0"' in body and "构建进行中，日志实时更新…" in body
        tail_url = url.replace(f"/logs/{approval.public_id}?", f"/logs/{approval.public_id}/tail?")
        offset = len(build.console)

        build.console += "ERROR: 部署失败\nFinished: FAILURE\n"
        fake.finish(approval.job_name, approval.build_number, "FAILURE")
        BuildLog.objects.update(fetched_at=timezone.now() - timezone.timedelta(seconds=5))
        data = client.get(f"{tail_url}&offset={offset}").json()
    finally:
        fake.down()

    assert data["text"] == "ERROR: 部署失败\nFinished: FAILURE\n"
    assert data["final"] is True and data["complete"] is True and data["notice"] == ""
    assert data["status"] == "构建已结束，日志完整。"
