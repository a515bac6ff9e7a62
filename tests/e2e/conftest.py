"""tests/e2e：夹具，以及失败时把每个进程的日志留作测试产物。

只在 .ci/run 的 MariaDB + Redis 一轮运行（DATABASE_URL=mysql://…、CELERY_BROKER_URL=redis://…）：模块用
deployments.requires_services 标记，其余情况跳过并说明原因。失败时日志复制到
var/test-artifacts/e2e/<测试名>/<服务>/（或 TEST_ARTIFACTS_DIR/e2e/…），路径打印在失败报告里。
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.operations.helpers import skip_or_fail

from . import harness
from .deployments import Deployments, Fakes, migrate_database
from .infra import Database

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or harness.ROOT / "var" / "test-artifacts") / "e2e"


@pytest.fixture(scope="session")
def e2e_template() -> Iterator[Database]:
    """真正执行一次 manage.py migrate 的模板库；每个 Service 的库从它复制（整个会话只迁移一次）。"""
    if shutil.which("redis-server") is None:
        skip_or_fail("找不到 redis-server：每个 Service 要起一个私有的 Redis（Debian 包 redis-server）")
    template = Database(os.environ["DATABASE_URL"], f"e2e_{os.getpid()}_template").create()
    try:
        with tempfile.TemporaryDirectory(prefix="approvalbot-e2e-template-") as workdir:
            migrate_database(template, Path(workdir))
        yield template
    finally:
        template.drop()


@pytest.fixture(scope="module")
def module_fakes() -> Iterator[Fakes]:
    fakes = Fakes()
    yield fakes
    fakes.close()


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    fakes = Fakes()
    yield fakes
    fakes.close()


@pytest.fixture(scope="module")
def module_deployments(e2e_template) -> Iterator[Deployments]:
    deployments = Deployments(e2e_template)
    yield deployments
    deployments.close()


@pytest.fixture
def deployments(e2e_template) -> Iterator[Deployments]:
    deployments = Deployments(e2e_template)
    yield deployments
    deployments.close()


# ---------------------------------------------------------------- 失败时的产物


def _artifact_dir(item: pytest.Item) -> Path:
    return ARTIFACTS / re.sub(r"[^\w.-]+", "_", item.name).strip("_")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # 这个测试用到的 Service：此刻已在运行的（模块级的）加上之后新建的
    item._e2e_first_service = len(harness.SERVICES)  # type: ignore[attr-defined]
    item._e2e_running = [s for s in harness.SERVICES if not s.closed]  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and not getattr(item, "_e2e_failed", False):
        item._e2e_failed = True  # type: ignore[attr-defined]
        report.sections.append(("e2e 进程日志", f"每个进程的日志在测试结束后复制到 {_artifact_dir(item)}"))
    if report.when == "teardown" and getattr(item, "_e2e_failed", False):
        # 到这里函数级的 Service 已经停下（日志里有关闭过程），模块级的还在运行
        destination = _save_logs(item)
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        if destination is not None and reporter is not None:
            reporter.write_line(f"\n[e2e] {item.nodeid} 失败：进程日志已复制到 {destination}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    # 最后一个测试的 teardown 报告（复制日志）在会话级夹具拆除之后才生成：工作目录到这里才删
    for service in harness.SERVICES:
        shutil.rmtree(service.workdir, ignore_errors=True)


def _save_logs(item: pytest.Item) -> Path | None:
    first = getattr(item, "_e2e_first_service", len(harness.SERVICES))
    services = [*getattr(item, "_e2e_running", []), *harness.SERVICES[first:]]
    if not services:
        return None
    destination = _artifact_dir(item)
    shutil.rmtree(destination, ignore_errors=True)
    for service in services:
        if service.logs_dir.exists():
            shutil.copytree(service.logs_dir, destination / service.workdir.name, dirs_exist_ok=True)
    return destination
