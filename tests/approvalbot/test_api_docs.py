"""/api/docs 的内容（OpenAPI：/api/schema）：每个接口有给人看的说明、请求体的结构与示例，中文与英文（Accept-Language）。"""

from __future__ import annotations

import json
import re

import jsonschema
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


def test_english_docs_have_no_chinese_left(client):
    schema = _schema(client, "en")
    leftovers = {}
    parts = [*((name, operation) for name, _method, operation in _operations(schema)),
             *((f"components {name}", component) for name, component in schema["components"]["schemas"].items())]
    for name, part in parts:
        found = re.findall(r'"[^"]*[\u4e00-\u9fff][^"]*"', json.dumps(part, ensure_ascii=False))
        if found:
            leftovers[name] = found[:3]
    assert not leftovers, leftovers


def _json_schema(node, closed: bool):
    """OpenAPI 3.0 → JSON Schema：nullable 换成“或 null”，$ref 指向 $defs。
    closed：对象不许有文档之外的字段——回答的示例不能编造服务器不会给的字段（请求可以用别名，不封闭）。"""
    if isinstance(node, list):
        return [_json_schema(item, closed) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {}
    for key, value in node.items():
        if key == "properties":
            converted[key] = {name: _json_schema(prop, closed) for name, prop in value.items()}
        elif key not in ("nullable", "readOnly", "example"):
            converted[key] = _json_schema(value, closed)
    if "$ref" in converted:
        converted["$ref"] = converted["$ref"].replace("#/components/schemas/", "#/$defs/")
    if closed and "properties" in node and "additionalProperties" not in node:
        converted["additionalProperties"] = False
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") else converted


def test_every_example_fits_its_schema(client):
    """示例与文档的结构一致：照着示例写的请求不该被文档判为不合法，照着示例解析回答的代码不会扑空。"""
    schema = _schema(client, "zh-hans")
    problems = []
    for name, _method, operation in _operations(schema):
        bodies = [*(("request", body) for body in ((operation.get("requestBody") or {}).get("content") or {}).values()),
                  *((f"response {code}", body) for code, response in operation.get("responses", {}).items()
                    for body in (response.get("content") or {}).values())]
        for where, body in bodies:
            closed = where != "request"
            defs = {key: _json_schema(value, closed) for key, value in schema["components"]["schemas"].items()}
            validator = jsonschema.Draft202012Validator({"$defs": defs, **_json_schema(body["schema"], closed)},
                                                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
            for key, example in (body.get("examples") or {}).items():
                problems += [f"{name} {where} {key}: {error.message}" for error in validator.iter_errors(example["value"])]
    assert not problems, problems


def test_docs_page_is_served_in_the_visitors_language(client):
    page = client.get("/api/docs", HTTP_ACCEPT_LANGUAGE="en")

    assert page.status_code == 200
    assert "/api/schema" in page.content.decode()
