"""Jenkins 控制器（X8：可以有多台，各自的凭据）、API token、构建观察记录。"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from django.db import models
from django.utils.translation import gettext_lazy as _


def read_secret_env(name: str) -> str:
    """按变量名读取密钥：NAME 或 NAME_FILE（与 settings.secret 相同的约定）；密钥从不入库（C9）。"""
    if not name:
        return ""
    from django.conf import settings

    # settings 里已经读过的同名密钥优先（测试与 .env 都经由 settings）
    value = getattr(settings, name, None)
    if isinstance(value, str) and value:
        return value
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text(encoding="utf-8").strip()
        except OSError:
            return ""
    return os.environ.get(name, "")


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
    approver_parameter = models.CharField(
        _("审批人参数名"), max_length=100, blank=True, default="APPROVER",
        help_text=_("input 步骤声明了同名参数时，把真实审批人写进去（X14）；留空则总用 proceedEmpty"),
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

    def api_token(self) -> str:
        return read_secret_env(self.api_token_env)

    def webhook_auth_header(self) -> str:
        return read_secret_env(self.webhook_auth_header_env)


class ApiScope(models.TextChoices):
    JENKINS = "jenkins", _("Jenkins：申请审批、回报构建结果")
    APPROVE = "approve", _("审批：以指定审批人身份同意/拒绝")
    READ = "read", _("只读：状态、列表、用户")


def hash_token(raw: str) -> str:
    """token 是 256 bit 随机数，SHA-256 足以防止库泄露后还原；无需慢哈希。"""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class ApiToken(models.Model):
    """调用 /api/ 的凭据。只存哈希，明文只在创建时显示一次。"""

    name = models.SlugField(_("名称"), max_length=64, unique=True)
    key_prefix = models.CharField(_("前缀"), max_length=16, help_text=_("便于辨认是哪个 token，不足以还原"))
    token_hash = models.CharField(_("哈希"), max_length=64, unique=True, editable=False)
    scopes = models.JSONField(_("权限范围"), default=list, help_text=_("jenkins / approve / read 的组合"))
    signing_secret_env = models.CharField(
        _("签名密钥环境变量名"), max_length=100, blank=True,
        help_text=_("设置后请求必须带 X-Approval-Signature（HMAC-SHA256，5 分钟有效）"),
    )
    description = models.CharField(_("说明"), max_length=200, blank=True)
    is_active = models.BooleanField(_("启用"), default=True)
    expires_at = models.DateTimeField(_("过期时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("最近使用"), null=True, blank=True)

    class Meta:
        verbose_name = _("API Token")
        verbose_name_plural = _("API Token")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    def signing_secret(self) -> str:
        return read_secret_env(self.signing_secret_env)


class BuildWatch(models.Model):
    """对一条审批所在构建的观察记录：X12 镜像与恢复操作的幂等判断都靠它。"""

    approval = models.OneToOneField(
        "approvals.Approval", verbose_name=_("审批"), on_delete=models.CASCADE, related_name="jenkins_watch"
    )
    # 第一次看到 input 在 Jenkins 里等待的时间：之后它消失而我们没操作过，说明有人在 Jenkins 里处理了
    input_seen_at = models.DateTimeField(_("看到 input 等待"), null=True, blank=True)
    # 我们向 Jenkins 发出继续/中止请求的时间：超时后重试遇到 404 时据此判定“其实已经成功”
    action_sent_at = models.DateTimeField(_("已发送操作"), null=True, blank=True)
    checked_at = models.DateTimeField(_("最近检查"), null=True, blank=True, db_index=True)
    last_error = models.TextField(_("最近错误"), blank=True)

    class Meta:
        verbose_name = _("构建观察")
        verbose_name_plural = _("构建观察")

    def __str__(self) -> str:
        return str(self.approval_id)
