"""探测出的漏洞 5：OpenAPI 文档（/api/schema）要如实描述服务器的行为。

- /api/users 回答的是分页对象，文档却说是数组；
- page=null 得到文档里没有的 404；空的 status= 被接受；
- 服务器执行的约束（timeout ≥ 1、不许 NUL、必须有项目、未知审批人 400……）文档里没有；
- 七个接口的说明是内部文档字符串「所有 API 的基类…」；POST 等待接口把请求体字段写成了查询参数。
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from approvals.models import Approval
from tests.jenkins_bridge.test_api import WAIT, assert_error

pytestmark = pytest.mark.django_db

WAIT_FIELDS = {"project", "job_name", "environment", "build_number", "build_url", "version", "description",
               "operation", "requested_by", "input_id", "callback_url", "timeout_minutes", "wait", "id", "jenkins",
               "emergency", "emergency_reason"}


@pytest.fixture
def schema() -> dict[str, Any]:
    response = APIClient().get("/api/schema", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/") and path not in ("/api/schema", "/api/docs"):
                yield path, method, operation


def body_schema(schema: dict, operation: dict) -> dict:
    return resolve(schema, operation["requestBody"]["content"]["application/json"]["schema"])


def variants(prop: dict) -> list[dict]:
    """一个字段的各种可接受形状（oneOf/anyOf 的分支，或它本身）。"""
    return prop.get("oneOf") or prop.get("anyOf") or [prop]


def test_users_is_documented_as_the_paginated_object_it_returns(api, people, schema):
    reply = resolve(schema, schema["paths"]["/api/users"]["get"]["responses"]["200"]["content"]["application/json"]
                    ["schema"])
    assert reply["type"] == "object" and {"count", "next", "previous", "results"} <= set(reply["properties"])
    assert resolve(schema, reply["properties"]["results"]["items"])["properties"]["username"]
    body = api("read").get("/api/users").json()
    assert set(body) == {"count", "next", "previous", "results"} and body["count"] == 5


@pytest.mark.parametrize("path", ["/api/users", "/api/approvals"])
@pytest.mark.parametrize("page", ["null", "abc", "0", "-1", "1.5", ""])
def test_invalid_page_is_400_invalid_page(api, people, path, page):
    error = assert_error(api("read").get(path, {"page": page}), 400, "invalid_page")
    assert error["details"] == {"page": page}


@pytest.mark.parametrize("path", ["/api/users", "/api/approvals"])
@pytest.mark.parametrize("size", ["0", "-3", "abc", "201", ""])
def test_invalid_page_size_is_400(api, people, path, size):
    """以前不合法的 page_size 被悄悄换成默认值；现在和 page 一样是 400。"""
    error = assert_error(api("read").get(path, {"page_size": size}), 400, "invalid_page")
    assert error["details"] == {"page_size": size}
    assert api("read").get(path, {"page_size": "200"}).status_code == 200


def test_page_past_the_end_is_404_and_documented(api, people, schema):
    assert_error(api("read").get("/api/users", {"page": 99}), 404, "not_found")
    for path in ("/api/users", "/api/approvals"):
        operation = schema["paths"][path]["get"]
        assert {"400", "404"} <= set(operation["responses"])
        [page] = [p for p in operation["parameters"] if p["name"] == "page"]
        assert page["schema"]["type"] == "integer" and page["schema"]["minimum"] == 1


def test_empty_status_filter_is_400(api, make_approval, shop_rule, jenkins_server, schema):
    make_approval()
    error = assert_error(api("read").get("/api/approvals", {"status": ""}), 400, "validation_error")
    assert "status" in error["details"]["fields"]
    [status] = [p for p in schema["paths"]["/api/approvals"]["get"]["parameters"] if p["name"] == "status"]
    assert "" not in status["schema"]["enum"]


def test_every_operation_has_a_user_facing_description(schema):
    seen = 0
    for path, method, operation in operations(schema):
        seen += 1
        assert operation.get("summary"), (method, path)
        description = operation.get("description") or ""
        assert description and "基类" not in description and "APIView" not in description, (method, path)
    assert seen == 9


def test_every_error_status_is_documented_with_the_error_shape(schema):
    expected = {
        ("/api/stage/approval/wait", "get"): {"400", "401", "403", "404"},
        ("/api/stage/approval/wait", "post"): {"400", "401", "403", "404", "413"},
        ("/api/build/result", "post"): {"400", "401", "403", "404", "413"},
        ("/api/approve/{public_id}", "post"): {"400", "401", "403", "404", "409", "413"},
        ("/api/reject/{public_id}", "post"): {"400", "401", "403", "404", "409", "413"},
        ("/api/status", "get"): {"401", "403"},
        ("/api/status/{public_id}", "get"): {"401", "403", "404"},
        ("/api/approvals", "get"): {"400", "401", "403", "404"},
        ("/api/users", "get"): {"400", "401", "403", "404"},
    }
    for (path, method), codes in expected.items():
        responses = schema["paths"][path][method]["responses"]
        assert codes <= set(responses), (method, path, sorted(responses))
        for code in codes:
            ref = responses[code]["content"]["application/json"]["schema"]
            error = resolve(schema, ref)
            assert set(error["required"]) == {"error"}, (method, path, code)
            assert set(resolve(schema, error["properties"]["error"])["required"]) == {"code", "message", "details"}
            assert responses[code]["description"], (method, path, code)


def test_post_wait_documents_a_request_body_and_get_documents_query_parameters(schema):
    get = schema["paths"][WAIT]["get"]
    post = schema["paths"][WAIT]["post"]
    assert {p["name"] for p in get["parameters"] if p["in"] == "query"} == WAIT_FIELDS
    assert "requestBody" not in get
    assert not [p for p in post.get("parameters", []) if p["in"] == "query"]
    assert set(body_schema(schema, post)["properties"]) == WAIT_FIELDS
    assert set(post["requestBody"]["content"]) >= {"application/json", "application/x-www-form-urlencoded"}


def _prop(schema: dict, path: str, method: str, name: str) -> dict:
    operation = schema["paths"][path][method]
    if method == "get":
        [param] = [p for p in operation["parameters"] if p["name"] == name]
        return param["schema"]
    return resolve(schema, body_schema(schema, operation)["properties"][name])


@pytest.mark.parametrize("method", ["get", "post"])
def test_wait_fields_carry_the_bounds_the_server_enforces(schema, method):
    def integer_branch(prop: dict) -> dict:
        return next(v for v in variants(prop) if v.get("type") == "integer")

    timeout = integer_branch(_prop(schema, WAIT, method, "timeout_minutes"))
    assert timeout["minimum"] == 1 and timeout["maximum"] == 7 * 24 * 60
    build = integer_branch(_prop(schema, WAIT, method, "build_number"))
    assert build["minimum"] == 0 and build["maximum"] == 2_147_483_647
    wait = next(v for v in variants(_prop(schema, WAIT, method, "wait")) if v.get("type") == "number")
    assert wait["minimum"] == 0 and wait["maximum"] == 60
    for name, limit in (("description", 10000), ("version", 200), ("environment", 32), ("callback_url", 500)):
        text = next(v for v in variants(_prop(schema, WAIT, method, name)) if v.get("type") == "string")
        assert text["maxLength"] == limit, name
        assert "\\x00" in text.get("pattern", ""), name  # 不许 NUL（PostgreSQL/MySQL 存不了，DRF 拒绝）


def test_wait_body_states_what_is_required(schema):
    """没有 id 时必须有项目（任一写法）与构建号：文档用 anyOf 说明。"""
    body = body_schema(schema, schema["paths"][WAIT]["post"])
    alternatives = [set(branch.get("required", [])) for branch in body["anyOf"]]
    assert {"id"} in alternatives
    assert {"project", "build_number"} in alternatives and {"job_name", "build_number"} in alternatives


def test_decision_and_build_result_state_required_fields(schema):
    decision = body_schema(schema, schema["paths"]["/api/approve/{public_id}"]["post"])
    assert decision["required"] == ["approver"]
    approver = next(v for v in variants(decision["properties"]["approver"]) if v.get("type") == "string")
    assert approver["minLength"] == 1 and approver["maxLength"] == 150
    result = body_schema(schema, schema["paths"]["/api/build/result"]["post"])
    assert {"build_number", "result"} <= set(result["required"])
    alternatives = [set(branch.get("required", [])) for branch in result["anyOf"]]
    assert {"project"} in alternatives and {"job_name"} in alternatives


def test_documented_constraints_are_what_the_server_enforces(api, jenkins_server, shop_rule):
    """文档里写的约束，服务器都执行（反过来由 Schemathesis 的测试保证）。"""
    client = api("jenkins")
    base = {"project": "shop-backend", "build_number": 5}
    for body in ({**base, "timeout_minutes": 0}, {**base, "description": "a\x00b"}, {"build_number": 5},
                 {"project": "shop-backend"}, {**base, "wait": 61}):
        assert_error(client.post(WAIT, body, format="json"), 400, "validation_error")
    assert not Approval.objects.exists()


def test_a_parameter_given_twice_is_400_not_silently_the_last(api, pending_approval):
    """文档里每个参数都是单个值：给两次（查询串或表单）是 400，而不是悄悄取最后一个。"""
    client = api("jenkins", "approve", "read")
    error = assert_error(client.get(f"{WAIT}?project=shop-backend&build_number=1&build_number=2"),
                         400, "validation_error")
    assert "build_number" in error["details"]["fields"]
    error = assert_error(client.get("/api/approvals?status=pending&status=approved"), 400, "validation_error")
    assert "status" in error["details"]["fields"]
    assert_error(client.get("/api/users?page=1&page=1"), 400, "invalid_page")
    error = assert_error(client.post(f"/api/approve/{pending_approval.public_id}",
                                     "approver=bob&approver=erin", content_type="application/x-www-form-urlencoded"),
                         400, "validation_error")
    assert "approver" in error["details"]["fields"]
    assert Approval.objects.count() == 1 and Approval.objects.get().status == "pending"


@pytest.fixture
def pending_approval(make_approval, shop_rule, jenkins_server):
    return make_approval()
