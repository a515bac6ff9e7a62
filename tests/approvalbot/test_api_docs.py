"""/api/docs 的内容（OpenAPI：/api/schema）：每个接口有给人看的说明、请求体的结构与示例，中文与英文（Accept-Language）。

xfail(strict=True) 的两条是还没做完的部分（代码在 jenkins_bridge/api/，不在本测试作者的范围）：修好后它们会 XPASS
而失败，届时去掉标记。
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.django_db

CJK = re.compile(r"[\u4e00-\u9fff]")


def _schema(client, language: str) -> dict:
    response = client.get("/api/schema?format=json", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    return json.loads(response.content)


def _operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", method, operation


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_every_operation_has_a_summary_a_description_and_a_request_schema(client, language):
    schema = _schema(client, language)
    problems = []
    for name, method, operation in _operations(schema):
        if not (operation.get("summary") or "").strip() or len(operation.get("description") or "") < 20:
            problems.append(f"{name}: 缺少说明")
        if method in ("post", "put", "patch"):
            content = (operation.get("requestBody") or {}).get("content") or {}
            if not any("schema" in body for body in content.values()):
                problems.append(f"{name}: 缺少请求体结构")
            if not any(body.get("examples") for body in content.values()):
                problems.append(f"{name}: 缺少请求示例")
    assert not problems, problems
    if language == "en":
        assert not CJK.search(schema["info"]["title"] + schema["info"]["description"])


@pytest.mark.xfail(strict=True, reason="列表、详情、用户、构建结果的回答还没有示例，成功回答（200/201）没有说明"
                                       "（jenkins_bridge/api/views.py 的 extend_schema）")
def test_every_operation_shows_an_example_and_describes_its_answers(client):
    missing = []
    for name, _method, operation in _operations(_schema(client, "zh-hans")):
        for code, response in operation.get("responses", {}).items():
            if not (response.get("description") or "").strip():
                missing.append(f"{name} {code}: 回答没有说明")
        bodies = [*((operation.get("requestBody") or {}).get("content") or {}).values(),
                  *(body for response in operation.get("responses", {}).values()
                    for body in (response.get("content") or {}).values())]
        if not any(body.get("examples") for body in bodies) or not any(
                body.get("examples") for response in operation.get("responses", {}).values()
                for body in (response.get("content") or {}).values()):
            missing.append(name)
    assert not missing, missing


@pytest.mark.xfail(strict=True, reason="英文文档里仍有中文：查询参数的说明在导入时被 str() 成中文"
                                       "（jenkins_bridge/api/fields.py query_parameters），示例的值也只有中文")
def test_english_docs_have_no_chinese_left(client):
    leftovers = {}
    for name, _method, operation in _operations(_schema(client, "en")):
        found = re.findall(r'"[^"]*[\u4e00-\u9fff][^"]*"', json.dumps(operation, ensure_ascii=False))
        if found:
            leftovers[name] = found[:3]
    assert not leftovers, leftovers


def test_docs_page_is_served_in_the_visitors_language(client):
    page = client.get("/api/docs", HTTP_ACCEPT_LANGUAGE="en")

    assert page.status_code == 200
    assert "/api/schema" in page.content.decode()
