"""备份与恢复（D7）：一致的、压缩的全量快照，旁边一个 SHA-256 校验文件，只保留最近 N 份。

- SQLite：在线备份 API（sqlite3.Connection.backup）——WAL 模式的活数据库绝不直接复制文件；
- MySQL/MariaDB：有 mysqldump 时用 `--single-transaction`（InnoDB 一致快照，不锁表）；没有时在一个
  REPEATABLE READ 事务里用 ORM 导出（dumpdata），同样是同一时刻的快照。
文件名带 UTC 时间与结构版本（已应用迁移的摘要）：approvalbot-20261202T031500Z-schema-1a2b3c4d.sqlite3.gz。
恢复只进空数据库（除非 --force）：先核对校验和，再导入，最后 migrate 到当前代码的结构。
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO

from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.db import IntegrityError, connections, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.app_config import backup_settings
from approvalbot.text import join_names

from .models import BackupRun, BackupStatus, BackupTrigger

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
NAME_RE = re.compile(r"^approvalbot-(\d{8}T\d{6}Z)-schema-([0-9a-f]{8})(?:-(\d+))?\.(sqlite3|sql|json)\.gz$")
# 不算“数据”的表：迁移时自动生成的（内容类型、权限）、运行中的进程自己会写的（会话、周期任务表、运维状态）
INFRASTRUCTURE_APPS = {"contenttypes", "sessions", "django_celery_beat", "operations"}
INFRASTRUCTURE_MODELS = {("auth", "permission")}
# 每日备份失败后的重试：最多 3 次，相隔至少 15 分钟；进行中超过 1 小时视为中途死掉
SCHEDULED_MAX_ATTEMPTS = 3
SCHEDULED_RETRY_AFTER = timedelta(minutes=15)
SCHEDULED_STUCK_AFTER = timedelta(hours=1)

# 退出码：1 = 出错，2 = 拒绝（目标库不是空的、格式不对），3 = 文件校验失败
EXIT_ERROR, EXIT_REFUSED, EXIT_CORRUPT = 1, 2, 3


class BackupError(Exception):
    """备份或恢复失败；message 是给人看的中文说明，exit_code 给管理命令用。"""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True)
class BackupFile:
    path: Path
    size: int
    sha256: str

    @property
    def checksum_path(self) -> Path:
        return checksum_path(self.path)


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def schema_version(using: str = "default") -> str:
    """已应用迁移（app.名字）的摘要前 8 位：同一版本的代码迁移完是同一个值。"""
    applied = sorted(f"{app}.{name}" for app, name in MigrationRecorder(connections[using]).applied_migrations())
    return hashlib.sha256("\n".join(applied).encode()).hexdigest()[:8]


def backup_dir() -> Path:
    return Path(settings.BACKUP_DIR)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _private_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


def _target_name(directory: Path, now: datetime, version: str, ext: str) -> Path:
    stem = f"approvalbot-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-schema-{version}"
    # 同一秒里的第二份、第三份：序号比这一秒已有的都大（旧的可能已被清理掉，不能复用它的名字）
    taken = [int(m[3] or 1) for p in directory.glob(f"{stem}*") if (m := NAME_RE.match(p.name))]
    n = max(taken, default=0) + 1
    return directory / (f"{stem}.{ext}.gz" if n == 1 else f"{stem}-{n}.{ext}.gz")


# ---------------------------------------------------------------- MySQL 客户端


@contextmanager
def _mysql_options(using: str) -> Iterator[list[str]]:
    """连接参数写进一个 0600 的临时选项文件：密码不出现在命令行（ps 看得见）里。"""
    conf = connections[using].settings_dict
    lines = ["[client]"]
    for key, option in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"), ("PORT", "port")):
        value = str(conf.get(key) or "")
        if key == "HOST" and value.startswith("/"):
            option = "socket"
        if value:
            lines.append(f"{option}={value}")
    fd, name = tempfile.mkstemp(prefix="approvalbot-my-", suffix=".cnf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        yield [f"--defaults-extra-file={name}", "--default-character-set=utf8mb4"]
    finally:
        os.unlink(name)


def _run_piped(command: list[str], *, source: IO[bytes] | None = None, sink: IO[bytes] | None = None) -> None:
    """运行 mysqldump / mysql：source 的内容喂给它的标准输入，或把它的标准输出写进 sink。"""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE if source else subprocess.DEVNULL,
                                stdout=subprocess.PIPE if sink else subprocess.DEVNULL, stderr=errors)
        try:
            if source is not None:
                assert proc.stdin is not None
                try:
                    for chunk in iter(lambda: source.read(CHUNK), b""):
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # 客户端出错先退出了：错误在它的标准错误里
                finally:
                    proc.stdin.close()
            if sink is not None:
                assert proc.stdout is not None
                for chunk in iter(lambda: proc.stdout.read(CHUNK), b""):
                    sink.write(chunk)
        finally:
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            detail = errors.read().decode("utf-8", "replace").strip()[-1000:]
            raise BackupError(_("%(cmd)s 失败（退出码 %(code)s）：%(detail)s")
                              % {"cmd": Path(command[0]).name, "code": code, "detail": detail})


def mysqldump_path() -> str | None:
    return shutil.which(settings.BACKUP_MYSQLDUMP) if settings.BACKUP_MYSQLDUMP else None


# ---------------------------------------------------------------- 写备份


def _dump_sqlite(using: str, target: Path) -> None:
    connection = connections[using]
    connection.ensure_connection()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        copy = Path(tmp) / "db.sqlite3"
        destination = sqlite3.connect(copy)
        try:
            connection.connection.backup(destination)  # 在线备份：一致的页快照，写入者照常工作
        finally:
            destination.close()
        with copy.open("rb") as source, gzip.open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, CHUNK)


def _dump_mysqldump(using: str, target: Path, program: str) -> None:
    name = connections[using].settings_dict["NAME"]
    with _mysql_options(using) as options, gzip.open(target, "wb") as sink:
        _run_piped([program, *options, "--single-transaction", "--quick", "--hex-blob", "--no-tablespaces", name],
                   sink=sink)


def _dump_orm(using: str, target: Path) -> None:
    """没有 mysqldump：一个 REPEATABLE READ 事务里导出全部模型——第一条读建立快照，之后每张表都是那一刻的样子。"""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    try:
        with transaction.atomic(using=using):
            call_command("dumpdata", database=using, output=str(target), verbosity=0)
    finally:
        connection.close()  # 下一个连接按 settings 重新设回 READ COMMITTED


def backup_write(*, directory: Path | None = None, using: str = "default", now: datetime | None = None) -> BackupFile:
    """写一份备份与它的校验文件（都是 0600），返回文件信息。不记录、不清理旧备份（见 backup_create）。"""
    directory = _private_dir(Path(directory or backup_dir()))
    now = now or timezone.now()
    vendor = connections[using].vendor
    if connections[using].in_atomic_block:
        # 事务里的改动备份看不见（mysqldump 是另一个连接），SQLite 的在线备份还会等这个事务的锁
        raise BackupError(_("不能在未提交的事务里备份"))
    program = mysqldump_path() if vendor == "mysql" else None
    ext = {"sqlite": "sqlite3", "mysql": "sql" if program else "json"}.get(vendor)
    if ext is None:
        raise BackupError(_("不支持备份 %(vendor)s 数据库") % {"vendor": vendor})
    target = _target_name(directory, now, schema_version(using), ext)
    partial = target.with_name(target.name + ".part")
    try:
        partial.touch(mode=0o600)
        if vendor == "sqlite":
            _dump_sqlite(using, partial)
        elif program:
            _dump_mysqldump(using, partial, program)
        else:
            _dump_orm(using, partial.with_name(partial.name + ".json.gz"))
            partial.with_name(partial.name + ".json.gz").replace(partial)
        partial.chmod(0o600)
        partial.replace(target)  # 写完才改名：半截的文件不会被当作备份
    except BaseException:
        for leftover in (partial, partial.with_name(partial.name + ".json.gz")):
            leftover.unlink(missing_ok=True)
        raise
    digest = _sha256(target)
    checksum = checksum_path(target)
    checksum.write_text(f"{digest}  {target.name}\n", encoding="utf-8")
    checksum.chmod(0o600)
    return BackupFile(path=target, size=target.stat().st_size, sha256=digest)


def backup_files(directory: Path | None = None) -> list[Path]:
    """目录里本服务写的备份文件，从旧到新（文件名里的 UTC 时间可以直接排序）。"""
    directory = Path(directory or backup_dir())
    if not directory.is_dir():
        return []
    found = [(match, p) for p in directory.iterdir() if p.is_file() and (match := NAME_RE.match(p.name))]
    # 按时间排，同一秒的按序号（-2、-3 是后写的）
    return [p for match, p in sorted(found, key=lambda item: (item[0][1], int(item[0][3] or 1)))]


def backup_prune(*, directory: Path | None = None, keep: int) -> list[Path]:
    """只保留最近 keep 份（连同校验文件）；返回删掉的备份。别的文件不动。"""
    files = backup_files(directory)
    stale = files[:-keep] if keep > 0 else []
    for path in stale:
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
    return stale


def backup_create(*, directory: Path | None = None, trigger: str = BackupTrigger.MANUAL,
                  run: BackupRun | None = None, using: str = "default") -> BackupRun:
    """做一次备份并记录（成功或失败都记在 BackupRun 上，/health 与告警读它），然后清理到最近 N 份。"""
    now = timezone.now()
    if run is None:
        run = BackupRun.objects.create(trigger=trigger, started_at=now, status=BackupStatus.RUNNING)
    try:
        written = backup_write(directory=directory, using=using, now=now)
    except Exception as exc:
        message = exc.message if isinstance(exc, BackupError) else f"{exc.__class__.__name__}: {exc}"
        BackupRun.objects.filter(pk=run.pk).update(status=BackupStatus.FAILED, finished_at=timezone.now(),
                                                   error=message[:4000])
        logger.error("备份失败：%s", message, exc_info=not isinstance(exc, BackupError))
        raise BackupError(message) from exc
    BackupRun.objects.filter(pk=run.pk).update(
        status=BackupStatus.OK, finished_at=timezone.now(), file_name=written.path.name, size=written.size,
        sha256=written.sha256, error="")
    removed = backup_prune(directory=written.path.parent, keep=int(backup_settings()["keep"]))
    logger.info("备份完成：%s（%d 字节）；清理了 %d 份旧备份", written.path, written.size, len(removed))
    run.refresh_from_db()
    return run


# ---------------------------------------------------------------- 每日备份


def _scheduled_claim(slot: date, now: datetime) -> BackupRun | None:
    """认领当天的备份：第一次是插入唯一的 slot 行；失败或中途死掉的在间隔之后按条件更新重新认领。"""
    try:
        with transaction.atomic():
            return BackupRun.objects.create(trigger=BackupTrigger.SCHEDULED, slot=slot, started_at=now,
                                            status=BackupStatus.RUNNING)
    except IntegrityError:
        pass
    row = BackupRun.objects.filter(slot=slot).first()
    if row is None or row.attempts >= SCHEDULED_MAX_ATTEMPTS:
        return None
    retryable = (Q(status=BackupStatus.FAILED, finished_at__lte=now - SCHEDULED_RETRY_AFTER)
                 | Q(status=BackupStatus.RUNNING, started_at__lte=now - SCHEDULED_STUCK_AFTER))
    claimed = (BackupRun.objects.filter(retryable, pk=row.pk, attempts=row.attempts)
               .update(status=BackupStatus.RUNNING, attempts=F("attempts") + 1, started_at=now, finished_at=None))
    return BackupRun.objects.get(pk=row.pk) if claimed else None


def backup_scheduled(*, now: datetime | None = None) -> BackupRun | None:
    """beat 每几分钟调用一次：到了 backup.time（TIME_ZONE）之后，当天还没备份过就备份一次。"""
    now = now or timezone.now()
    hour, minute = (int(part) for part in str(backup_settings()["time"]).split(":"))
    local = timezone.localtime(now)
    if local < local.replace(hour=hour, minute=minute, second=0, microsecond=0):
        return None
    run = _scheduled_claim(local.date(), now)
    if run is None:
        return None
    return backup_create(trigger=BackupTrigger.SCHEDULED, run=run)


# ---------------------------------------------------------------- 恢复


def backup_verify(path: Path) -> str:
    """核对 <文件>.sha256；对不上、缺校验文件、不是本服务的备份都抛 BackupError。返回格式（sqlite3/sql/json）。"""
    match = NAME_RE.match(path.name)
    if not path.is_file():
        raise BackupError(_("找不到备份文件 %(path)s") % {"path": path}, exit_code=EXIT_REFUSED)
    if not match:
        raise BackupError(_("%(name)s 不是本服务的备份文件（文件名应为 approvalbot-<时间>-schema-<版本>.<格式>.gz）")
                          % {"name": path.name}, exit_code=EXIT_REFUSED)
    checksum = checksum_path(path)
    if not checksum.is_file():
        raise BackupError(_("缺少校验文件 %(name)s，无法确认备份完好，拒绝恢复") % {"name": checksum.name},
                          exit_code=EXIT_CORRUPT)
    expected = checksum.read_text(encoding="utf-8").split()[:1]
    if not expected or expected[0].lower() != _sha256(path):
        raise BackupError(_("校验和不符：%(name)s 已损坏或被改动过，拒绝恢复") % {"name": path.name},
                          exit_code=EXIT_CORRUPT)
    return match[4]


def database_contents(using: str = "default") -> list[str]:
    """有数据的表（迁移自动生成的、运行中进程自己写的表不算）。空列表 = 空数据库，可以放心恢复。"""
    connection = connections[using]
    existing = set(connection.introspection.table_names())
    tables = []
    for model in apps.get_models():
        meta = model._meta
        if (meta.app_label in INFRASTRUCTURE_APPS or (meta.app_label, meta.model_name) in INFRASTRUCTURE_MODELS
                or meta.db_table not in existing or not meta.managed):
            continue
        if model._default_manager.using(using).exists():
            tables.append(meta.db_table)
    return sorted(tables)


def _restore_sqlite(path: Path, using: str) -> None:
    connection = connections[using]
    connection.ensure_connection()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "db.sqlite3"
        with gzip.open(path, "rb") as source, copy.open("wb") as sink:
            shutil.copyfileobj(source, sink, CHUNK)
        source_db = sqlite3.connect(copy)
        try:
            source_db.execute("PRAGMA quick_check").fetchone()
            source_db.backup(connection.connection)  # 整库替换：目标里原有的表与行都被备份的内容取代
        except sqlite3.DatabaseError as exc:
            raise BackupError(_("备份里的 SQLite 数据库打不开：%(e)s") % {"e": exc}, exit_code=EXIT_CORRUPT) from None
        finally:
            source_db.close()
    connection.close()


def _restore_sql(path: Path, using: str) -> None:
    program = shutil.which(settings.BACKUP_MYSQL_CLIENT) if settings.BACKUP_MYSQL_CLIENT else None
    if not program:
        raise BackupError(_("恢复 .sql.gz 备份需要 mysql 客户端（BACKUP_MYSQL_CLIENT=%(p)s 找不到）")
                          % {"p": settings.BACKUP_MYSQL_CLIENT or '""'})
    connections[using].close()
    name = connections[using].settings_dict["NAME"]
    with _mysql_options(using) as options, gzip.open(path, "rb") as source:
        _run_piped([program, *options, name], source=source)


def _restore_json(path: Path, using: str) -> None:
    call_command("migrate", database=using, interactive=False, verbosity=0)
    # 迁移生成的内容类型与权限先清掉：备份里有它们原来的主键，别处的外键指向那些主键
    call_command("flush", database=using, interactive=False, inhibit_post_migrate=True, verbosity=0)
    call_command("loaddata", str(path), database=using, verbosity=0)


def backup_restore(path: Path, *, force: bool = False, using: str = "default") -> dict[str, str]:
    """恢复一份备份：核对校验和 → 检查目标库是空的（force 时跳过）→ 导入 → migrate 到当前结构。"""
    path = Path(path)
    kind = backup_verify(path)
    vendor = connections[using].vendor
    wanted = {"sqlite3": "sqlite", "sql": "mysql", "json": vendor}[kind]
    if wanted != vendor:
        raise BackupError(_("这份备份来自 %(src)s 数据库，不能恢复到 %(dst)s 数据库") % {"src": wanted, "dst": vendor},
                          exit_code=EXIT_REFUSED)
    if not force:
        filled = database_contents(using)
        if filled:
            shown = join_names(filled[:8]) + ("……" if len(filled) > 8 else "")
            raise BackupError(
                _("目标数据库不是空的（%(tables)s 里有数据）：恢复会覆盖它们。确认要覆盖时加 --force。") % {"tables": shown},
                exit_code=EXIT_REFUSED)
    {"sqlite3": _restore_sqlite, "sql": _restore_sql, "json": _restore_json}[kind](path, using)
    call_command("migrate", database=using, interactive=False, verbosity=0)
    return {"format": kind, "schema": NAME_RE.match(path.name)[2], "schema_now": schema_version(using)}
