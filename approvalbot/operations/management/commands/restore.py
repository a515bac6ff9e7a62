"""python manage.py restore FILE [--force] —— 从 manage.py backup 的文件恢复（D7）。

先核对校验和，再确认目标库是空的（--force 跳过这一步、覆盖现有数据），导入后 migrate 到当前代码的结构。
恢复前先停掉 web、bot、worker、beat：恢复过程中写进来的数据会丢失或与备份混在一起。
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from approvalbot.operations.backups import EXIT_ERROR, BackupError, backup_restore


class Command(BaseCommand):
    help = "从备份文件恢复：只恢复到空数据库（--force 覆盖现有数据），先核对校验和，完成后执行迁移。"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="manage.py backup 写出的 .gz 文件（旁边须有 .sha256）")
        parser.add_argument("--force", action="store_true", help="目标数据库已有数据时仍然恢复（覆盖）")

    def handle(self, *args, **options) -> None:
        path: Path = options["file"]
        try:
            result = backup_restore(path, force=options["force"])
        except BackupError as exc:
            template = _("恢复失败：%(e)s") if exc.exit_code == EXIT_ERROR else _("恢复被拒绝：%(e)s")
            raise CommandError(template % {"e": exc.message}, returncode=exc.exit_code) from None
        self.stdout.write(self.style.SUCCESS(
            _("已从 %(name)s 恢复（格式 %(format)s，备份时的结构版本 %(schema)s，迁移后 %(now)s）")
            % {"name": path.name, "format": result["format"], "schema": result["schema"],
               "now": result["schema_now"]}))
