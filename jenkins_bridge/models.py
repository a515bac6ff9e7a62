"""Jenkins 控制器（X8：可以有多台，各自的凭据）。"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class JenkinsServer(models.Model):
    name = models.SlugField(_("名称"), max_length=64, unique=True)
    url = models.URLField(_("地址"), max_length=500, blank=True, help_text=_("如 https://jenkins.example.com/"))
    username = models.CharField(_("用户名"), max_length=150, blank=True)
    # 密钥只从环境变量读取（C9）：这里存变量名，不存 token 本身
    api_token_env = models.CharField(
        _("API Token 环境变量名"), max_length=100, blank=True, help_text=_("如 JENKINS_PROD_API_TOKEN")
    )
    webhook_auth_header_env = models.CharField(
        _("回调 Authorization 头环境变量名"), max_length=100, blank=True,
        help_text=_("Webhook Step 回调需要认证时，从该环境变量读取 Authorization 头的值"),
    )
    timeout_seconds = models.FloatField(_("请求超时（秒）"), default=10.0)
    is_default = models.BooleanField(_("默认服务器"), default=False)
    is_active = models.BooleanField(_("启用"), default=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("Jenkins 服务器")
        verbose_name_plural = _("Jenkins 服务器")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/") + "/" if self.url else ""
