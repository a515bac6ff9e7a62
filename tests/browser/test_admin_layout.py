"""后台在真浏览器里的样子：1280×900 下审批列表不横向滚动、状态不折行；手机上整页不左右滑动；
审批页有日志链接与同意/拒绝；项目规则的审批人选择器（filter_horizontal）是中文；历史内联没有“2 created”。"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = (390, 844)


@pytest.fixture
def approvals(people, shop_rule, make_approval):
    """一屏有各种状态的审批：长任务名、长版本号、生产与测试、待审批与已同意。"""
    from approvals.services import approval_decide

    made = {
        "prod": make_approval(environment="生产", version="v2.13.0-rc.1+build.20261202", description="大促前修复 🚀"),
        "long": make_approval(job_name="folder/shop-backend-payment-callback-worker", environment="生产"),
        "staging": make_approval(job_name="folder/shop-admin", environment="staging"),
        "test": make_approval(environment="test"),
        "done": make_approval(job_name="folder/shop-web", environment="test"),
    }
    approval_decide(approval=made["done"], approver=people["approver"], decision="approve", channel="api")
    return made


def _page_width(browser) -> tuple[int, int]:
    return browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")


def test_changelist_fits_1280_and_status_stays_on_one_line(staff_browser, live_server, approvals, screenshot):
    from selenium.webdriver.common.by import By

    browser = staff_browser
    browser.get(live_server.url + "/admin/approvals/approval/")
    screenshot("changelist-1280")
    table = browser.find_element(By.ID, "result_list")
    headers = [th.get_attribute("textContent").strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    for name in ("创建时间", "截止时间", "决定人", "构建日志"):
        assert name in headers, headers
    # 整页与表格都不需要横向滚动：表格没有溢出它的容器，最右一列（日志链接）看得见
    scroll_width, client_width = _page_width(browser)
    assert scroll_width <= client_width, (scroll_width, client_width)
    inner = browser.execute_script(
        "const r = document.querySelector('#changelist .results'); return [r.scrollWidth, r.clientWidth];")
    assert inner[0] <= inner[1], inner
    last = table.find_element(By.CSS_SELECTOR, "tbody tr td.field-log_link")
    assert last.rect["x"] + last.rect["width"] <= client_width
    # “⏳ 待审批”只占一行：文字的高度（不是单元格的高度）不到两行
    for status in table.find_elements(By.CSS_SELECTOR, "tbody td.field-status_display"):
        text_height, line_height = browser.execute_script(
            "const r = document.createRange(); r.selectNodeContents(arguments[0]);"
            "return [r.getBoundingClientRect().height, parseFloat(getComputedStyle(arguments[0]).fontSize) * 1.2];",
            status)
        assert text_height < line_height * 1.8, (status.text, text_height, line_height)


def test_changelist_on_a_phone_does_not_scroll_sideways(staff_browser, live_server, approvals, screenshot):
    from selenium.webdriver.common.by import By

    browser = staff_browser
    browser.set_window_size(*PHONE)
    browser.get(live_server.url + "/admin/approvals/approval/")
    assert browser.find_element(By.ID, "result_list").is_displayed()
    scroll_width, client_width = _page_width(browser)
    assert scroll_width <= client_width, (scroll_width, client_width)
    inner = browser.execute_script(
        "const r = document.querySelector('#changelist .results'); return [r.scrollWidth, r.clientWidth];")
    assert inner[0] <= inner[1], inner
    # 编号、状态与票数仍看得见
    row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    for css in ("th.field-public_id, td.field-public_id", "td.field-status_display", "td.field-votes_display"):
        assert row.find_element(By.CSS_SELECTOR, css).is_displayed()
    screenshot("changelist-phone")


def test_approval_page_has_log_link_and_decision_buttons(staff_browser, live_server, people, approvals, screenshot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from approvals.models import Channel, Status

    browser = staff_browser
    root = people["admin"]
    from django.contrib.auth import get_user_model

    root.user = get_user_model().objects.get(username="root")
    root.save()
    approval = approvals["test"]
    browser.get(f"{live_server.url}/admin/approvals/approval/{approval.pk}/change/")
    assert browser.find_element(By.ID, "approval-log-link").get_attribute("href").endswith(
        f"/logs/{approval.public_id}")
    visible = browser.find_element(By.ID, "content").text
    assert "created" not in visible and f"{approval.pk} " not in visible.split("\n")[0]
    screenshot("approval-page")
    browser.find_element(By.NAME, "reason").send_keys("已核对变更单")
    browser.find_element(By.ID, "approval-approve").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "ul.messagelist"))
    assert f"{approval.public_id}：已同意。" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    approval.refresh_from_db()
    assert approval.status == Status.APPROVED and approval.decision_channel == Channel.ADMIN
    assert approval.decided_by == root
    # 回到同一页：已结束的审批不再有按钮
    assert not browser.find_elements(By.ID, "approval-approve")


def test_project_rule_approver_picker_is_chinese(staff_browser, live_server, shop_rule, screenshot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = staff_browser
    browser.get(f"{live_server.url}/admin/accounts/projectrule/{shop_rule.pk}/change/")
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".selector-chooseall"))
    picker = browser.find_element(By.CSS_SELECTOR, ".selector")
    text = picker.text + " ".join(
        el.get_attribute("title") or "" for el in picker.find_elements(By.CSS_SELECTOR, "a, button, input, p, span"))
    for english in ("Choose", "Remove", "selecting them", "click to clear"):
        assert english not in text, text
    assert "审批人" in text
    screenshot("rule-picker")
