"""python manage.py load_config [--check] [--require]：校验并应用 config/users.json 与 config/app.json。"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.config import config_reload
from accounts.tasks import config_change_notify


class Command(BaseCommand):
    # argparse 的 description 必须是 str（惰性字符串会让 --help 崩溃）
    help = _("校验并加载 config/users.json 与 config/app.json（--check 只校验，不写数据库）。")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--check", action="store_true", help=gettext_lazy("只校验，不写数据库"))
        parser.add_argument("--require", action="store_true", help=gettext_lazy("文件不存在也算失败（用于部署检查）"))

    def handle(self, *args, check: bool = False, require: bool = False, **options) -> None:
        results = config_reload(apply=not check, force=True)
        failed = False
        for result in results:
            for warning in result.warnings:
                self.stderr.write(self.style.WARNING(_("警告：%(w)s") % {"w": warning}))
            if result.status == "refused":
                failed = True
                self.stderr.write(self.style.ERROR(result.describe()))
            elif result.status == "missing":
                failed = failed or require
                style = self.style.ERROR if require else self.style.NOTICE
                self.stdout.write(style(result.describe()))
            else:
                self.stdout.write(self.style.SUCCESS(result.describe()))
            if not check and result.changed and result.status in ("applied", "refused"):
                config_change_notify(result)
        if failed:
            raise CommandError(_("配置文件有错误，未通过的文件没有生效。"))
