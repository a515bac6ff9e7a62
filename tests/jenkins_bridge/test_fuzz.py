"""按 OpenAPI 文档随机生成请求（Hypothesis）：任何输入都不能得到 5xx，失败一律是统一的错误形状。

比 Schemathesis 轻：直接读我们自己生成的 schema，字段按声明的类型生成，再混入各种“坏”值。
例子数量有上限，整套测试仍然很快。
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

NASTY = st.sampled_from(["", " ", "\x00", "生产", "😀🚀", "a" * 600, "../../etc/passwd", "1e309", "-1", "NaN",
                         "null", "true", "<script>", "ZZZZZZZZ", "0", "99999999999999999999"])
SCALAR = st.one_of(st.text(max_size=40), st.integers(min_value=-(2**63), max_value=2**63), st.floats(allow_nan=False),
                   st.booleans(), st.none(), NASTY)
JUNK = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                    max_leaves=6)


def _schema() -> dict[str, Any]:
    return json.loads(APIClient().get("/api/schema", {"format": "json"}).content)


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def _value_for(prop: dict) -> st.SearchStrategy:
    kind = prop.get("type")
    typed = {"integer": st.integers(min_value=-10, max_value=10**12), "number": st.floats(allow_nan=False),
             "boolean": st.booleans(), "string": st.one_of(st.text(max_size=30), NASTY)}.get(kind, SCALAR)
    if "enum" in prop:
        typed = st.one_of(st.sampled_from(prop["enum"]), typed)
    return st.one_of(typed, typed, JUNK)  # 多数时候类型正确，偶尔什么都有


# 每个操作的一组“基本有效”的字段：让生成的请求有机会走到创建与决定的深处，而不是全在校验处被挡回
VALID_BASE = {
    "/api/stage/approval/wait": {"project": st.sampled_from(["shop-backend", "folder/shop-api", "新项目"]),
                                 "build_number": st.integers(min_value=0, max_value=10**6),
                                 "environment": st.sampled_from(["test", "生产", "prod", ""]),
                                 "wait": st.just(0)},
    "/api/approve/{public_id}": {"approver": st.sampled_from(["bob", "erin", "alice", "dave", "mallory", "ghost"])},
    "/api/reject/{public_id}": {"approver": st.sampled_from(["bob", "erin", "alice", "dave", "mallory", "ghost"])},
    "/api/build/result": {"JOB_NAME": st.just("shop-backend"), "BUILD_NUMBER": st.integers(0, 10**6),
                          "result": st.sampled_from(["SUCCESS", "FAILURE", "ABORTED", "UNSTABLE", "NOT_BUILT"])},
}


def _body_strategy(schema: dict, operation: dict, path: str) -> st.SearchStrategy:
    content = (operation.get("requestBody") or {}).get("content") or {}
    media = content.get("application/json")
    if not media:
        return st.none()
    node = _resolve(schema, media["schema"])
    props = {name: _value_for(_resolve(schema, p)) for name, p in (node.get("properties") or {}).items()}
    base = VALID_BASE.get(path, {})
    mostly_valid = st.fixed_dictionaries(base).flatmap(
        lambda valid: st.fixed_dictionaries({}, optional={k: v for k, v in props.items() if k not in valid}).map(
            lambda extra: {**valid, **extra}))
    well_formed = st.fixed_dictionaries({}, optional=props)
    return st.one_of(mostly_valid, mostly_valid, well_formed, JUNK)


OPERATIONS = [
    ("get", "/api/stage/approval/wait"), ("post", "/api/stage/approval/wait"), ("get", "/api/status"),
    ("get", "/api/status/{public_id}"), ("get", "/api/approvals"), ("post", "/api/approve/{public_id}"),
    ("post", "/api/reject/{public_id}"), ("get", "/api/users"), ("post", "/api/build/result"),
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_input_gives_a_5xx(method, path, api, jenkins_server, shop_rule, make_approval):
    schema = _schema()
    operation = schema["paths"][path][method]
    pending = make_approval()
    client = api("jenkins", "approve", "read")
    params = {p["name"]: _value_for(p.get("schema") or {}) for p in operation.get("parameters", [])
              if p["in"] == "query"}
    query = st.fixed_dictionaries({}, optional=params)
    path_id = st.one_of(st.just(pending.public_id), st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s),
                        NASTY.filter(lambda s: s and "/" not in s))

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(query=query, body=_body_strategy(schema, operation, path), public_id=path_id)
    def run(query, body, public_id):
        url = path.replace("{public_id}", public_id)
        encoded_query = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in query.items()}
        encoded_query = {k: v.replace("\x00", "") for k, v in encoded_query.items()}
        if method == "get":
            response = client.get(url, encoded_query)
        else:
            response = client.post(url, data=json.dumps(body), content_type="application/json",
                                   QUERY_STRING="&".join(f"{k}=x" for k in encoded_query))
        assert response.status_code < 500, (url, query, body, response.content[:500])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["code"] and error["message"]

    run()

