"""首次运行时创建一个后台超级用户，让新人无需交互就能登录后台。"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "若还没有任何超级用户，创建 admin 并把随机密码写入 var/admin-password.txt（只打印一次）。"

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, **options) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self.stdout.write("已存在超级用户，跳过。")
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=options["username"], email="", password=password)
        path = settings.VAR_DIR / "admin-password.txt"
        path.write_text(f"{options['username']}\n{password}\n", encoding="utf-8")
        path.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(
            f"已创建后台超级用户 {options['username']}，密码：{password}（也保存在 {path}，请登录后修改）"
        ))
