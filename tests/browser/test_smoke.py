"""浏览器测试的底座能用：后台登录页在真 Chromium 里渲染出中文表单。"""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_admin_login_renders_in_chromium(browser, live_server, screenshot):
    from selenium.webdriver.common.by import By

    browser.get(live_server.url + "/admin/login/")
    assert browser.find_element(By.NAME, "username").is_displayed()
    assert "登录" in browser.page_source
    assert screenshot("admin-login").stat().st_size > 1000
