"""读密钥的唯一一处：环境变量 NAME，或 NAME_FILE 指向的文件（Docker/K8s secret）。

settings 在启动时读（读不到文件就报错退出），Jenkins 服务器、API token 的签名密钥在运行时按变量名读
（调用方把错误折算成“没有配置密钥”）。不依赖 Django，settings 也能用。
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretFileError(Exception):
    """设置了 NAME_FILE，但文件读不出来。"""


def read_secret(name: str, default: str = "") -> str:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretFileError(f"读不出 {name}_FILE 指向的文件 {file_path}：{exc.strerror or exc}") from None
    return os.environ.get(name, default)
