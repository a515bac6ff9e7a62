"""探测出的漏洞 2：HMAC 以前只签请求体。

- 截获的签名等待请求改投 /api/build/result?result=ABORTED，取消了一条待审批；
- 签名的创建请求上附加未签名的 ?description=…&requested_by=…&timeout_minutes=10080，被原样存下。

现在签名覆盖 时间戳、nonce、方法、路径、规范化查询串、请求体；nonce 在 5 分钟窗口内只能用一次（存在数据库里，
所有 web 进程共享）。这里的签名按文档独立实现一遍（不调用服务端代码），约定一变测试就会失败。
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import Approval, BuildResult, Status
from jenkins_bridge.models import SignatureNonce
from tests.jenkins_bridge.test_api import JENKINS_BODY, WAIT, assert_error

pytestmark = pytest.mark.django_db

SECRET = "很长的签名密钥-0123456789"
RESULT = "/api/build/result"


def canonical_query(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)


def signature_headers(method: str, url: str, body: bytes = b"", *, secret: str = SECRET, ts: int | None = None,
                      nonce: str | None = None) -> dict[str, str]:
    """文档里的签名：HMAC-SHA256(密钥, "时间戳\\nnonce\\n方法\\n路径\\n规范查询串\\n" + 请求体)。"""
    parts = urlsplit(url)
    ts = int(time.time()) if ts is None else ts
    nonce = nonce or secrets.token_hex(16)
    text = f"{ts}\n{nonce}\n{method.upper()}\n{parts.path}\n{canonical_query(parts.query)}\n".encode() + body
    mac = hmac.new(secret.encode(), text, hashlib.sha256).hexdigest()
    return {"HTTP_X_APPROVAL_TIMESTAMP": str(ts), "HTTP_X_APPROVAL_NONCE": nonce,
            "HTTP_X_APPROVAL_SIGNATURE": f"sha256={mac}"}


def send(client: APIClient, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None,
         content_type: str = "application/json"):
    path, _sep, query = url.partition("?")
    kwargs = {"QUERY_STRING": query, **(headers or {})}
    if method == "GET":
        return client.get(path, **kwargs)
    return client.generic(method, path, body, content_type=content_type, **kwargs)


@pytest.fixture
def signing(jenkins_server, shop_rule, make_token, monkeypatch):
    monkeypatch.setenv("CI_SIGNING_SECRET", SECRET)
    raw = make_token("jenkins", "read", signing_secret_env="CI_SIGNING_SECRET")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


BODY = json.dumps(JENKINS_BODY, ensure_ascii=False).encode()


def test_signed_wait_replayed_to_build_result_does_not_cancel(signing):
    headers = signature_headers("POST", WAIT, BODY)
    created = send(signing, "POST", WAIT, BODY, headers)
    assert created.status_code == 201, created.content
    # 攻击者截获了它，改投另一个路径、附加查询参数；也换一个新 nonce 试试
    for url in (f"{RESULT}?result=ABORTED", RESULT):
        for replay in (headers, {**headers, "HTTP_X_APPROVAL_NONCE": secrets.token_hex(16)}):
            assert_error(send(signing, "POST", url, BODY, replay), 401, "invalid_signature")
    assert Approval.objects.get().status == Status.PENDING
    assert not BuildResult.objects.exists()


def test_unsigned_query_parameters_on_a_signed_post_are_refused(signing):
    headers = signature_headers("POST", WAIT, BODY)
    url = f"{WAIT}?description=%E6%81%B6%E6%84%8F&requested_by=mallory&timeout_minutes=10080"
    assert_error(send(signing, "POST", url, BODY, headers), 401, "invalid_signature")
    assert not Approval.objects.exists()


def test_method_is_signed(signing):
    query = "JOB_NAME=shop-backend&BUILD_NUMBER=7&env=test"
    headers = signature_headers("POST", f"{WAIT}?{query}")
    assert_error(send(signing, "GET", f"{WAIT}?{query}", headers=headers), 401, "invalid_signature")
    assert not Approval.objects.exists()


def test_replayed_nonce_is_refused(signing):
    headers = signature_headers("POST", WAIT, BODY)
    assert send(signing, "POST", WAIT, BODY, headers).status_code == 201
    error = assert_error(send(signing, "POST", WAIT, BODY, headers), 401, "replayed")
    assert "nonce" in error["message"]
    # 同一个 nonce 配上另一个（正确签名的）请求也不行：nonce 属于 token，不属于某个请求
    other = json.dumps({**JENKINS_BODY, "BUILD_NUMBER": "129"}).encode()
    reused = signature_headers("POST", WAIT, other, nonce=headers["HTTP_X_APPROVAL_NONCE"])
    assert_error(send(signing, "POST", WAIT, other, reused), 401, "replayed")
    assert Approval.objects.count() == 1
    assert SignatureNonce.objects.count() == 1


def test_nonce_is_per_token(signing, make_token, monkeypatch):
    monkeypatch.setenv("CI2_SIGNING_SECRET", SECRET)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token('jenkins', signing_secret_env='CI2_SIGNING_SECRET')}")
    headers = signature_headers("POST", WAIT, BODY)
    assert send(signing, "POST", WAIT, BODY, headers).status_code == 201
    assert send(other, "POST", WAIT, BODY, headers).status_code == 200  # 另一个 token：同一个审批，已存在


def test_signed_get_with_chinese_and_unsorted_query_succeeds(signing):
    url = (f"{WAIT}?project=shop-backend&build_number=7&env=%E6%B5%8B%E8%AF%95&description=%E4%B8%AD%E6%96%87+%E8%AF%B4"
           "%E6%98%8E%20%F0%9F%9A%80&version=v1.0~rc&operation=&input_id=A%2FB")
    response = send(signing, "GET", url, headers=signature_headers("GET", url))
    assert response.status_code == 201, response.content
    approval = Approval.objects.get()
    assert approval.description == "中文 说明 🚀" and approval.version == "v1.0~rc" and approval.input_id == "A/B"


def test_signed_post_with_query_and_chinese_body_succeeds(signing, jenkins_server):
    url = f"{WAIT}?jenkins={jenkins_server.name}&wait=0"
    body = json.dumps({**JENKINS_BODY, "description": "修复支付回调；中文 🚀"}, ensure_ascii=False).encode()
    response = send(signing, "POST", url, body, signature_headers("POST", url, body))
    assert response.status_code == 201, response.content
    assert Approval.objects.get().description == "修复支付回调；中文 🚀"
    poll = f"/api/status/{response.json()['id']}"
    assert send(signing, "GET", poll, headers=signature_headers("GET", poll)).status_code == 200


def test_signed_form_post_succeeds(signing):
    body = b"JOB_NAME=shop-backend&BUILD_NUMBER=9&env=test&operation=%E5%9B%9E%E6%BB%9A"
    headers = signature_headers("POST", WAIT, body)
    response = send(signing, "POST", WAIT, body, headers, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201, response.content
    assert Approval.objects.get().operation == "回滚"


@pytest.mark.parametrize(("change", "code"), [
    ({"HTTP_X_APPROVAL_NONCE": None}, "signature_required"),
    ({"HTTP_X_APPROVAL_TIMESTAMP": None}, "signature_required"),
    ({"HTTP_X_APPROVAL_SIGNATURE": None}, "signature_required"),
    ({"HTTP_X_APPROVAL_NONCE": "short"}, "invalid_signature"),
    ({"HTTP_X_APPROVAL_NONCE": "坏" * 20}, "invalid_signature"),
    ({"HTTP_X_APPROVAL_NONCE": "a" * 65}, "invalid_signature"),
    ({"HTTP_X_APPROVAL_TIMESTAMP": "1e9"}, "invalid_signature"),
    ({"HTTP_X_APPROVAL_SIGNATURE": "sha256=00"}, "invalid_signature"),
])
def test_bad_signature_headers(signing, change, code):
    headers = {**signature_headers("POST", WAIT, BODY)}
    for key, value in change.items():
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    assert_error(send(signing, "POST", WAIT, BODY, headers), 401, code)
    assert not Approval.objects.exists() and not SignatureNonce.objects.exists()


def test_expired_and_future_timestamps_are_refused(signing):
    for ts in (int(time.time()) - 301, int(time.time()) + 301):
        headers = signature_headers("POST", WAIT, BODY, ts=ts)
        assert_error(send(signing, "POST", WAIT, BODY, headers), 401, "signature_expired")
    assert not Approval.objects.exists()


def test_old_body_only_signature_is_refused(signing):
    ts = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + BODY, hashlib.sha256).hexdigest()
    old = {"HTTP_X_APPROVAL_TIMESTAMP": ts, "HTTP_X_APPROVAL_SIGNATURE": f"sha256={mac}"}
    error = assert_error(send(signing, "POST", WAIT, BODY, old), 401, "signature_required")
    assert "X-Approval-Nonce" in error["message"]
    old["HTTP_X_APPROVAL_NONCE"] = secrets.token_hex(16)
    assert_error(send(signing, "POST", WAIT, BODY, old), 401, "invalid_signature")
    assert not Approval.objects.exists()


def test_unsigned_tokens_ignore_signature_headers(api, jenkins_server, shop_rule):
    """没设签名密钥的 token 不要求签名，多余的签名头也不影响。"""
    response = send(api("jenkins"), "POST", WAIT, BODY, {"HTTP_X_APPROVAL_NONCE": "x"})
    assert response.status_code == 201
    assert not SignatureNonce.objects.exists()


def test_used_nonces_are_pruned_on_later_requests_not_by_a_beat_task(signing):
    """旧 nonce（超过两个签名窗口）由后来的签名请求顺手删掉；每个进程每分钟最多删一次。"""
    start = timezone.now() + timedelta(hours=1)  # 离开其他测试留下的节流时间
    with time_machine.travel(start, tick=False):
        stale = SignatureNonce.objects.create(token_hash="x" * 64, nonce="old-nonce-0123456789",
                                              created_at=timezone.now() - timedelta(minutes=11))
        recent = SignatureNonce.objects.create(token_hash="x" * 64, nonce="recent-nonce-0123456",
                                               created_at=timezone.now() - timedelta(minutes=9))
        assert send(signing, "POST", WAIT, BODY, signature_headers("POST", WAIT, BODY)).status_code == 201
        assert not SignatureNonce.objects.filter(pk=stale.pk).exists()
        assert SignatureNonce.objects.filter(pk=recent.pk).exists()
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        SignatureNonce.objects.filter(pk=recent.pk).update(created_at=timezone.now() - timedelta(minutes=20))
        send(signing, "GET", f"{WAIT}?id=x", headers=signature_headers("GET", f"{WAIT}?id=x"))
        assert SignatureNonce.objects.filter(pk=recent.pk).exists()  # 一分钟内不再删
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        send(signing, "GET", f"{WAIT}?id=x", headers=signature_headers("GET", f"{WAIT}?id=x"))
        assert not SignatureNonce.objects.filter(pk=recent.pk).exists()


# ---------------------------------------------------------------- docs/jenkins 里给用户的签名脚本


def _docs_signer():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "jenkins" / "sign_request.py"
    spec = importlib.util.spec_from_file_location("sign_request", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_signing_script_is_accepted(signing, monkeypatch, tmp_path, capsys):
    signer = _docs_signer()
    url = f"http://testserver{WAIT}?jenkins=default&wait=0"
    headers = signer.signature_headers(SECRET, "POST", url, BODY)
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    assert send(signing, "POST", f"{WAIT}?jenkins=default&wait=0", BODY, meta).status_code == 201
    # 命令行输出 curl -K 的配置行
    monkeypatch.setenv("APPROVAL_SIGNING_SECRET", SECRET)
    poll = f"http://testserver/api/status/{Approval.objects.get().public_id}"
    assert signer.main(["sign_request.py", "GET", poll]) == 0
    lines = capsys.readouterr().out.splitlines()
    meta = {}
    for line in lines:
        name, _sep, value = line.removeprefix('header = "').removesuffix('"').partition(": ")
        meta[f"HTTP_{name.upper().replace('-', '_')}"] = value
    assert set(meta) == {"HTTP_X_APPROVAL_TIMESTAMP", "HTTP_X_APPROVAL_NONCE", "HTTP_X_APPROVAL_SIGNATURE"}
    assert send(signing, "GET", urlsplit(poll).path, headers=meta).status_code == 200
