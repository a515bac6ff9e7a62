"""探测出的漏洞 1：嵌套很深的 JSON、各字段里放了对象/数组/非有限数——一律 400 统一错误形状，什么都不写入。

嵌套 1000 层的请求体曾让 JSON 解析器 RecursionError，得到 500。
"""

from __future__ import annotations

import json

import pytest

from approvals.models import Approval, BuildResult, Vote
from tests.jenkins_bridge.test_api import JENKINS_BODY, WAIT, assert_error

pytestmark = pytest.mark.django_db

RESULT = "/api/build/result"


def nested(depth: int, *, kind: str = "object") -> str:
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "1" + "]" * depth


@pytest.fixture
def pending(make_approval, shop_rule, jenkins_server):
    return make_approval()


def _paths(pending) -> list[str]:
    return [WAIT, RESULT, f"/api/approve/{pending.public_id}", f"/api/reject/{pending.public_id}"]


@pytest.mark.parametrize("kind", ["object", "array"])
def test_deeply_nested_json_is_400_on_every_endpoint(api, pending, kind):
    client = api("jenkins", "approve", "read")
    for path in _paths(pending):
        response = client.post(path, data=nested(1000, kind=kind), content_type="application/json")
        error = assert_error(response, 400, "nesting_too_deep")
        assert error["details"] == {"max_depth": 32}
        assert "32" in error["message"] and "嵌套" in error["message"]
    assert Approval.objects.count() == 1 and not BuildResult.objects.exists() and not Vote.objects.exists()


def test_nesting_inside_a_field_value_counts_too(api, pending):
    body = '{"JOB_NAME": "shop-backend", "BUILD_NUMBER": 5, "description": ' + nested(200, kind="array") + "}"
    assert_error(api("jenkins").post(WAIT, data=body, content_type="application/json"), 400, "nesting_too_deep")
    assert Approval.objects.count() == 1


def test_brackets_inside_strings_do_not_count_as_nesting(api, jenkins_server, shop_rule):
    """字符串里的括号（含转义的引号）不是嵌套：这样的发布说明照常创建审批。"""
    description = "[" * 500 + '\\"{' * 100 + "中文 🚀"
    body = {**JENKINS_BODY, "description": description}
    response = api("jenkins").post(WAIT, data=json.dumps(body, ensure_ascii=False).encode(),
                                   content_type="application/json")
    assert response.status_code == 201, response.content
    assert Approval.objects.get().description == description


def test_nesting_at_the_limit_still_reaches_validation(api, jenkins_server, shop_rule):
    """32 层以内交给正常校验（这里 description 是数组，所以是 validation_error，而不是嵌套错误）。"""
    body = '{"JOB_NAME": "shop-backend", "BUILD_NUMBER": 5, "description": ' + nested(31, kind="array") + "}"
    error = assert_error(api("jenkins").post(WAIT, data=body, content_type="application/json"),
                         400, "validation_error")
    assert "description" in error["details"]["fields"]
    assert not Approval.objects.exists()


def test_unclosed_deep_nesting_is_400_not_500(api, jenkins_server):
    response = api("jenkins").post(WAIT, data="[" * 5000, content_type="application/json")
    assert_error(response, 400, "nesting_too_deep")


def test_nesting_error_message_in_english(api, jenkins_server):
    response = api("jenkins").post(WAIT, data=nested(1000), content_type="application/json",
                                   HTTP_ACCEPT_LANGUAGE="en")
    error = assert_error(response, 400, "nesting_too_deep")
    assert error["message"] == "The JSON request body is nested too deeply (at most 32 levels)."


# 每个字段放进对象、数组、布尔、非有限数：400 validation_error 指出那个字段，而不是 500 或悄悄接受
WAIT_FIELDS = ["project", "job_name", "environment", "build_number", "build_url", "version", "description",
               "operation", "requested_by", "input_id", "callback_url", "timeout_minutes", "wait", "id", "jenkins"]
SHAPES = [{"a": 1}, [1], ["x", "y"], True]


@pytest.mark.parametrize("field", WAIT_FIELDS)
@pytest.mark.parametrize("value", SHAPES, ids=["object", "list", "list2", "bool"])
def test_wait_field_with_wrong_shape_is_400(api, jenkins_server, shop_rule, field, value):
    body = {"project": "shop-backend", "build_number": 5, field: value}
    response = api("jenkins").post(WAIT, body, format="json")
    error = assert_error(response, 400, "validation_error")
    assert field in error["details"]["fields"], error
    assert not Approval.objects.exists()


@pytest.mark.parametrize("raw", ['"nan"', '"NaN"', '"inf"', '"-inf"', "1e309", "-1e309", '"1e309"'])
def test_wait_seconds_must_be_a_finite_number(api, jenkins_server, shop_rule, raw):
    body = '{"project": "shop-backend", "build_number": 5, "wait": ' + raw + "}"
    error = assert_error(api("jenkins").post(WAIT, data=body, content_type="application/json"),
                         400, "validation_error")
    assert "wait" in error["details"]["fields"]
    assert not Approval.objects.exists()


@pytest.mark.parametrize(("field", "raw"), [
    ("build_number", "1e309"), ("build_number", "1.5"), ("timeout_minutes", "1e309"), ("timeout_minutes", '"nan"'),
    ("build_number", '"nan"'), ("build_number", "NaN"), ("wait", "Infinity"),
])
def test_numbers_that_are_not_integers_are_400(api, jenkins_server, shop_rule, field, raw):
    body = '{"project": "shop-backend", "build_number": 5, "' + field + '": ' + raw + "}"
    response = api("jenkins").post(WAIT, data=body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in ("validation_error", "parse_error")
    assert not Approval.objects.exists()


RESULT_FIELDS = ["project", "job_name", "build_number", "build_url", "result", "duration", "id", "jenkins"]


@pytest.mark.parametrize("field", RESULT_FIELDS)
@pytest.mark.parametrize("value", SHAPES[:3], ids=["object", "list", "list2"])
def test_build_result_field_with_wrong_shape_is_400(api, jenkins_server, field, value):
    body = {"project": "shop-backend", "build_number": 5, "result": "SUCCESS", field: value}
    error = assert_error(api("jenkins").post(RESULT, body, format="json"), 400, "validation_error")
    assert field in error["details"]["fields"], error
    assert not BuildResult.objects.exists()


@pytest.mark.parametrize("raw", ["1e309", '"nan"', "1.5"])
def test_build_result_duration_must_be_an_integer(api, jenkins_server, raw):
    body = '{"project": "shop-backend", "build_number": 5, "result": "SUCCESS", "duration": ' + raw + "}"
    error = assert_error(api("jenkins").post(RESULT, data=body, content_type="application/json"),
                         400, "validation_error")
    assert "duration" in error["details"]["fields"]
    assert not BuildResult.objects.exists()


@pytest.mark.parametrize("body", [{"approver": {"a": 1}}, {"approver": ["bob"]}, {"approver": "bob", "reason": [1]},
                                  {"approver": "bob", "reason": {"x": "y"}}])
def test_decision_field_with_wrong_shape_is_400(api, pending, body):
    error = assert_error(api("approve").post(f"/api/approve/{pending.public_id}", body, format="json"),
                         400, "validation_error")
    assert set(error["details"]["fields"]) <= {"approver", "reason"}
    assert not Vote.objects.exists()


def test_form_and_query_bodies_cannot_nest(api, jenkins_server, shop_rule):
    """表单与查询串本来就是扁平的：括号写法的键只是普通键名，不会被展开成嵌套结构。"""
    client = api("jenkins")
    response = client.post(WAIT, {"project": "shop-backend", "build_number": "5", "description[a][b]": "x"})
    assert response.status_code == 201, response.content
    response = client.get(WAIT, {"project": "shop-backend", "build_number": "6", "wait[0]": "1"})
    assert response.status_code == 201, response.content
