"""探测 /health：镜像的 HEALTHCHECK、compose 的 web 健康检查与 bin/approvalbot status 共用这一份。

只用标准库（镜像里不装 curl），超时很短，绝不挂住调用方。打印一行摘要；
退出码 0 = 200（ok 或 degraded），1 = 503、连不上、超时或回答不是预期的 JSON。
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def default_url() -> str:
    host = os.environ.get("WEB_HOST", "").strip() or "127.0.0.1"
    # 监听所有地址时从本机回环探测
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('WEB_PORT', '8000').strip() or '8000'}/health"


def host_header() -> str:
    """Host 头取 DJANGO_ALLOWED_HOSTS 的第一项：生产只允许对外域名时，按回环地址探测会被 Django 以 400 拒绝。"""
    first = (os.environ.get("DJANGO_ALLOWED_HOSTS") or "localhost").split(",")[0].strip()
    # ".example.com" 匹配 example.com 本身；"*" 匹配任何主机
    first = first.lstrip(".")
    return "localhost" if first in ("", "*") else first


def probe(url: str, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Host": host_header(), "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        return 1, f"/health 无法访问（{url}）：{exc}"
    try:
        data = json.loads(body)
        components = " ".join(f"{name}={part.get('status')}" for name, part in data["components"].items())
        summary = f"/health {status} {data['status']}（{components}）"
    except (ValueError, KeyError, TypeError, AttributeError):
        return 1, f"/health {status}：回答不是预期的 JSON"
    return (0 if status == 200 else 1), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="探测 /health（200 时退出码为 0）")
    parser.add_argument("--url", default=None, help="默认 http://WEB_HOST:WEB_PORT/health")
    parser.add_argument("--timeout", type=float, default=3.0, help="秒，默认 3")
    args = parser.parse_args(argv)
    code, summary = probe(args.url or default_url(), args.timeout)
    print(summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
