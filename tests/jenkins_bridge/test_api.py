"""HTTP API：每个端点的成功路径与每一种错误输入（确切状态码 + 错误码，且什么都没写入）。"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import Approval, BuildResult, Status, Vote
from jenkins_bridge.models import ApiToken, hash_token

pytestmark = pytest.mark.django_db

WAIT = "/api/stage/approval/wait"
REPLY_KEYS = {"id", "status", "proceed", "project", "environment", "build_number", "version", "required_approvals",
              "approvals_received", "created_at", "expires_at", "decided_at", "decided_by", "reason", "links"}
JENKINS_BODY = {
    "JOB_NAME": "shop-backend", "BUILD_NUMBER": "128", "env": "生产", "version": "v2.3.0",
    "description": "修复支付回调；升级 Redis 客户端 🚀", "operation": "部署", "BUILD_USER_ID": "dave",
    "BUILD_URL": "http://jenkins:8080/job/shop-backend/128/",
}


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def jenkins(api, jenkins_server):
    return api("jenkins")


# ---------------------------------------------------------------- 等待接口


def test_wait_creates_with_jenkins_spellings_and_keeps_chinese(jenkins, shop_rule):
    response = jenkins.post(WAIT, JENKINS_BODY, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == REPLY_KEYS
    assert body["status"] == "pending" and body["proceed"] is False
    assert body["project"] == "shop-backend" and body["environment"] == "production"
    assert body["build_number"] == 128 and body["required_approvals"] == 2 and body["approvals_received"] == 0
    assert body["links"]["status"].endswith(f"/api/status/{body['id']}")
    # 日志链接带签名：流水线日志里打印出来，没有登录也能直接打开
    logs = urlsplit(body["links"]["logs"])
    assert logs.path == f"/logs/{body['id']}" and logs.query.startswith("t=")
    assert Client().get(f"{logs.path}?{logs.query}").status_code == 200
    assert Client().get(logs.path).status_code == 403
    approval = Approval.objects.get(public_id=body["id"])
    assert approval.description == "修复支付回调；升级 Redis 客户端 🚀" and approval.operation == "部署"
    assert approval.requested_by == "dave" and approval.resume_mode == "poll"


def test_wait_is_idempotent_per_build(jenkins, shop_rule):
    first = jenkins.post(WAIT, JENKINS_BODY, format="json").json()
    again = jenkins.post(WAIT, JENKINS_BODY, format="json")
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    assert Approval.objects.count() == 1


def test_wait_accepts_query_string_get(jenkins, shop_rule):
    response = jenkins.get(WAIT, {"job_name": "shop-backend", "build_number": 7, "environment": "test",
                                  "description": "中文说明", "input_id": "release"})
    assert response.status_code == 201
    approval = Approval.objects.get(public_id=response.json()["id"])
    assert approval.description == "中文说明" and approval.resume_mode == "input" and approval.input_id == "release"


def test_wait_accepts_form_post(jenkins, shop_rule):
    response = jenkins.post(WAIT, {"project": "shop-backend", "BUILD_NUMBER": "9", "env": "test",
                                   "operation": "回滚"})
    assert response.status_code == 201
    assert Approval.objects.get(public_id=response.json()["id"]).operation == "回滚"


def test_wait_with_id_polls_existing(jenkins, shop_rule):
    created = jenkins.post(WAIT, JENKINS_BODY, format="json").json()
    response = jenkins.get(WAIT, {"id": created["id"].lower(), "wait": 0})
    assert response.status_code == 200 and response.json()["id"] == created["id"]


def test_webhook_callback_under_configured_jenkins_is_accepted(jenkins, jenkins_server, shop_rule):
    hook = f"{jenkins_server.base_url}webhook-step/abc-123"
    response = jenkins.post(WAIT, {**JENKINS_BODY, "callback_url": hook}, format="json")
    assert response.status_code == 201
    assert Approval.objects.get().resume_mode == "webhook"


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:1/webhook-step/x",
    "file:///etc/passwd",
    "{base}../../admin/",
    "{base}",
    "http://user:pw@{host}/webhook-step/x",
])
def test_wait_refuses_callback_outside_jenkins_ssrf(jenkins, jenkins_server, shop_rule, url):
    host = jenkins_server.base_url.split("//", 1)[1].rstrip("/")
    url = url.format(base=jenkins_server.base_url, host=host)
    response = jenkins.post(WAIT, {**JENKINS_BODY, "callback_url": url}, format="json")
    error = assert_error(response, 400, "validation_error")
    assert "callback_url" in error["details"]["fields"]
    assert not Approval.objects.exists()


@pytest.mark.parametrize(("body", "field"), [
    ({**JENKINS_BODY, "BUILD_NUMBER": "abc"}, "build_number"),
    ({**JENKINS_BODY, "BUILD_NUMBER": "-1"}, "build_number"),
    ({k: v for k, v in JENKINS_BODY.items() if k != "BUILD_NUMBER"}, "build_number"),
    ({k: v for k, v in JENKINS_BODY.items() if k != "JOB_NAME"}, "project"),
    ({**JENKINS_BODY, "wait": 61}, "wait"),
    ({**JENKINS_BODY, "wait": "soon"}, "wait"),
    ({**JENKINS_BODY, "timeout_minutes": 0}, "timeout_minutes"),
    ({**JENKINS_BODY, "BUILD_URL": "javascript:alert(1)"}, "build_url"),
    ({**JENKINS_BODY, "version": "v" * 201}, "version"),
    ({**JENKINS_BODY, "description": "bad\x00byte"}, "description"),
    ({**JENKINS_BODY, "jenkins": "nope"}, "jenkins"),
])
def test_wait_bad_fields(jenkins, shop_rule, body, field):
    error = assert_error(jenkins.post(WAIT, body, format="json"), 400, "validation_error")
    assert field in error["details"]["fields"]
    assert not Approval.objects.exists()


def test_wait_malformed_json(jenkins):
    response = jenkins.post(WAIT, data='{"JOB_NAME": ', content_type="application/json")
    error = assert_error(response, 400, "parse_error")
    # 中文说明 + 解析器给出的位置，Jenkins 日志里一眼能看出哪里写错
    assert error["message"].startswith("请求体不是合法的 JSON") and "column" in error["message"]
    assert not Approval.objects.exists()


def test_wait_json_that_is_not_an_object(jenkins):
    response = jenkins.post(WAIT, data="[1, 2]", content_type="application/json")
    assert_error(response, 400, "validation_error")
    assert not Approval.objects.exists()


def test_wait_oversized_body(jenkins, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = {**JENKINS_BODY, "description": "长" * 2000}
    assert_error(jenkins.post(WAIT, body, format="json"), 413, "payload_too_large")
    assert not Approval.objects.exists()


def test_wait_unknown_id(jenkins):
    assert_error(jenkins.get(WAIT, {"id": "ZZZZZZZZ"}), 404, "not_found")
    assert_error(jenkins.get(WAIT, {"id": "不是编号"}), 404, "invalid_id")


def test_wait_unsupported_method(jenkins):
    assert_error(jenkins.put(WAIT, {}, format="json"), 405, "method_not_allowed")


# ---------------------------------------------------------------- 认证与权限范围


def test_no_token_is_401_with_challenge(jenkins_server):
    response = APIClient().post(WAIT, JENKINS_BODY, format="json")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Approval.objects.exists()


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Token abc", "Bearer", "Bearer a b"])
def test_wrong_token_is_401(jenkins_server, make_token, header):
    make_token("jenkins")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_error(client.post(WAIT, JENKINS_BODY, format="json"), 401, "invalid_token")
    assert not Approval.objects.exists()


def test_wrong_scope_is_403(api, jenkins_server):
    assert_error(api("read", "approve").post(WAIT, JENKINS_BODY, format="json"), 403, "insufficient_scope")
    assert not Approval.objects.exists()


def test_inactive_and_expired_tokens_are_refused(jenkins_server, make_token):
    raw = make_token("jenkins")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    token = ApiToken.objects.get(token_hash=hash_token(raw))
    token.expires_at = timezone.now() - timedelta(minutes=1)
    token.save()
    assert_error(client.post(WAIT, JENKINS_BODY, format="json"), 401, "token_expired")
    token.expires_at, token.is_active = None, False
    token.save()
    assert_error(client.post(WAIT, JENKINS_BODY, format="json"), 401, "invalid_token")
    assert not Approval.objects.exists()


def test_tokens_are_stored_hashed_and_last_use_recorded(jenkins, shop_rule):
    jenkins.post(WAIT, JENKINS_BODY, format="json")
    token = ApiToken.objects.get()
    raw = jenkins._credentials["HTTP_AUTHORIZATION"].split()[1]
    assert raw not in json.dumps([token.token_hash, token.key_prefix + "x" * 60])
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert token.last_used_at is not None


def test_bootstrap_token_from_env_has_jenkins_and_read_only(settings, jenkins_server, shop_rule):
    settings.APPROVAL_API_TOKEN = "bootstrap-token-0123456789"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer bootstrap-token-0123456789")
    created = client.post(WAIT, JENKINS_BODY, format="json")
    assert created.status_code == 201
    assert client.get("/api/status").status_code == 200
    assert_error(client.post(f"/api/approve/{created.json()['id']}", {"approver": "bob"}, format="json"),
                 403, "insufficient_scope")
    assert not ApiToken.objects.exists()  # 引导 token 不写库


def _signed(client: APIClient, secret: str, body: bytes, *, ts: int | None = None, sig: str | None = None):
    from tests.jenkins_bridge.test_holes_signing import signature_headers  # 签名约定只写一份（那里有完整的测试）

    headers = signature_headers("POST", WAIT, body, secret=secret, ts=ts)
    if sig:
        headers["HTTP_X_APPROVAL_SIGNATURE"] = sig
    return client.post(WAIT, data=body, content_type="application/json", **headers)


def test_hmac_signature_per_token(jenkins_server, shop_rule, make_token, monkeypatch):
    monkeypatch.setenv("CI_SIGNING_SECRET", "很长的签名密钥")
    raw = make_token("jenkins", signing_secret_env="CI_SIGNING_SECRET")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = json.dumps(JENKINS_BODY).encode()
    assert_error(client.post(WAIT, data=body, content_type="application/json"), 401, "signature_required")
    assert_error(_signed(client, "很长的签名密钥", body, sig="sha256=00"), 401, "invalid_signature")
    assert_error(_signed(client, "很长的签名密钥", body, ts=int(time.time()) - 301), 401, "signature_expired")
    assert_error(_signed(client, "别的密钥", body), 401, "invalid_signature")
    assert not Approval.objects.exists()
    assert _signed(client, "很长的签名密钥", body).status_code == 201


def test_signature_required_but_secret_missing_fails_closed(jenkins_server, make_token):
    raw = make_token("jenkins", signing_secret_env="NOT_SET_ANYWHERE_X")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert_error(client.post(WAIT, JENKINS_BODY, format="json"), 401, "signature_misconfigured")


def test_create_api_token_command_prints_token_once(jenkins_server, shop_rule, capsys):
    call_command("create_api_token", "ci-main", "--scope", "jenkins", "--scope", "read")
    raw = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(name="ci-main")
    assert token.scopes == ["jenkins", "read"] and token.token_hash == hash_token(raw)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.post(WAIT, JENKINS_BODY, format="json").status_code == 201


def test_create_api_token_command_refuses_duplicates_without_replace(db):
    from django.core.management.base import CommandError

    call_command("create_api_token", "dup", "--scope", "read")
    with pytest.raises(CommandError):
        call_command("create_api_token", "dup", "--scope", "read")
    old_hash = ApiToken.objects.get(name="dup").token_hash
    call_command("create_api_token", "dup", "--scope", "read", "--replace")
    assert ApiToken.objects.get(name="dup").token_hash != old_hash


# ---------------------------------------------------------------- 决定


@pytest.fixture
def pending(make_approval, shop_rule, jenkins_server):
    return make_approval()


def test_approve_as_named_approver(api, pending):
    response = api("approve").post(f"/api/approve/{pending.public_id}", {"approver": "bob", "reason": "已核对"},
                                   format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "approved" and body["proceed"] is True and body["final"] is True
    assert body["decided_by"] == "Bob" and body["reason"] == "已核对"
    vote = Vote.objects.get()
    assert vote.channel == "api" and vote.approver.username == "bob"


def test_reject_with_reason(api, pending):
    response = api("approve").post(f"/api/reject/{pending.public_id}", {"approver": "bob", "reason": "迁移未评审"},
                                   format="json")
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert Approval.objects.get().reason == "迁移未评审"


def test_second_decision_gets_409_naming_who_and_when(api, pending):
    client = api("approve")
    client.post(f"/api/approve/{pending.public_id}", {"approver": "bob"}, format="json")
    error = assert_error(client.post(f"/api/reject/{pending.public_id}", {"approver": "alice"}, format="json"),
                         409, "already_decided")
    assert "Bob" in error["message"] and error["details"]["decided_by"] == "Bob"
    assert error["details"]["decided_at"] and error["details"]["status"] == "approved"
    assert Vote.objects.count() == 1


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"approver": "mallory"}, 403, "not_project_approver"),
    ({"approver": "dave"}, 403, "role_cannot_approve"),
    ({"approver": "nobody"}, 400, "unknown_approver"),
    ({}, 400, "validation_error"),
    ({"approver": "bob", "reason": "x" * 1001}, 400, "validation_error"),
])
def test_decision_refusals(api, pending, body, status, code):
    assert_error(api("approve").post(f"/api/approve/{pending.public_id}", body, format="json"), status, code)
    assert Approval.objects.get().status == Status.PENDING and not Vote.objects.exists()


def test_requester_cannot_approve_own_build(api, make_approval, shop_rule, jenkins_server, people):
    approval = make_approval(requested_by="bob")
    assert_error(api("approve").post(f"/api/approve/{approval.public_id}", {"approver": "bob"}, format="json"),
                 403, "self_approval")
    assert not Vote.objects.exists()


def test_decision_errors_for_id_scope_and_json(api, pending):
    assert_error(api("approve").post("/api/approve/ZZZZZZZZ", {"approver": "bob"}, format="json"), 404, "not_found")
    assert_error(api("jenkins", "read").post(f"/api/approve/{pending.public_id}", {"approver": "bob"},
                                             format="json"), 403, "insufficient_scope")
    assert_error(api("approve").post(f"/api/approve/{pending.public_id}", data="{oops",
                                     content_type="application/json"), 400, "parse_error")
    assert_error(APIClient().post(f"/api/reject/{pending.public_id}", {"approver": "bob"}, format="json"),
                 401, "not_authenticated")
    assert not Vote.objects.exists()


# ---------------------------------------------------------------- 读


def test_status_totals(api, make_approval, shop_rule, jenkins_server):
    make_approval()
    body = api("read").get("/api/status").json()
    assert body["total"] == 1 and body["by_status"]["pending"] == 1 and body["by_status"]["approved"] == 0


def test_status_detail_has_votes_and_history(api, pending):
    api("approve").post(f"/api/approve/{pending.public_id}", {"approver": "bob", "reason": "好"}, format="json")
    body = api("read").get(f"/api/status/{pending.public_id}").json()
    assert body["status"] == "approved" and body["description"] == "修复支付回调 🚀"
    assert [v["approver"] for v in body["votes"]] == ["bob"]
    assert [e["kind"] for e in body["events"]][:2] == ["created", "approved"]
    assert body["jenkins"]["resume_mode"] == "poll"
    assert_error(api("read").get("/api/status/ZZZZZZZZ"), 404, "not_found")
    assert_error(api("jenkins").get("/api/status"), 403, "insufficient_scope")


def test_approvals_list_filters_and_pages(api, make_approval, shop_rule, jenkins_server):
    for _ in range(3):
        make_approval()
    make_approval(job_name="other-app", environment="生产")
    client = api("read")
    body = client.get("/api/approvals", {"page_size": 2}).json()
    assert body["count"] == 4 and len(body["results"]) == 2 and body["next"]
    assert set(body["results"][0]) == REPLY_KEYS
    prod = client.get("/api/approvals", {"environment": "prod"}).json()
    assert [r["project"] for r in prod["results"]] == ["other-app"]
    assert client.get("/api/approvals", {"status": "approved"}).json()["count"] == 0
    assert_error(client.get("/api/approvals", {"status": "maybe"}), 400, "validation_error")
    assert_error(client.get("/api/approvals", {"created_from": "yesterday"}), 400, "validation_error")
    assert_error(client.get("/api/approvals", {"page": 99}), 404, "not_found")


def test_users_lists_approvers_and_roles(api, people):
    body = api("read").get("/api/users").json()
    names = [u["username"] for u in body["results"]]
    assert names == sorted(names) and "bob" in names
    bob = next(u for u in body["results"] if u["username"] == "bob")
    assert bob["role"]["name"] == "运维负责人" and bob["telegram_bound"] is True
    assert "telegram_id" not in bob and "email" not in bob


# ---------------------------------------------------------------- 构建结果


def test_build_result_links_approval_and_cancels_pending(api, pending):
    client = api("jenkins")
    body = {"JOB_NAME": "shop-backend", "BUILD_NUMBER": pending.build_number, "result": "failure",
            "duration": 183000}
    response = client.post("/api/build/result", body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["approval"] == pending.public_id and data["result"] == "FAILURE" and data["duration"] == 183000
    assert data["approval_status"] == "cancelled"
    again = client.post("/api/build/result", {**body, "result": "SUCCESS"}, format="json")
    assert again.status_code == 200 and BuildResult.objects.count() == 1


def test_build_result_by_approval_id(api, pending):
    response = api("jenkins").post("/api/build/result", {"id": pending.public_id, "project": "x",
                                                          "build_number": pending.build_number,
                                                          "result": "SUCCESS"}, format="json")
    assert response.status_code == 201 and response.json()["approval"] == pending.public_id


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"JOB_NAME": "shop-backend", "BUILD_NUMBER": 1, "result": "GREAT"}, 400, "validation_error"),
    ({"JOB_NAME": "shop-backend", "result": "SUCCESS"}, 400, "validation_error"),
    ({"JOB_NAME": "shop-backend", "BUILD_NUMBER": "x", "result": "SUCCESS"}, 400, "validation_error"),
    ({"BUILD_NUMBER": 1, "result": "SUCCESS"}, 400, "validation_error"),
    ({"JOB_NAME": "shop-backend", "BUILD_NUMBER": 1, "result": "SUCCESS", "duration": -5}, 400, "validation_error"),
    ({"id": "ZZZZZZZZ", "BUILD_NUMBER": 1, "result": "SUCCESS", "project": "x"}, 404, "not_found"),
])
def test_build_result_bad_input(api, jenkins_server, body, status, code):
    assert_error(api("jenkins").post("/api/build/result", body, format="json"), status, code)
    assert not BuildResult.objects.exists()


# ---------------------------------------------------------------- 统一错误形状


def test_unknown_api_path_is_json_404(db):
    assert_error(APIClient().get("/api/does-not-exist"), 404, "not_found")


def test_crash_under_api_is_json_500(api, monkeypatch):
    from approvals import selectors

    def boom(**kwargs):
        raise RuntimeError("数据库炸了")

    monkeypatch.setattr(selectors, "approval_stats", boom)
    client = api("read")
    client.raise_request_exception = False
    error = assert_error(client.get("/api/status"), 500, "server_error")
    assert "炸" not in error["message"]


def test_schema_and_docs(db):
    schema = APIClient().get("/api/schema", {"format": "json"})
    assert schema.status_code == 200
    text = schema.content.decode()
    data = json.loads(text)
    for path in ("/api/stage/approval/wait", "/api/approve/{public_id}", "/api/build/result", "/api/users"):
        assert path in data["paths"]
    assert "修复支付回调" in text and "BearerToken" in text
    docs = APIClient().get("/api/docs")
    assert docs.status_code == 200 and b"/api/schema" in docs.content
