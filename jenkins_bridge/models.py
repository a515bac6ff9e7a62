"""Jenkins 控制器（X8：可以有多台，各自的凭据）、API token、构建观察记录。"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from approvalbot.secrets import SecretFileError, read_secret

logger = logging.getLogger(__name__)

# 由环境变量定义的那台默认 Jenkins（JenkinsServer.objects.default()）
ENV_SERVER_NAME = "default"
ENV_SERVER_TOKEN_VARIABLE = "JENKINS_API_TOKEN"

# 后台里填的是“环境变量名”：只允许普通的大写变量名
SECRET_ENV_NAME_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{2,99}$")
# 本服务自己的密钥与设置：后台用户（staff）不能借“检查连接”把它们当作 Jenkins 口令发到任意地址
DENIED_SECRET_ENV_NAMES = frozenset({
    "SECRET_KEY", "DJANGO_SECRET_KEY", "TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET", "TELEGRAM_PROXY_URL",
    "APPROVAL_API_TOKEN", "APPROVAL_API_SIGNING_SECRET", "DATABASE_URL", "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND", "REDIS_URL", "SENTRY_DSN", "EMAIL_HOST_PASSWORD", "JENKINS_URL", "JENKINS_USER",
})
DENIED_SECRET_ENV_PREFIXES = ("DJANGO_", "TELEGRAM_", "APPROVAL_", "CELERY_", "DATABASE_", "DB_", "REDIS_", "APP_",
                              "AWS_", "AZURE_", "GOOGLE_", "GCP_")
# 明确允许：默认 Jenkins 的 token 就放在这里
ALLOWED_SECRET_ENV_NAMES = frozenset({ENV_SERVER_TOKEN_VARIABLE})


def secret_env_name_problem(name: str) -> str | None:
    """变量名不能用时返回原因（给后台与日志看），能用返回 None。空串表示“不用密钥”，可以。"""
    if not name:
        return None
    if name in ALLOWED_SECRET_ENV_NAMES:
        return None
    if not SECRET_ENV_NAME_PATTERN.match(name):
        return gettext("环境变量名只能由大写字母、数字和下划线组成，以字母开头，长 3–100 个字符，如 JENKINS_PROD_API_TOKEN。")
    bare = name[:-5] if name.endswith("_FILE") else name
    if bare in DENIED_SECRET_ENV_NAMES or bare.startswith(DENIED_SECRET_ENV_PREFIXES):
        return gettext("「%(name)s」是本服务自己的密钥或设置，不能用作 Jenkins 或 API 的密钥变量。") % {"name": name}
    return None


def validate_secret_env_name(value: str) -> None:
    problem = secret_env_name_problem(value)
    if problem:
        raise ValidationError(problem, code="invalid_secret_env")


def read_secret_env(name: str) -> str:
    """按变量名读取密钥：进程环境变量 NAME，或 NAME_FILE 指向的文件（approvalbot.secrets，与 settings 同一个读法）。

    不读 Django settings：否则后台里填 SECRET_KEY 之类就能读出任意设置。不合规的变量名在这里再拒绝一次
    （绕过后台直接写库的情况），返回空串并记日志。密钥从不入库（C9）。
    """
    if not name:
        return ""
    problem = secret_env_name_problem(name)
    if problem:
        logger.warning("拒绝读取密钥变量 %s：%s", name, problem)
        return ""
    try:
        value = read_secret(name)
    except SecretFileError as exc:
        logger.warning("%s", exc)
        return ""
    if not value and name == ENV_SERVER_TOKEN_VARIABLE:
        # 默认 Jenkins 的 token 由 settings 读取过（测试或嵌入式部署可能只在 settings 里设置）
        from django.conf import settings

        value = getattr(settings, ENV_SERVER_TOKEN_VARIABLE, "") or ""
    return value


class JenkinsServerManager(models.Manager["JenkinsServer"]):
    def default(self) -> JenkinsServer:
        """默认 Jenkins：后台标记的默认服务器，否则是由环境变量定义、名为 default 的那台（没有就建）。

        环境变量定义的那台读出时以当前 JENKINS_URL/JENKINS_USER 为准（JenkinsServer.from_db），
        先于 JENKINS_URL 配好就被调用过、或运维后来改了地址，都不会用到第一次抄下的旧值。
        """
        from django.conf import settings

        server = self.filter(is_default=True, is_active=True).first()
        if server is None:
            server, _created = self.get_or_create(
                name=ENV_SERVER_NAME,
                defaults={"url": settings.JENKINS_URL, "username": settings.JENKINS_USER,
                          "api_token_env": ENV_SERVER_TOKEN_VARIABLE, "is_default": True,
                          "timeout_seconds": settings.JENKINS_TIMEOUT_SECONDS},
            )
        return server


class JenkinsServer(models.Model):
    name = models.SlugField(_("名称"), max_length=64, unique=True)
    url = models.URLField(_("地址"), max_length=500, blank=True, help_text=_("如 https://jenkins.example.com/"))
    username = models.CharField(_("用户名"), max_length=150, blank=True)
    # 密钥只从环境变量读取（C9）：这里存变量名，不存 token 本身
    api_token_env = models.CharField(
        _("API Token 环境变量名"), max_length=100, blank=True, help_text=_("如 JENKINS_PROD_API_TOKEN"),
        validators=[validate_secret_env_name],
    )
    webhook_auth_header_env = models.CharField(
        _("回调 Authorization 头环境变量名"), max_length=100, blank=True,
        help_text=_("Webhook Step 回调需要认证时，从该环境变量读取 Authorization 头的值"),
        validators=[validate_secret_env_name],
    )
    approver_parameter = models.CharField(
        _("审批人参数名"), max_length=100, blank=True, default="APPROVER",
        help_text=_("input 步骤声明了同名参数时，把真实审批人写进去；留空则总用 proceedEmpty"),
    )
    timeout_seconds = models.FloatField(_("请求超时（秒）"), default=10.0)
    is_default = models.BooleanField(_("默认服务器"), default=False)
    is_active = models.BooleanField(_("启用"), default=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    objects = JenkinsServerManager()

    class Meta:
        verbose_name = _("Jenkins 服务器")
        verbose_name_plural = _("Jenkins 服务器")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any) -> JenkinsServer:
        instance = super().from_db(db, field_names, values)
        instance.apply_environment()
        return instance

    @property
    def is_env_backed(self) -> bool:
        """由 JENKINS_URL / JENKINS_USER / JENKINS_API_TOKEN 定义的那台默认 Jenkins。"""
        return self.name == ENV_SERVER_NAME and self.api_token_env == ENV_SERVER_TOKEN_VARIABLE

    def apply_environment(self) -> None:
        """环境变量定义的那台以当前环境变量为准：库里抄下的是第一次用到时的旧值，运维改了地址后不能还用它。"""
        from django.conf import settings

        if {"name", "api_token_env"} & self.get_deferred_fields():
            return  # .only()/.defer() 的查询：读这两个字段会再查库（在 from_db 里还会无限递归）
        if self.is_env_backed and settings.JENKINS_URL:
            self.url, self.username = settings.JENKINS_URL, settings.JENKINS_USER
            self.timeout_seconds = settings.JENKINS_TIMEOUT_SECONDS

    @classmethod
    def env_server_sync(cls) -> int:
        """把库里那一行也改成当前的环境变量（读出的对象已由 from_db 更正，这里只为按 url 筛选的查询）。"""
        from django.conf import settings

        if not settings.JENKINS_URL:
            return 0
        return (
            cls.objects.filter(name=ENV_SERVER_NAME, api_token_env=ENV_SERVER_TOKEN_VARIABLE)
            .exclude(url=settings.JENKINS_URL, username=settings.JENKINS_USER)
            .update(url=settings.JENKINS_URL, username=settings.JENKINS_USER)
        )

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
        validators=[validate_secret_env_name],
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
    # 第一次看到 input 等待时构建上已有的 ApproverAction / Rejection 数：之后只有新增的才算这个 input 的结果
    # （多个 input 的流水线里，前一个 input 的批准人不能被当成这个 input 的批准人）
    approvers_before = models.PositiveIntegerField(_("看到 input 时已有的批准记录"), null=True, blank=True)
    rejections_before = models.PositiveIntegerField(_("看到 input 时已有的中止记录"), null=True, blank=True)
    # 镜像任务成功读到过这个构建：之后的 404 才能说明构建被删了（否则可能只是服务账号无权查看）
    build_seen_at = models.DateTimeField(_("看到构建"), null=True, blank=True)
    not_found_count = models.PositiveIntegerField(_("连续 404 次数"), default=0)
    not_found_since = models.DateTimeField(_("首次 404"), null=True, blank=True)
    # 决定已做出、流水线还没走到 input：不占用重试次数，由镜像任务在 input 出现（或构建结束）时重新投递
    awaiting_input_since = models.DateTimeField(_("等待 input 出现"), null=True, blank=True)
    checked_at = models.DateTimeField(_("最近检查"), null=True, blank=True, db_index=True)
    last_error = models.TextField(_("最近错误"), blank=True)

    class Meta:
        verbose_name = _("构建观察")
        verbose_name_plural = _("构建观察")

    def __str__(self) -> str:
        return str(self.approval_id)


class SignatureNonce(models.Model):
    """签名请求用过的 nonce：同一个 token 的同一个 nonce 只能用一次，截获的请求不能重放。

    放在数据库而不是进程内存：每个 web 进程都要看到别的进程收过的 nonce。只需保留到签名窗口结束，
    由后来的签名请求顺手删除（jenkins_bridge.api.authentication.nonce_claim），不需要定时任务。
    """

    token_hash = models.CharField(_("token 哈希"), max_length=64)
    nonce = models.CharField(_("nonce"), max_length=64)
    created_at = models.DateTimeField(_("收到时间"), db_index=True)

    class Meta:
        verbose_name = _("签名 nonce")
        verbose_name_plural = _("签名 nonce")
        constraints = [models.UniqueConstraint(fields=["token_hash", "nonce"], name="signature_nonce_uniq")]

    def __str__(self) -> str:
        return self.nonce
