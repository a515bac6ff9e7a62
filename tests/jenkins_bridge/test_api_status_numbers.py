"""/api/status 的审批分析（X18）：原有字段不变（全部历史），新增的 analytics 按查询参数选范围；参数错了是 400，
文档（/api/schema）写明了参数与每个新字段，真实的回答符合文档。"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import jsonschema
import pytest
import time_machine
from rest_framework.test import APIClient

from approvals.models import Approval, Vote
from tests.approvals.test_analytics import MIN, NOW, known_data, make_row

pytestmark = pytest.mark.django_db

RANGE = {"until": "2026-03-10", "days": "14"}
OLD_KEYS = {"total", "by_status", "today", "median_decision_seconds"}


@pytest.fixture
def data(make_approval, people, jenkins_server):
    with time_machine.travel(NOW, tick=False):
        return known_data(make_approval, people)


@pytest.fixture
def reader(api):
    return api("read")


def status(client, params: dict[str, Any] | str | None = None):
    with time_machine.travel(NOW, tick=False):
        if isinstance(params, str):
            return client.get(f"/api/status?{params}")
        return client.get("/api/status", params or {})


def assert_error(response, code: str = "validation_error") -> dict:
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"].startswith("请求参数不正确：")
    return body["error"]


def test_existing_fields_keep_their_meaning(reader, data):
    body = status(reader, {**RANGE, "project": "pay-api"}).json()
    assert OLD_KEYS | {"analytics"} == set(body)
    # 原有字段是全部历史，不受参数影响（O1 在 1 月）
    assert body["total"] == 11 and body["by_status"]["approved"] == 4
    assert body["today"] == 2  # P1、P2 在“今天”（3 月 10 日）
    assert body["analytics"]["created"] == 5


def test_analytics_numbers_on_known_data(reader, data):
    analytics = status(reader, RANGE).json()["analytics"]
    assert analytics["period"] == {"since": "2026-02-25", "until": "2026-03-10", "days": 14}
    assert analytics["filters"] == {"project": None, "environment": None}
    assert analytics["created"] == 10
    assert analytics["by_status"] == {"pending": 3, "approved": 3, "rejected": 2, "timeout": 1, "cancelled": 1}
    assert analytics["decisions"] == {"count": 5, "median_seconds": 1800.0, "p90_seconds": pytest.approx(10080.0),
                                      "sampled": False}
    assert [(r["project"], r["count"], r["median_seconds"], round(r["p90_seconds"]))
            for r in analytics["per_project"]] == [("shop-backend", 3, 1800.0, 3240), ("pay-api", 2, 7350.0, 12990)]
    assert [(r["approver"], r["name"], r["count"], r["median_seconds"], round(r["p90_seconds"]))
            for r in analytics["per_approver"]] == [("bob", "Bob", 4, 780.0, 2880), ("erin", "Erin", 3, 1800.0, 11880)]
    day = {row["date"]: row for row in analytics["daily"]}
    assert len(day) == 14
    assert day["2026-03-06"] == {"date": "2026-03-06", "pending": 0, "approved": 0, "rejected": 1, "timeout": 1,
                                 "cancelled": 0}
    assert day["2026-03-10"]["pending"] == 2
    assert analytics["weekly"][1] == {"week": "2026-03-02", "timeouts": 1, "freezes": 0}
    assert (analytics["timeouts"], analytics["freezes"]) == (1, 0)
    assert [b["count"] for b in analytics["reminders"][:4]] == [2, 1, 1, 1]
    assert analytics["decided_without_reminder"] == pytest.approx(0.4)
    pending = analytics["pending_now"]
    assert (pending["count"], pending["oldest_seconds"]) == (3, 3 * 86400.0)
    assert [b["count"] for b in pending["buckets"]] == [1, 0, 1, 0, 1]
    assert pending["buckets"][-1] == {"up_to_seconds": None, "count": 1}
    assert pending["oldest"][0] == {"id": data["P3"].public_id, "project": "pay-api", "environment": "test",
                                    "age_seconds": 3 * 86400.0}


def test_filters_by_project_and_environment_alias(reader, data):
    analytics = status(reader, {**RANGE, "project": "pay-api"}).json()["analytics"]
    assert analytics["filters"]["project"] == "pay-api" and analytics["created"] == 5
    assert [r["project"] for r in analytics["per_project"]] == ["pay-api"]
    analytics = status(reader, {**RANGE, "environment": "生产"}).json()["analytics"]
    assert analytics["filters"]["environment"] == "production" and analytics["created"] == 5
    assert analytics["decisions"]["median_seconds"] == 30 * MIN


def test_defaults_are_the_last_30_days_up_to_today(reader, data):
    period = status(reader).json()["analytics"]["period"]
    assert period == {"since": "2026-02-09", "until": "2026-03-10", "days": 30}


def test_extreme_dates_are_answered_not_crashed(reader, data):
    early = status(reader, {"until": "0001-01-01", "days": "366"}).json()["analytics"]
    assert early["period"] == {"since": "1970-01-02", "until": "1970-01-02", "days": 1} and early["created"] == 0
    late = status(reader, {"until": "9999-12-31", "days": "366"}).json()["analytics"]
    assert late["period"]["until"] == "9999-12-30" and late["period"]["days"] == 366


@pytest.mark.parametrize(("query", "field"), [
    ("days=0", "days"),
    ("days=367", "days"),
    ("days=abc", "days"),
    ("days=1.5", "days"),
    ("until=2026-02-30", "until"),
    ("until=20260310", "until"),
    ("until=2026-3-1", "until"),
    ("until=", "until"),
    ("project=", "project"),
    ("project=" + "x" * 201, "project"),
    ("environment=" + "e" * 65, "environment"),
    ("days=7&days=14", "days"),
])
def test_bad_parameters_are_400_with_the_error_shape(reader, data, query, field):
    votes = Vote.objects.count()
    error = assert_error(status(reader, query))
    assert list(error["details"]["fields"]) == [field]
    assert Approval.objects.count() == 11 and Vote.objects.count() == votes


def test_needs_a_read_token(api, data):
    assert APIClient().get("/api/status").status_code == 401
    assert api("jenkins").get("/api/status").status_code == 403


# ---------------------------------------------------------------- 文档


def openapi() -> dict[str, Any]:
    return APIClient().get("/api/schema", {"format": "json"}).json()


def json_schema(node: Any) -> Any:
    """OpenAPI 3.0 的 schema → JSON Schema：nullable 换成“或 null”，$ref 指向 $defs。"""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: json_schema(value) for key, value in node.items() if key not in ("nullable", "readOnly")}
    if "$ref" in converted:
        converted["$ref"] = converted["$ref"].replace("#/components/schemas/", "#/$defs/")
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") else converted


def reply_validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    components = schema["components"]["schemas"]
    return jsonschema.Draft202012Validator({"$defs": {name: json_schema(value) for name, value in components.items()},
                                            "$ref": "#/$defs/StatusReply"})


def test_parameters_and_fields_are_documented(reader, data):
    schema = openapi()
    operation = schema["paths"]["/api/status"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"until", "days", "project", "environment"}
    assert all(p["in"] == "query" and not p.get("required") for p in params.values())
    assert params["until"]["schema"] == {"type": "string", "format": "date"}
    assert params["days"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 366}
    assert params["project"]["schema"]["maxLength"] == 200 and params["project"]["schema"]["minLength"] == 1
    assert {"200", "400", "401", "403"} <= set(operation["responses"])
    assert operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")

    components = schema["components"]["schemas"]
    reply = components["StatusReply"]
    assert OLD_KEYS | {"analytics"} <= set(reply["required"])
    analytics = components[reply["properties"]["analytics"]["$ref"].rsplit("/", 1)[-1]]
    assert set(analytics["properties"]) == {
        "period", "filters", "created", "by_status", "decisions", "per_project", "per_approver", "daily", "weekly",
        "timeouts", "freezes", "reminders", "decided_without_reminder", "pending_now"}

    # 真实的回答（有数据、空范围、有过滤）都符合文档
    validator = reply_validator(schema)
    for params in (RANGE, {"until": "2025-01-01", "days": "3"}, {**RANGE, "project": "pay-api"}):
        body = status(reader, params).json()
        validator.validate(body)
    body["analytics"]["pending_now"]["buckets"][0]["count"] = "1"
    assert not validator.is_valid(body)  # 校验器真的在看嵌套的字段


def test_documented_example_matches_the_schema():
    schema = openapi()
    example = (schema["paths"]["/api/status"]["get"]["responses"]["200"]["content"]["application/json"]
               ["examples"])
    [value] = [item["value"] for item in example.values()]
    reply_validator(schema).validate(value)
    days = [date.fromisoformat(day["date"]) for day in value["analytics"]["daily"]]
    assert days[-1] - days[0] == timedelta(days=value["analytics"]["period"]["days"] - 1)


def test_recent_vote_counts_in_the_default_range(reader, make_approval, people, jenkins_server):
    with time_machine.travel(NOW, tick=False):
        make_row(make_approval, project="x", environment="test", created=NOW - timedelta(hours=3),
                 status="approved", after_minutes=12, votes=[(people["approver"], "approve", 12)])
    analytics = status(reader).json()["analytics"]
    assert analytics["per_approver"] == [{"approver": "bob", "name": "Bob", "count": 1, "median_seconds": 720.0,
                                          "p90_seconds": 720.0}]
