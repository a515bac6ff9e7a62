"""API token 认证：Authorization: Bearer <token>；token 只以哈希比较，可选 HMAC 签名（每个 token 单独设置）。

APPROVAL_API_TOKEN 作为引导 token（jenkins + read）只在内存里按哈希比较，不写数据库：
改环境变量即轮换、旧值立刻失效，启动时也不必有迁移或写库的竞争。

签名覆盖请求里影响结果的一切：时间戳、nonce、方法、路径、规范化的查询串、请求体
（见 string_to_sign）。只签请求体时，截获的请求可以改投别的路径、附加未签名的查询参数。
nonce 在窗口内只能用一次，记在数据库里（所有 web 进程共享）。
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from ..models import ApiScope, ApiToken, SignatureNonce, hash_token
from .errors import PayloadTooLarge

SIGNATURE_HEADER = "HTTP_X_APPROVAL_SIGNATURE"
TIMESTAMP_HEADER = "HTTP_X_APPROVAL_TIMESTAMP"
NONCE_HEADER = "HTTP_X_APPROVAL_NONCE"
SIGNATURE_WINDOW_SECONDS = 300
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")
# 时间戳允许比服务器快或慢一个窗口：一个 nonce 最长在收到后两个窗口内仍可能被重放，保留这么久
NONCE_KEEP = timedelta(seconds=2 * SIGNATURE_WINDOW_SECONDS)
NONCE_PRUNE_INTERVAL_SECONDS = 60
_UNRESERVED = "-_.~"  # RFC 3986：这些字符不编码
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


def canonical_query(request: HttpRequest) -> str:
    """规范化查询串：按 (名, 值) 排序，名与值按 UTF-8 百分号编码（只有 A-Z a-z 0-9 - _ . ~ 不编码），用 & 连接。

    由 Django 解析好的 request.GET 生成——视图读到的每个查询参数都在签名里，一个也漏不掉。
    """
    pairs = sorted((key, value) for key in request.GET for value in request.GET.getlist(key))
    return "&".join(f"{quote(key, safe=_UNRESERVED)}={quote(value, safe=_UNRESERVED)}" for key, value in pairs)


def string_to_sign(request: HttpRequest, timestamp: str, nonce: str) -> bytes:
    """签名的原文：时间戳、nonce、方法（大写）、路径、规范查询串各占一行（以 \\n 结尾），后接原始请求体（GET 为空）。

    路径是解码后的路径（request.path），不含查询串。
    """
    try:
        body = request.body
    except RequestDataTooBig:
        raise PayloadTooLarge() from None
    head = f"{timestamp}\n{nonce}\n{request.method.upper()}\n{request.path}\n{canonical_query(request)}\n"
    return head.encode("utf-8") + body


def signature_expected(secret: str, message: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def nonce_claim(token_key: str, nonce: str) -> bool:
    """登记一个 nonce；同一 token 已用过时返回 False。顺手删除过期的（每个进程每分钟最多一次）。"""
    now = timezone.now()
    _nonces_prune(now)
    try:
        with transaction.atomic():  # 保存点：唯一约束冲突不能弄坏外层事务
            SignatureNonce.objects.create(token_hash=token_key, nonce=nonce, created_at=now)
    except IntegrityError:
        return False
    return True


_next_prune_at = 0.0


def _nonces_prune(now: datetime) -> None:
    global _next_prune_at
    if time.time() < _next_prune_at:
        return
    _next_prune_at = time.time() + NONCE_PRUNE_INTERVAL_SECONDS
    SignatureNonce.objects.filter(created_at__lt=now - NONCE_KEEP).delete()


def verify_signature(request: Request, secret: str, token_key: str) -> None:
    """检查签名头；通过后登记 nonce（先验签再登记：伪造的请求不能占用别人的 nonce）。"""
    signature = request.META.get(SIGNATURE_HEADER, "")
    timestamp = request.META.get(TIMESTAMP_HEADER, "")
    nonce = request.META.get(NONCE_HEADER, "")
    if not signature or not timestamp or not nonce:
        raise AuthFailed(_("该 token 要求签名：缺少 X-Approval-Signature、X-Approval-Timestamp 或 X-Approval-Nonce 头。"),
                         "signature_required")
    if not TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise AuthFailed(_("X-Approval-Timestamp 必须是 Unix 秒数。"), "invalid_signature")
    if abs(time.time() - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        raise AuthFailed(_("签名已过期（时间戳与服务器相差超过 5 分钟）。"), "signature_expired")
    if not NONCE_PATTERN.fullmatch(nonce):
        raise AuthFailed(_("X-Approval-Nonce 必须是 16–64 个字母、数字、“-”或“_”，每个请求新生成一个。"),
                         "invalid_signature")
    expected = signature_expected(secret, string_to_sign(request._request, timestamp, nonce))
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace")):
        raise AuthFailed(_("签名不正确。"), "invalid_signature")
    if not nonce_claim(token_key, nonce):
        raise AuthFailed(_("这个 nonce 已经用过：签名请求不能重放，每个请求都要新的 X-Approval-Nonce。"), "replayed")


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
            verify_signature(request, secret, hash_token(raw))
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
