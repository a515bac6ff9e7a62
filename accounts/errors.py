"""发布策略（封版、委托）操作的错误：code 机器可读，message 已翻译、可原样告诉操作人。"""

from __future__ import annotations


class PolicyError(Exception):
    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
