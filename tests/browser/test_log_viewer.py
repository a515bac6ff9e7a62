"""日志查看器在真浏览器里：行号、高亮（错误/警告/阶段）、阶段目录与折叠、搜索与命中高亮、浅色主题跟随系统、
实时追加直到构建结束、构建/审批结束后不再轮询并说明为什么没有日志。"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from approvals.builds import build_log_append
from approvals.links import log_url

pytestmark = pytest.mark.django_db(transaction=True)

LOG = (
    "Started by user Dave\n"
    "[Pipeline] stage\n"
    "[Pipeline] { (Build)\n"
    "+ make build\n"
    "WARNING: 依赖 left-pad 已弃用\n"
    "<script>window.hacked = 1</script>\n"
    "[Pipeline] }\n"
    "[Pipeline] stage\n"
    "[Pipeline] { (Deploy)\n"
    "+ make deploy ENV=production\n"
    "ERROR: 部署失败 🚨 连接数据库超时\n"
    "[Pipeline] }\n"
    "Finished: FAILURE\n"
)


def _open(browser, live_server, approval) -> None:
    parts = urlsplit(log_url(approval))
    browser.get(f"{live_server.url}{parts.path}?{parts.query}")


def _tail_requests(browser) -> int:
    return browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/tail')).length")


@pytest.fixture
def finished(shop_rule, make_approval):
    approval = make_approval(environment="production")
    build_log_append(jenkins_server=approval.jenkins_server, job_name=approval.job_name,
                     build_number=approval.build_number, approval=approval, text=LOG, next_start=len(LOG),
                     complete=True)
    return approval


def test_numbers_highlighting_stages_and_search(browser, live_server, finished, screenshot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                          "value": "dark"}]})
    _open(browser, live_server, finished)
    lines = browser.find_elements(By.CSS_SELECTOR, "pre#log span.line")
    assert len(lines) == LOG.count("\n")
    numbers = [browser.execute_script("return getComputedStyle(arguments[0], '::before').content", el)
               for el in lines[:3]]
    assert numbers == ['"1"', '"2"', '"3"']
    assert not browser.execute_script("return window.hacked")  # 日志里的 <script> 只是文字
    assert "<script>window.hacked = 1</script>" in lines[5].text
    error = next(el for el in lines if "部署失败" in el.text)
    warning = next(el for el in lines if "WARNING" in el.text)
    assert "l-error" in error.get_attribute("class") and "l-warn" in warning.get_attribute("class")
    assert error.value_of_css_property("color") != lines[0].value_of_css_property("color")
    # 页面已安定：日志完整，不轮询
    assert "构建已结束，日志完整。" in browser.find_element(By.ID, "log-state").text

    # 阶段目录：点「Deploy」跳到它的标题
    stages = browser.find_elements(By.CSS_SELECTOR, "#log-stages a")
    assert [a.text for a in stages] == ["Build", "Deploy"]
    screenshot("log-dark")
    stages[1].click()
    WebDriverWait(browser, 5).until(lambda b: b.execute_script("return location.hash") == "#stage-2")
    heading = browser.find_element(By.ID, "stage-2")
    assert browser.execute_script("const r = arguments[0].getBoundingClientRect(); return r.top >= 0 && "
                                  "r.bottom <= innerHeight", heading)
    # 点阶段标题：折叠这一段（标题还在），再点展开
    build_heading = browser.find_element(By.ID, "stage-1")
    build_heading.click()
    assert not warning.is_displayed() and build_heading.is_displayed()
    assert build_heading.get_attribute("aria-expanded") == "false"
    build_heading.click()
    assert warning.is_displayed()

    # 搜索：只留命中的行，命中处高亮，显示计数
    browser.find_element(By.ID, "log-search").send_keys("error")
    WebDriverWait(browser, 5).until(lambda b: b.find_element(By.ID, "log-matches").text)
    assert browser.find_element(By.ID, "log-matches").text == f"1 / {len(lines)}"
    visible = [el for el in browser.find_elements(By.CSS_SELECTOR, "pre#log span.line") if el.is_displayed()]
    assert [el.text for el in visible] == ["ERROR: 部署失败 🚨 连接数据库超时"]
    assert [m.text for m in visible[0].find_elements(By.TAG_NAME, "mark")] == ["ERROR"]
    screenshot("log-search")
    time.sleep(2.5)
    assert _tail_requests(browser) == 0


def test_light_theme_follows_the_system(browser, live_server, finished, screenshot):
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                          "value": "light"}]})
    _open(browser, live_server, finished)
    background = browser.find_element(By.TAG_NAME, "body").value_of_css_property("background-color")
    assert background in ("rgba(255, 255, 255, 1)", "rgb(255, 255, 255)"), background
    screenshot("log-light")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                          "value": "dark"}]})
    browser.refresh()
    dark = browser.find_element(By.TAG_NAME, "body").value_of_css_property("background-color")
    assert dark != background


def test_live_build_is_followed_then_the_page_settles(browser, live_server, shop_rule, make_approval, screenshot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.fake_jenkins import FakeJenkins

    fake = FakeJenkins(anonymous_read=True).start()
    try:
        approval = make_approval()
        server = approval.jenkins_server
        server.url, server.timeout_seconds = fake.url, 2
        server.save()
        build = fake.add_build(approval.job_name, approval.build_number)
        _open(browser, live_server, approval)
        state = browser.find_element(By.ID, "log-state")
        assert state.text == "构建进行中，日志实时更新…"

        build.console += "[Pipeline] { (Deploy)\nERROR: 部署失败\nFinished: FAILURE\n"
        fake.finish(approval.job_name, approval.build_number, "FAILURE")
        WebDriverWait(browser, 12).until(lambda b: "日志完整" in b.find_element(By.ID, "log-state").text)
    finally:
        fake.down()
    texts = [el.text for el in browser.find_elements(By.CSS_SELECTOR, "pre#log span.line")]
    assert texts[-2:] == ["ERROR: 部署失败", "Finished: FAILURE"]
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#log-stages a")] == ["Build", "Deploy"]
    screenshot("log-live-finished")
    polled = _tail_requests(browser)
    time.sleep(4.5)
    assert _tail_requests(browser) == polled  # 结束后不再轮询


def test_cancelled_build_without_a_log_says_why_and_does_not_poll(browser, live_server, shop_rule, make_approval,
                                                                  screenshot):
    from selenium.webdriver.common.by import By

    from approvals.builds import build_result_record

    approval = make_approval()
    server = approval.jenkins_server
    server.url = ""
    server.save()
    build_result_record(job_name=approval.job_name, build_number=approval.build_number, result="FAILURE")
    _open(browser, live_server, approval)

    assert browser.find_element(By.ID, "log-state").text == "构建已结束（失败），没有可显示的日志。"
    notice = browser.find_element(By.ID, "log-notice")
    assert notice.is_displayed() and "没有配置地址" in notice.text
    screenshot("log-cancelled")
    time.sleep(4.5)
    assert _tail_requests(browser) == 0
    browser.find_element(By.ID, "log-download").click()
    assert "这次构建没有可下载的日志。" in browser.find_element(By.TAG_NAME, "main").text
