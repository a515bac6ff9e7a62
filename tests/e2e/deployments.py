"""夹具用的积木：一对假外部系统、迁移好的模板库、按需造 Service 的 Deployments，以及何时不运行 e2e。"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_jenkins import FakeJenkins
from tests.fake_telegram import FakeTelegram

from .harness import ROOT, Service, base_env
from .infra import Database


def migrate_database(database: Database, workdir: Path) -> None:
    """部署的第一步（manage.py migrate），用在模板库上；之后每个 Service 的库从它复制。"""
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT,
                          env={**base_env(workdir, database), "CELERY_BROKER_URL": "memory://"},
                          capture_output=True, text=True, timeout=300)
    (workdir / "migrate.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, f"manage.py migrate 失败：\n{done.stdout}\n{done.stderr}"


class Fakes:
    """一对假外部系统：Telegram Bot API 与 Jenkins（服务账号 svc，token 足够长，日志脱敏检查才有意义）。"""

    def __init__(self) -> None:
        self.telegram = FakeTelegram().start()
        self.jenkins_token = "jenkins-e2e-" + secrets.token_hex(12)
        self.jenkins = FakeJenkins(users={"svc": self.jenkins_token}).start()

    def close(self) -> None:
        self.telegram.stop()
        self.jenkins.down()


class Deployments:
    """造 Service：从模板复制一个新库、起私有 redis、跑部署步骤（load_config）；close() 停掉全部进程并删库。

    工作目录不放在 pytest 的 tmp_path 下：同一台机器上别的 pytest 会轮换掉旧的 basetemp，连同还在写的日志。
    """

    _numbers = iter(range(1, 10**6))

    def __init__(self, template: Database) -> None:
        self.template = template
        self.services: list[Service] = []

    def new(self, fakes: Fakes, *, users: dict[str, Any], start: Iterable[str] = (), **options: Any) -> Service:
        number = next(self._numbers)
        began = time.monotonic()
        database = Database(self.template.url, f"e2e_{os.getpid()}_{number}").clone_from(self.template)
        workdir = Path(tempfile.mkdtemp(prefix=f"approvalbot-e2e-{os.getpid()}-{number}-"))
        service = Service(workdir, database=database, telegram=fakes.telegram,
                          jenkins=fakes.jenkins, jenkins_token=fakes.jenkins_token, users=users, **options)
        self.services.append(service)
        service.deploy(migrate=False)
        if start:
            service.start(*start)
        service.note(f"部署并启动用了 {time.monotonic() - began:.1f} 秒")
        return service

    def close(self) -> None:
        for service in self.services:
            if not service.closed:
                service.close()
            service.database.drop()
        # 工作目录（日志）留到会话结束：失败时 conftest 在测试的 teardown 之后才复制它们


def services_missing() -> str | None:
    """为什么不能在这里跑整套系统（None：可以）。"""
    if not os.environ.get("DATABASE_URL", "").startswith("mysql://"):
        return ("整套系统的端到端测试只在 MariaDB + Redis 上运行（DATABASE_URL=mysql://…、CELERY_BROKER_URL=redis://…，"
                ".ci/run 的第二轮）；嵌入式默认（SQLite + 文件系统 broker）由 tests/test_e2e_processes.py 覆盖")
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        return "整套系统的端到端测试需要 Redis broker：设置 CELERY_BROKER_URL=redis://…（.ci/run 的第二轮）"
    return None


requires_services = pytest.mark.skipif(services_missing() is not None, reason=services_missing() or "")
