#!/usr/bin/env python3
"""给发布审批服务的签名 token 生成请求头（只用标准库）。输出 curl 配置格式，直接喂给 curl -K -。

签名覆盖时间戳、nonce、方法、路径、查询串与请求体：截获的请求不能改投别的接口、不能附加参数、不能重放。
  原文 = 时间戳 \\n nonce \\n 方法（大写） \\n 路径 \\n 规范查询串 \\n 原始请求体
  规范查询串 = 参数按 (名, 值) 排序，名与值按 UTF-8 百分号编码（只有 A-Z a-z 0-9 - _ . ~ 不编码），名=值 用 & 连接
  X-Approval-Signature: sha256=<HMAC-SHA256(密钥, 原文) 的十六进制>
每次调用都生成新的 nonce：同一个签名请求只能发一次（不要配合 curl --retry 重发同一组头，重试时重新签名）。

用法（密钥放在环境变量 APPROVAL_SIGNING_SECRET，建议用 Jenkins 凭据绑定注入）：
  # POST：请求体先写进文件，签名与发送用同一份字节
  python3 sign_request.py POST "$APPROVAL_URL/api/stage/approval/wait" body.json \\
    | curl -sS -K - -X POST --data-binary @body.json -H 'Content-Type: application/json; charset=utf-8' \\
           -H "Authorization: Bearer $APPROVAL_TOKEN" "$APPROVAL_URL/api/stage/approval/wait"
  # GET：查询串原样写在地址里
  url="$APPROVAL_URL/api/stage/approval/wait?id=7K3M9Q2A&wait=55"
  python3 sign_request.py GET "$url" | curl -sS -K - -H "Authorization: Bearer $APPROVAL_TOKEN" "$url"
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
import time
from urllib.parse import parse_qsl, quote, unquote, urlsplit

UNRESERVED = "-_.~"


def canonical_query(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{quote(k, safe=UNRESERVED)}={quote(v, safe=UNRESERVED)}" for k, v in pairs)


def signature_headers(secret: str, method: str, url: str, body: bytes = b"", *, timestamp: int | None = None,
                      nonce: str | None = None) -> dict[str, str]:
    parts = urlsplit(url)
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_hex(16)
    path = unquote(parts.path) or "/"
    text = f"{timestamp}\n{nonce}\n{method.upper()}\n{path}\n{canonical_query(parts.query)}\n".encode() + body
    mac = hmac.new(secret.encode("utf-8"), text, hashlib.sha256).hexdigest()
    return {"X-Approval-Timestamp": str(timestamp), "X-Approval-Nonce": nonce,
            "X-Approval-Signature": f"sha256={mac}"}


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    secret = os.environ.get("APPROVAL_SIGNING_SECRET", "")
    if not secret:
        print("缺少环境变量 APPROVAL_SIGNING_SECRET", file=sys.stderr)
        return 2
    body = b""
    if len(argv) == 4:
        with open(argv[3], "rb") as handle:
            body = handle.read()
    for name, value in signature_headers(secret, argv[1], argv[2], body).items():
        print(f'header = "{name}: {value}"')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
