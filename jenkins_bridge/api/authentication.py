"""API token 认证：Authorization: Bearer <token>；token 只以哈希比较，可选 HMAC 签名（每个 token 单独设置）。

APPROVAL_API_TOKEN 作为引导 token（jenkins + read）只在内存里按哈希比较，不写数据库：
改环境变量即轮换、旧值立刻失效，启动时也不必有迁移或写库的竞争。
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from ..models import ApiScope, ApiToken, hash_token
from .errors import PayloadTooLarge

SIGNATURE_HEADER = "HTTP_X_APPROVAL_SIGNATURE"
TIMESTAMP_HEADER = "HTTP_X_APPROVAL_TIMESTAMP"
SIGNATURE_WINDOW_SECONDS = 300
LAST_USED_RESOLUTION = timedelta(seconds=60)
BOOTSTRAP_SCOPES = frozenset({ApiScope.JENKINS.value, ApiScope.READ.value})


@dataclass(frozen=True)
class TokenPrincipal:
    """认证后的调用方：不是 Django 用户，只有名字和权限范围。"""

    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    token_id: int | None = None

    is_authenticated = True

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class AuthFailed(exceptions.AuthenticationFailed):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code)


def signature_expected(secret: str, timestamp: str, payload: bytes) -> str:
    """签名 = HMAC-SHA256(secret, "<timestamp>." + 请求体)；GET 请求的“请求体”是原始查询串。"""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + payload, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _signed_payload(request: Request) -> bytes:
    django_request = request._request
    if django_request.method in ("GET", "HEAD"):
        return django_request.META.get("QUERY_STRING", "").encode("latin-1")
    try:
        return django_request.body
    except RequestDataTooBig:
        raise PayloadTooLarge() from None


def verify_signature(request: Request, secret: str) -> None:
    signature = request.META.get(SIGNATURE_HEADER, "")
    timestamp = request.META.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        raise AuthFailed(_("该 token 要求签名：缺少 X-Approval-Signature 或 X-Approval-Timestamp 头。"),
                         "signature_required")
    try:
        ts = int(timestamp)
    except ValueError:
        raise AuthFailed(_("X-Approval-Timestamp 必须是 Unix 秒数。"), "invalid_signature") from None
    if abs(time.time() - ts) > SIGNATURE_WINDOW_SECONDS:
        raise AuthFailed(_("签名已过期（时间戳与服务器相差超过 5 分钟）。"), "signature_expired")
    expected = signature_expected(secret, timestamp, _signed_payload(request))
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise AuthFailed(_("签名不正确。"), "invalid_signature")


class BearerTokenAuthentication(BaseAuthentication):
    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[TokenPrincipal, TokenPrincipal] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword.encode() or len(header) != 2:
            raise AuthFailed(_("Authorization 头格式应为 “Bearer <token>”。"), "invalid_token")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthFailed(_("token 不正确。"), "invalid_token") from None
        principal, secret = self._principal(raw)
        if secret:
            verify_signature(request, secret)
        return principal, principal

    def _principal(self, raw: str) -> tuple[TokenPrincipal, str]:
        digest = hash_token(raw)
        bootstrap = settings.APPROVAL_API_TOKEN
        if bootstrap and hmac.compare_digest(digest, hash_token(bootstrap)):
            return (TokenPrincipal("APPROVAL_API_TOKEN", BOOTSTRAP_SCOPES),
                    getattr(settings, "APPROVAL_API_SIGNING_SECRET", ""))
        token = ApiToken.objects.filter(token_hash=digest).first()
        if token is None or not token.is_active:
            raise AuthFailed(_("token 无效或已停用。"), "invalid_token")
        now = timezone.now()
        if token.expires_at and token.expires_at <= now:
            raise AuthFailed(_("token 已过期。"), "token_expired")
        # 最近使用时间每分钟最多写一次：长轮询时上千个请求不会变成上千次写库
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        secret = token.signing_secret()
        if token.signing_secret_env and not secret:
            # 要求签名却读不到密钥：宁可拒绝，也不悄悄放行未签名的请求
            raise AuthFailed(_("该 token 要求签名，但服务器上没有配置签名密钥。"), "signature_misconfigured")
        return TokenPrincipal(token.name, frozenset(token.scopes or []), token.pk), secret

    def authenticate_header(self, request: Request) -> str:
        # 有了它 DRF 才会回 401（否则未认证也回 403）
        return 'Bearer realm="api"'
