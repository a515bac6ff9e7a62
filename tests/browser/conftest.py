"""真浏览器测试的夹具：Debian 的 Chromium（无界面）+ chromedriver，经 selenium 驱动，对着 pytest-django 的 live_server。

没有装 Chromium 的机器上跳过并说明原因；CI（.ci/run 设置 APPROVALBOT_CI=1 并安装 chromium、chromium-driver）上缺了就失败。
截图存到 TEST_ARTIFACTS_DIR（默认 var/test-artifacts/），测试失败时也留着便于查看。
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "var" / "test-artifacts")


def _chromium() -> tuple[str, str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary and driver:
        return binary, driver
    reason = "没有安装 Chromium 与 chromedriver（Debian：apt-get install chromium chromium-driver）"
    if os.environ.get("APPROVALBOT_CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[object]:
    """一个干净的无界面 Chromium 会话（新的用户目录；关掉后台联网，本机网络是封闭的）。窗口 1280×900。"""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = Options()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={profile}", "--lang=zh-CN"):
        options.add_argument(flag)
    # 无界面模式不理会 --lang：请求头的语言要经偏好设置给出（与中文用户的浏览器一样）
    options.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN,zh"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshot(browser, request) -> Callable[[str], Path]:
    """screenshot("stats") → var/test-artifacts/<测试名>-stats.png（测试报告里打印路径）。"""

    def take(name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{request.node.name}-{name}.png".replace("/", "_")
        browser.save_screenshot(str(path))
        print(f"截图：{path}")
        return path

    return take


@pytest.fixture
def staff_browser(browser, live_server, django_user_model):
    """已登录后台（staff）的浏览器：先访问一次站点拿到 cookie 域，再放入会话 cookie。"""
    from django.conf import settings
    from django.test import Client

    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    browser.get(live_server.url + "/health")
    browser.add_cookie({"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                        "path": "/"})
    return browser
