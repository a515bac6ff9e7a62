"""首页在真浏览器里：访客页；后台账号看到待审批并能填理由、点「拒绝」，结果作为页面消息显示；语言切换；手机上不左右滑动。"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_anonymous_visitor_gets_a_short_page_with_the_login(browser, live_server, screenshot):
    from selenium.webdriver.common.by import By

    browser.get(live_server.url + "/")
    main = browser.find_element(By.TAG_NAME, "main")
    assert "Telegram" in main.text and "Not Found" not in browser.page_source
    screenshot("home-anonymous")
    main.find_element(By.LINK_TEXT, "登录后台").click()
    assert browser.find_element(By.NAME, "username").is_displayed()


def test_staff_rejects_from_the_home_page(staff_browser, live_server, people, shop_rule, make_approval, screenshot):
    from django.contrib.auth import get_user_model
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from approvals.models import Channel, Status

    browser = staff_browser
    alice = people["admin"]
    alice.user = get_user_model().objects.get(username="root")
    alice.save()
    approval = make_approval(environment="production", version="v3.1.0", description="大促前修复支付回调")
    other = make_approval(job_name="folder/shop-api", environment="test")

    browser.get(live_server.url + "/")
    row = browser.find_element(By.ID, f"approval-{approval.public_id}")
    assert "v3.1.0" in row.text and "0/2" in row.text and "还剩" in row.text
    assert browser.find_element(By.ID, f"approval-{other.public_id}").is_displayed()
    assert browser.find_element(By.ID, "component-database").text.endswith("正常")
    screenshot("home-staff")

    row.find_element(By.NAME, "reason").send_keys("变更单没有回滚方案")
    row.find_element(By.CSS_SELECTOR, "button[value=reject]").click()

    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "ul.messages"))
    assert f"{approval.public_id}：已拒绝。" in browser.find_element(By.CSS_SELECTOR, "ul.messages").text
    assert not browser.find_elements(By.ID, f"approval-{approval.public_id}")  # 不再待审批
    assert approval.public_id in browser.find_element(By.ID, "recent-list").text
    approval.refresh_from_db()
    assert approval.status == Status.REJECTED and approval.reason == "变更单没有回滚方案"
    assert approval.decision_channel == Channel.ADMIN and approval.decided_by == alice
    screenshot("home-after-reject")


def test_language_switch_and_phone_layout(staff_browser, live_server, people, shop_rule, make_approval, screenshot):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = staff_browser
    make_approval(environment="production", version="v2.13.0-rc.1+build.20261202", description="很长的说明" * 10)
    browser.set_window_size(390, 844)
    browser.get(live_server.url + "/")
    screenshot("home-phone")
    width = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], width

    def language(b) -> str | None:
        try:
            return b.find_element(By.TAG_NAME, "html").get_attribute("lang")
        except WebDriverException:  # 页面正在切换：旧元素失效或新页面还没有
            return None

    browser.find_element(By.CSS_SELECTOR, ".lang-switch button[value=en]").click()
    WebDriverWait(browser, 10).until(lambda b: language(b) == "en")
    assert browser.current_url.rstrip("/") == live_server.url
    browser.find_element(By.CSS_SELECTOR, ".lang-switch button[value=zh-hans]").click()
    WebDriverWait(browser, 10).until(lambda b: language(b) == "zh-hans")
