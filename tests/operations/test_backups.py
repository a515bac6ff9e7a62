"""备份与恢复（D7）：往返后数据原样（中文、emoji、票、历史、构建日志），坏文件与非空库被拒绝，只留最近 N 份。

恢复在子进程里按运维的做法运行 `manage.py restore`，目标是一个新建的空库（SQLite 文件，或 MariaDB 上临时建、用完删的库）。
"""

from __future__ import annotations

import gzip
import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from accounts.models import ConfigState
from approvalbot.operations import backups
from approvalbot.operations.health import check_backup
from approvalbot.operations.models import BackupRun, BackupStatus
from approvals.models import BuildLog, BuildResult

from .helpers import ROOT, process_env

TEXT = "发布说明：修复支付回调 🚀🔥 <b>不是标签</b> & “引号”"
LOG = "第 1 行 ✅\n第 2 行 ❌ 失败：数据库连接超时 😱\n"

VERIFY = """
import json
from approvals.models import Approval, ApprovalEvent, BuildLog, BuildResult, Vote
a = Approval.objects.get(public_id={pid!r})
print("RESULT" + json.dumps({{
    "status": a.status, "description": a.description, "decided_by": a.decided_by_name, "reason": a.reason,
    "votes": sorted(Vote.objects.filter(approval=a).values_list("approver__username", "decision", "reason")),
    "events": sorted(ApprovalEvent.objects.filter(approval=a).values_list("kind", flat=True)),
    "log": BuildLog.objects.get(approval=a).content,
    "result": BuildResult.objects.get(approval=a).result,
    "approvals": Approval.objects.count(),
}}, ensure_ascii=False))
"""


def _mysql() -> bool:
    return connection.vendor == "mysql"


def _manage(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = process_env(tmp_path, DATABASE_URL=database_url, CELERY_BROKER_URL="memory://")
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def scratch_url(tmp_path: Path) -> Iterator[str]:
    """一个新的空数据库：SQLite 是临时目录里的文件；MariaDB 上临时建一个库，测试完删掉。"""
    if not _mysql():
        yield f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        return
    conf = connection.settings_dict
    name = f"{conf['NAME']}_restore"[:64]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    try:
        yield f"mysql://{conf['USER']}{password}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 3306}/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def history(make_approval, shop_rule, people, jenkins_server):
    """一条有票、有理由、有历史、有构建结果与日志的审批（全是中文与 emoji）。"""
    from approvals.services import approval_decide

    approval = make_approval(description=TEXT)
    approval_decide(approval=approval, approver=people["approver"], decision="approve", channel="api",
                    reason="可以发 👍")
    BuildResult.objects.create(approval=approval, jenkins_server=approval.jenkins_server, job_name=approval.job_name,
                               build_number=approval.build_number, result="FAILURE", duration_ms=1234)
    BuildLog.objects.create(approval=approval, jenkins_server=approval.jenkins_server, job_name=approval.job_name,
                            build_number=approval.build_number, content=LOG, size=len(LOG.encode()))
    approval.refresh_from_db()
    return approval


def _formats() -> list:
    return [pytest.param("mysqldump", id="mysqldump"), pytest.param("", id="orm")] if _mysql() else [
        pytest.param(None, id="sqlite-online-backup")]


@pytest.mark.django_db(transaction=True)  # 备份读的是已提交的数据（mysqldump 是另一个连接）
@pytest.mark.parametrize("dump_program", _formats())
def test_backup_then_restore_into_an_empty_database_keeps_everything(history, tmp_path, settings, scratch_url,
                                                                     dump_program):
    if dump_program is not None:
        settings.BACKUP_MYSQLDUMP = dump_program  # "" = 没有 mysqldump：ORM 在 REPEATABLE READ 事务里导出
    run = backups.backup_create(directory=tmp_path / "backups")
    path = tmp_path / "backups" / run.file_name
    expected_format = {"mysqldump": "sql", "": "json", None: "sqlite3"}[dump_program]
    assert path.name.endswith(f".{expected_format}.gz")
    assert f"-schema-{backups.schema_version()}." in path.name
    assert path.name.startswith(f"approvalbot-{timezone.now():%Y%m%d}T")  # UTC 时间
    for written in (path, backups.checksum_path(path)):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert backups.checksum_path(path).read_text().split() == [run.sha256, path.name]  # sha256sum -c 的格式
    assert run.status == BackupStatus.OK and check_backup()["status"] == "ok"

    restored = _manage(tmp_path, scratch_url, "restore", str(path))
    assert restored.returncode == 0, restored.stderr
    assert "已从" in restored.stdout and "恢复" in restored.stdout

    shown = _manage(tmp_path, scratch_url, "shell", "-c", VERIFY.format(pid=history.public_id))
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout.split("RESULT", 1)[1])
    assert data["description"] == TEXT and data["log"] == LOG and data["result"] == "FAILURE"
    assert data["status"] == "approved" and data["decided_by"] == "Bob"
    assert data["votes"] == [["bob", "approve", "可以发 👍"]]
    assert {"created", "approved"} <= set(data["events"])
    assert data["approvals"] == 1

    # 恢复之后目标库已有数据：再恢复一次被拒绝，并说明原因
    again = _manage(tmp_path, scratch_url, "restore", str(path))
    assert again.returncode == backups.EXIT_REFUSED
    assert "目标数据库不是空的" in again.stderr and "approvals_approval" in again.stderr and "--force" in again.stderr
    # --force：覆盖
    forced = _manage(tmp_path, scratch_url, "restore", "--force", str(path))
    assert forced.returncode == 0, forced.stderr


@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_corrupted_or_unverifiable_file(tmp_path):
    run = backups.backup_create(directory=tmp_path)
    path = tmp_path / run.file_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CommandError) as caught:
        call_command("restore", str(path))
    assert caught.value.returncode == backups.EXIT_CORRUPT
    assert "校验和不符" in str(caught.value) and "拒绝恢复" in str(caught.value)

    backups.checksum_path(path).unlink()
    with pytest.raises(CommandError) as caught:
        call_command("restore", str(path))
    assert caught.value.returncode == backups.EXIT_CORRUPT and "缺少校验文件" in str(caught.value)

    stranger = tmp_path / "dump.sql.gz"
    stranger.write_bytes(gzip.compress(b"DROP DATABASE x;"))
    with pytest.raises(CommandError) as caught:
        call_command("restore", str(stranger))
    assert caught.value.returncode == backups.EXIT_REFUSED and "不是本服务的备份文件" in str(caught.value)


@pytest.mark.django_db
def test_restore_into_a_database_with_data_is_refused_and_changes_nothing(tmp_path, make_approval, shop_rule):
    approval = make_approval()
    path = tmp_path / f"approvalbot-20260101T000000Z-schema-{backups.schema_version()}.sqlite3.gz"
    path.write_bytes(gzip.compress(b"not used"))
    backups.checksum_path(path).write_text(f"{backups._sha256(path)}  {path.name}\n")
    if _mysql():
        path = path.rename(path.with_name(path.name.replace(".sqlite3.", ".sql.")))
        backups.checksum_path(path).write_text(f"{backups._sha256(path)}  {path.name}\n")
    with pytest.raises(CommandError) as caught:
        call_command("restore", str(path))
    assert caught.value.returncode == backups.EXIT_REFUSED
    assert "目标数据库不是空的" in str(caught.value) and "approvals_approval" in str(caught.value)
    approval.refresh_from_db()  # 还在，原样


@pytest.mark.django_db(transaction=True)
def test_only_the_last_n_backups_are_kept(tmp_path):
    ConfigState.objects.create(name="app", data={"backup": {"keep": 2}})  # config/app.json 的 backup.keep
    other = tmp_path / "notes.txt"
    other.write_text("运维笔记")
    names = [backups.backup_create(directory=tmp_path).file_name for _ in range(4)]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*names[2:], *(n + ".sha256" for n in names[2:]), "notes.txt"])


@pytest.mark.django_db(transaction=True)
def test_daily_backup_runs_once_after_the_configured_time(tmp_path, settings):
    settings.BACKUP_DIR = tmp_path
    ConfigState.objects.create(name="app", data={"backup": {"time": "03:30"}})
    day = timezone.localtime().replace(hour=3, minute=29, second=0, microsecond=0)
    assert backups.backup_scheduled(now=day) is None  # 还没到点
    first = backups.backup_scheduled(now=day + timedelta(minutes=1))
    assert first is not None and first.status == BackupStatus.OK
    # 同一天再触发（另一个 beat、下一轮）：不再备份
    assert backups.backup_scheduled(now=day + timedelta(minutes=6)) is None
    assert backups.backup_scheduled(now=day + timedelta(hours=5)) is None
    assert BackupRun.objects.count() == 1 and len(backups.backup_files(tmp_path)) == 1
    # 第二天
    assert backups.backup_scheduled(now=day + timedelta(days=1, minutes=1)) is not None
    assert BackupRun.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_failed_daily_backup_is_recorded_and_retried_later(tmp_path, settings):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    settings.BACKUP_DIR = blocked / "backups"  # 建不了目录
    settings.BACKUP_TIME = "00:00"
    now = timezone.now()
    with pytest.raises(backups.BackupError):
        backups.backup_scheduled(now=now)
    run = BackupRun.objects.get()
    assert run.status == BackupStatus.FAILED and run.error
    health = check_backup()
    assert health["status"] == "error" and health["last_error"]
    assert backups.backup_scheduled(now=now + timedelta(minutes=5)) is None  # 间隔不到：不马上重试
    settings.BACKUP_DIR = tmp_path / "ok"
    retried = backups.backup_scheduled(now=now + timedelta(minutes=20))
    assert retried is not None and retried.pk == run.pk and retried.attempts == 2 and retried.status == "ok"
    assert check_backup()["status"] == "ok"
