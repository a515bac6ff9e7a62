"""manage.py create_api_token NAME --scope jenkins --scope read：生成 API token，明文只打印这一次。

标准输出只有 token 本身（脚本可以 TOKEN=$(… create_api_token …)）；说明文字在终端里与 token 一起显示在标准输出
（绿色），输出被重定向时写到标准错误，不混进 token。成功不是错误：不写成红色。
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from jenkins_bridge.models import ApiScope
from jenkins_bridge.services import api_token_create


class Command(BaseCommand):
    # argparse 的 description 必须是 str（惰性字符串会让 --help 崩溃）
    help = _("生成一个 API token（库里只存哈希，明文只显示一次）。")

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help=gettext_lazy("token 名称（字母数字、-、_）"))
        parser.add_argument("--scope", action="append", choices=ApiScope.values, required=True,
                            help=gettext_lazy("权限范围，可重复：jenkins（申请审批/回报结果）、approve（同意/拒绝）、read（只读）"))
        parser.add_argument("--signing-secret-env", default="",
                            help=gettext_lazy("要求 HMAC 签名时，存放签名密钥的环境变量名"))
        parser.add_argument("--description", default="")
        parser.add_argument("--replace", action="store_true", help=gettext_lazy("轮换同名 token（旧值立即失效）"))

    def handle(self, *args, **options) -> None:
        from django.core.exceptions import ValidationError
        from django.core.validators import validate_slug

        try:
            validate_slug(options["name"])
        except ValidationError as exc:
            raise CommandError(_("名称不合法：%(name)s") % {"name": options["name"]}) from exc
        try:
            token, raw = api_token_create(name=options["name"], scopes=options["scope"],
                                          signing_secret_env=options["signing_secret_env"],
                                          description=options["description"], replace=options["replace"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        message = _("已创建 token「%(name)s」，权限范围：%(scopes)s。明文只显示这一次：") % {
            "name": token.name, "scopes": ", ".join(token.scopes)}
        hint = _("在 Jenkins 里存为凭据（Secret text），ID 用 approval-api-token。")
        if self.stdout.isatty():
            self.stdout.write(message, self.style.SUCCESS)
            self.stdout.write(raw)
            self.stdout.write(hint)
            return
        # 标准错误默认按错误着色；说明不是错误，去掉着色
        self.stderr.write(message, style_func=lambda text: text)
        self.stdout.write(raw)
        self.stderr.write(hint, style_func=lambda text: text)
