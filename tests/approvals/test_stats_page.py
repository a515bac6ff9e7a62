"""统计页 /stats（X18）：只给 staff；图是服务端画的 SVG；过滤条件错了说清楚（400），不会 500。

也测画图的小工具 approvals.charts：坐标轴刻度、柱高与数值成比例、文字转义、没有数据时的说明。
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
import time_machine

from approvals.charts import Series, axis_ticks, column_chart, duration_label, fit_text, line_chart, row_chart
from approvals.models import Approval, Status
from tests.approvals.test_analytics import NOW, known_data, make_row

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
RANGE = "until=2026-03-10&days=14"


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(user)
    return client


@pytest.fixture
def data(make_approval, people):
    with time_machine.travel(NOW, tick=False):
        return known_data(make_approval, people)


def get(client, query: str = RANGE, **headers):
    with time_machine.travel(NOW, tick=False):
        return client.get(f"/stats?{query}", **headers)


def svgs(html: str) -> dict[str, ET.Element]:
    """页面里每张图（按所在卡片的 id），解析成 XML：同时证明 SVG 是良构的。"""
    found = {}
    for card, svg in re.findall(r'<section class="card[^"]*" id="([^"]+)">.*?(<svg .*?</svg>)', html, re.S):
        found[card] = ET.fromstring(svg)
    return found


def bars(svg: ET.Element, key: str | None = None) -> list[ET.Element]:
    return [rect for rect in svg.iter(f"{SVG}rect") if "bar" in rect.get("class", "").split()
            and (key is None or f"s-{key}" in rect.get("class", "").split())]


def visible(text: ET.Element) -> str:
    """<text> 里显示出来的字（不含提示 <title>）。"""
    return (text.text or "") + "".join(child.tail or "" for child in text)


def texts(svg: ET.Element) -> list[str]:
    return [visible(t) for t in svg.iter(f"{SVG}text")]


# ---------------------------------------------------------------- 谁能看


def test_anonymous_is_sent_to_the_admin_login(client):
    response = client.get("/stats")
    assert response.status_code == 302 and response["Location"] == "/admin/login/?next=/stats"


def test_non_staff_user_is_sent_to_the_admin_login(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("viewer", password="pw"))
    response = client.get("/stats")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_only_get(staff):
    assert staff.post("/stats").status_code == 405


# ---------------------------------------------------------------- 页面与图


def test_page_shows_the_headline_numbers_and_every_chart(staff, data):
    response = get(staff)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="zh-hans">' in html and "/static/stats.css" in html
    headline = dict(re.findall(r'<div class="stat stat-([a-z0-9-]+)"><span class="stat-value">([^<]+)</span>', html))
    assert headline == {"created": "10", "approved": "3", "rejected": "2", "timeout": "1", "median": "30 分钟",
                        "p90": "2.8 小时", "pending": "3", "freezes": "0", "no-reminder": "40%"}
    assert "最久 3 天" in html
    charts = svgs(html)
    assert set(charts) == {"chart-daily", "chart-per-project", "chart-per-approver", "chart-pending", "chart-weekly",
                           "chart-reminders"}
    # 每天按结果：8 个有数据的日子，3 月 6 日是两段（拒绝 + 超时），共 9 段柱
    assert len(bars(charts["chart-daily"])) == 9 and len(bars(charts["chart-daily"], "approved")) == 3
    # 按项目：每个项目一根中位数、一根 P90
    assert len(bars(charts["chart-per-project"], "median")) == 2 and len(bars(charts["chart-per-project"], "p90")) == 2
    assert {"shop-backend", "pay-api"} <= set(texts(charts["chart-per-project"]))
    assert {"Bob", "Erin"} <= set(texts(charts["chart-per-approver"]))
    assert len(bars(charts["chart-pending"])) == 3
    weekly = charts["chart-weekly"]
    assert len(list(weekly.iter(f"{SVG}polyline"))) == 2 and len(list(weekly.iter(f"{SVG}circle"))) == 6
    assert [int(float(b.get("height")) > 0) for b in bars(charts["chart-reminders"])] == [1, 1, 1, 1]
    # 表格里的确切数字
    assert "<td>shop-backend</td><td>3</td><td>30 分钟</td><td>54 分钟</td>" in html
    assert f'href="/logs/{data["P3"].public_id}"' in html


def test_bar_lengths_are_proportional_to_the_times(staff, data):
    chart = svgs(get(staff).content.decode())["chart-per-project"]
    shop, pay = (float(rect.get("width")) for rect in bars(chart, "median"))
    assert pay / shop == pytest.approx(7350 / 1800, rel=0.01)  # 中位数 122.5 分钟对 30 分钟


def test_project_and_environment_filters(staff, data):
    html = get(staff, RANGE + "&project=pay-api").content.decode()
    assert '<span class="stat-value">5</span><span class="stat-label">新建审批' in html
    assert 'value="pay-api"' in html
    assert "shop-backend</text>" not in html
    html = get(staff, RANGE + "&environment=%E7%94%9F%E4%BA%A7").content.decode()  # 生产
    assert '<span class="stat-value">5</span><span class="stat-label">新建审批' in html
    assert 'value="生产"' in html and "production" in html


def test_defaults_show_the_last_30_days(staff, data):
    html = get(staff, "").content.decode()
    assert 'name="until" value="2026-03-10"' in html and 'name="days" min="1" max="366" value="30"' in html
    assert "2026-02-09 – 2026-03-10" in html


@pytest.mark.parametrize(("query", "field", "message"), [
    ("until=2026-13-01", "截至", "输入一个有效的日期"),
    ("until=yesterday", "截至", "输入一个有效的日期"),
    ("days=0", "天数", "大于或等于1"),
    ("days=367", "天数", "小于或等于366"),
    ("days=abc", "天数", "输入整数"),
    ("project=" + "x" * 201, "项目", "不超过 200 字符"),
    ("environment=" + "e" * 65, "环境", "不超过 64 字符"),
])
def test_bad_filter_input_is_a_clear_400(staff, data, query, field, message):
    response = get(staff, query)
    assert response.status_code == 400
    html = response.content.decode()
    errors = re.search(r'<div class="error-box" role="alert" id="stats-errors">(.*?)</div>', html, re.S).group(1)
    assert f"「{field}」" in errors and message in errors
    assert "<svg" not in html  # 不画错的范围
    assert Approval.objects.count() == 11  # 什么也没改


def test_user_supplied_names_are_escaped(staff, make_approval, people):
    with time_machine.travel(NOW, tick=False):
        make_row(make_approval, project="<script>alert(1)</script>", environment="test",
                 created=NOW - timedelta(hours=1), status=Status.APPROVED, after_minutes=3,
                 votes=[(people["approver"], "approve", 3)])
    html = get(staff).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    svgs(html)  # 转义后的 SVG 仍是良构的 XML


def test_english_page(staff, data):
    response = get(staff, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200 and '<html lang="en">' in response.content.decode()


def test_empty_database_still_draws_axes(staff):
    charts = svgs(get(staff).content.decode())
    assert bars(charts["chart-daily"]) == []
    assert "暂无数据" in texts(charts["chart-daily"])
    assert "现在没有待审批" in texts(charts["chart-pending"])


# ---------------------------------------------------------------- 画图工具


def test_axis_ticks_are_round_numbers():
    assert axis_ticks(0) == [0, 1]
    assert axis_ticks(7) == [0, 2, 4, 6, 8]
    assert axis_ticks(100) == [0, 50, 100]
    assert axis_ticks(130 * 60, duration=True) == [0, 3600, 7200, 10800]
    assert axis_ticks(10 * 86400, duration=True) == [0, 5 * 86400, 10 * 86400]


def test_duration_labels():
    assert [duration_label(s) for s in (None, 45, 90, 1800, 5400, 86400 * 2.5)] == [
        "-", "45 秒", "1.5 分钟", "30 分钟", "1.5 小时", "2.5 天"]


def test_column_chart_bars_scale_with_the_values_and_stack():
    svg = ET.fromstring(column_chart(["a", "b"], [Series("approved", "同意", [2, 4]), Series("rejected", "拒绝", [2, 0])],
                                     label="图"))
    rects = bars(svg)
    heights = [float(r.get("height")) for r in rects]
    assert len(rects) == 3  # 0 不画
    assert heights[0] == pytest.approx(heights[1]) and heights[2] == pytest.approx(2 * heights[0])
    # 第二个系列叠在第一个上面；第二个标签的柱在右边
    assert float(rects[1].get("y")) + heights[1] == pytest.approx(float(rects[0].get("y")))
    assert float(rects[0].get("x")) == float(rects[1].get("x")) < float(rects[2].get("x"))
    assert {"同意", "拒绝", "a", "b", "0", "4"} <= set(texts(svg))
    assert svg.get("viewBox") == "0 0 400 240" and svg.get("aria-label") == "图"
    assert [t.text for t in rects[0].iter(f"{SVG}title")] == ["a · 同意: 2"]


def test_charts_escape_every_text():
    markup = str(row_chart(['<b>&"'], [Series("median", "<i>", [60])], label="<x>"))
    assert "<b>" not in markup and "<i>" not in markup and "&lt;b&gt;&amp;&quot;" in markup
    assert ET.fromstring(markup).get("aria-label") == "<x>"


def test_long_row_labels_are_cut_with_the_full_name_in_the_tooltip():
    name = "folder/very-long-project-name-that-does-not-fit"
    svg = ET.fromstring(row_chart([name], [Series("median", "中位数", [60])], label="图"))
    label = next(t for t in svg.iter(f"{SVG}text") if t.get("class") == "row-label")
    assert label.find(f"{SVG}title").text == name and visible(label).endswith("…")
    assert fit_text("短", 100) == "短"


def test_line_chart_has_one_point_per_label():
    svg = ET.fromstring(line_chart(["w1", "w2", "w3"], [Series("timeout", "超时", [0, 3, 1])], label="图"))
    points = list(svg.iter(f"{SVG}circle"))
    assert len(points) == 3
    ys = [float(p.get("cy")) for p in points]
    assert ys[1] < ys[2] < ys[0]  # 数值越大越靠上


@pytest.mark.parametrize("key", ['x" onload="alert(1)', "approved\n", "Approved", ""])
def test_series_key_must_be_a_safe_css_class(key):
    with pytest.raises(ValueError):
        Series(key, "x", [1])
