"""python manage.py backup [--dir DIR] —— 一份一致的、压缩的全量备份（D7），旁边是 .sha256 校验文件。"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from approvalbot.operations.backups import BackupError, backup_create, backup_dir
from approvalbot.operations.models import BackupTrigger


class Command(BaseCommand):
    help = "备份全部数据：SQLite 用在线备份 API，MySQL/MariaDB 用 mysqldump --single-transaction（或 ORM 导出）。"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dir", type=Path, default=None,
                            help="备份目录（默认 BACKUP_DIR，即 var/backups）；只保留最近 backup.keep 份")

    def handle(self, *args, **options) -> None:
        directory = options["dir"] or backup_dir()
        try:
            run = backup_create(directory=directory, trigger=BackupTrigger.MANUAL)
        except BackupError as exc:
            raise CommandError(_("备份失败：%(e)s") % {"e": exc.message}, returncode=exc.exit_code) from None
        path = Path(directory) / run.file_name
        self.stdout.write(self.style.SUCCESS(_("已备份到 %(path)s（%(size)s 字节，SHA-256 %(sha)s）")
                                             % {"path": path, "size": run.size, "sha": run.sha256}))
