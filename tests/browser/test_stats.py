"""统计页在真 Chromium 里：六张 SVG 图都画出来了（有柱、有点、有尺寸、标签看得见），手机宽度下也一样且不横向滚动。"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import Status
from tests.approvals.test_analytics import make_row

pytestmark = pytest.mark.django_db(transaction=True)

CHARTS = ("chart-daily", "chart-per-project", "chart-per-approver", "chart-pending", "chart-weekly", "chart-reminders")

# 每个图：宽、高，柱（或点）的个数与最小尺寸，看得见的文字
MEASURE = """
return Array.from(document.querySelectorAll('section.card')).map(card => {
  const svg = card.querySelector('svg.chart');
  const box = svg.getBoundingClientRect();
  const marks = Array.from(svg.querySelectorAll('rect.bar, circle.point')).map(m => m.getBoundingClientRect());
  const labels = Array.from(svg.querySelectorAll('text')).filter(t => {
    const r = t.getBoundingClientRect();
    return r.width > 0 && r.height >= 7 && r.left >= box.left - 1 && r.right <= box.right + 1;
  });
  return {id: card.id, width: box.width, height: box.height, left: card.getBoundingClientRect().left,
          marks: marks.length, smallest: Math.min(...marks.map(r => Math.max(r.width, r.height))),
          labels: labels.map(t => Array.from(t.childNodes).filter(n => n.nodeType === 3).map(n => n.data).join(''))};
});
"""


@pytest.fixture
def recent_data(make_approval, people):
    """最近两周的一些审批：各种结果、投票、提醒，外加三条待审批。"""
    bob, erin = people["approver"], people["approver2"]
    now = timezone.now()
    outcomes = [Status.APPROVED, Status.APPROVED, Status.REJECTED, Status.TIMEOUT, Status.APPROVED, Status.CANCELLED]
    for n in range(18):
        status = outcomes[n % len(outcomes)]
        voters = [(bob, "approve", 4 + n), (erin, "approve", 9 + 2 * n)] if status == Status.APPROVED else (
            [(erin, "reject", 30 + n)] if status == Status.REJECTED else [])
        make_row(make_approval, project=("shop-backend", "pay-api", "folder/very-long-project-name")[n % 3],
                 environment=("production", "test")[n % 2], created=now - timedelta(days=n * 0.7 + 0.3),
                 status=status, after_minutes=10 + 3 * n, reminders=n % 4, votes=voters)
    for minutes in (5, 90, 3000):
        make_row(make_approval, project="shop-backend", environment="production",
                 created=now - timedelta(minutes=minutes))


def measure(browser) -> list[dict]:
    return browser.execute_script(MEASURE)


def full_page(browser, width: int, *, mobile: bool) -> None:
    """把视口设成整页高度，截图就是整页。"""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1, "mobile": mobile})


def test_charts_draw_on_desktop_and_phone(staff_browser, live_server, screenshot, recent_data):
    from selenium.webdriver.common.by import By

    browser = staff_browser
    browser.get(live_server.url + "/stats")
    assert browser.find_element(By.CSS_SELECTOR, "header strong").text == "审批分析"
    assert browser.find_element(By.CSS_SELECTOR, ".stat-created .stat-value").text == "21"

    cards = {card["id"]: card for card in measure(browser)}
    assert set(cards) == set(CHARTS)
    for card in cards.values():
        assert card["width"] > 300 and card["height"] > 100, card
        assert card["marks"] > 0 and card["smallest"] > 0.4, card
        assert len(card["labels"]) >= 3, card
    assert {"shop-backend", "pay-api"} <= set(cards["chart-per-project"]["labels"])
    assert {"Bob", "Erin"} <= set(cards["chart-per-approver"]["labels"])
    assert {"已同意", "已拒绝", "已超时"} <= set(cards["chart-daily"]["labels"])  # 图例
    assert cards["chart-weekly"]["marks"] >= 2 * 3  # 两条线，每周一个点
    assert len({round(card["left"]) for card in cards.values()}) > 1  # 桌面上不止一列
    full_page(browser, 1280, mobile=False)
    assert screenshot("stats").stat().st_size > 20_000

    # 手机（390 CSS 像素宽，按 viewport meta 排版）
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    browser.get(live_server.url + "/stats")
    assert browser.execute_script("return window.innerWidth") == 390
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390  # 不横向滚动
    phone = {card["id"]: card for card in measure(browser)}
    assert set(phone) == set(CHARTS)
    for card in phone.values():
        assert 320 <= card["width"] <= 390 and card["height"] > 60, card
        assert card["marks"] > 0 and card["smallest"] > 0.2, card
        assert len(card["labels"]) >= 3, card
    assert len({round(card["left"]) for card in phone.values()}) == 1  # 一列
    tick = browser.find_element(By.CSS_SELECTOR, "#chart-per-project text.row-label")
    assert tick.is_displayed() and tick.rect["height"] >= 8  # 缩放后的字仍读得清
    form = browser.find_element(By.CSS_SELECTOR, "form.stats-filters")
    assert form.rect["width"] <= 390
    full_page(browser, 390, mobile=True)
    assert screenshot("stats-phone").stat().st_size > 20_000


def test_filter_form_submits_and_bad_input_is_explained(staff_browser, live_server, recent_data):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = staff_browser
    browser.get(live_server.url + "/stats")
    project = browser.find_element(By.NAME, "project")
    project.send_keys("pay-api")
    browser.find_element(By.CSS_SELECTOR, "form.stats-filters button").click()
    # 点击之后是一次整页导航：等新页面到了再读，否则读到的是旧页面
    WebDriverWait(browser, 10).until(lambda b: "project=pay-api" in b.current_url
                                     and b.execute_script("return document.readyState") == "complete")
    assert browser.find_element(By.CSS_SELECTOR, ".stat-created .stat-value").text == "6"
    assert "shop-backend" not in [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chart-per-project text")]

    browser.get(live_server.url + "/stats?days=1000")
    error = browser.find_element(By.ID, "stats-errors")
    assert error.is_displayed() and "「天数」" in error.text and "366" in error.text
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart") == []
