"""有嵌套上限的 JSON 解析：API 的每个 JSON 请求体与 Telegram webhook 共用这一份。

Python 的 json 解析器对嵌套是递归的：约 1000 层就 RecursionError（变成 500）。这里在调用 json 之前
只用正则（C 实现、不递归）量出嵌套深度，超过 MAX_JSON_DEPTH 直接拒绝。表单与查询串是扁平的键值对，不会嵌套。
"""

from __future__ import annotations

import codecs
import json
import re
from typing import IO, Any

from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser, get_encoding

# 我们的请求体只有一层（字段 → 值）；32 层足够任何合理的 JSON，又远低于递归上限
MAX_JSON_DEPTH = 32

# 完整的 JSON 字符串（含转义）：先去掉它们，字符串里的括号不算嵌套
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]")
_UNIFY = str.maketrans("{}", "[]")


class JsonTooDeep(ValueError):
    """请求体的嵌套超过上限（在真正解析之前发现）。"""


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """text 的括号嵌套是否超过 limit 层。每一轮删掉最内层的一对括号，最多 limit 轮，每轮都是一次 C 级扫描。

    括号不配对（未闭合的 “[[[[”、类型交错）也照样计数：json 解析器对它们同样会先递归下去再报错。
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_UNIFY)
    for _round in range(limit):
        if not brackets:
            return False
        reduced = _INNERMOST.sub("", brackets)
        if reduced == brackets:
            # 剩下的形如 “]]][[[”：未闭合的开括号会让解析器一层层递归
            return brackets.count("[") > limit - _round
        brackets = reduced
    return "[" in brackets


def json_loads_limited(raw: bytes | str, *, limit: int = MAX_JSON_DEPTH) -> Any:
    """json.loads，但嵌套超过 limit 时抛 JsonTooDeep；NaN/Infinity 这类非标准常量按不合法 JSON 拒绝。"""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if json_depth_exceeds(text, limit):
        raise JsonTooDeep(limit)
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def too_deep_message(limit: int = MAX_JSON_DEPTH) -> str:
    return _("请求体 JSON 嵌套太深（最多 %(limit)s 层）。") % {"limit": limit}


class NestingTooDeep(exceptions.ParseError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "nesting_too_deep"

    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(too_deep_message(limit), self.default_code)
        self.details = {"max_depth": limit}


class LimitedJSONParser(JSONParser):
    """DRF 的 JSONParser，先检查嵌套深度（REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]）。"""

    def parse(self, stream: IO[bytes] | None, media_type: str | None = None,
              parser_context: dict[str, Any] | None = None) -> Any:
        encoding = get_encoding(parser_context or {})
        try:
            text = codecs.getreader(encoding)(stream).read()
            if json_depth_exceeds(text):
                raise NestingTooDeep()
            return json.loads(text, parse_constant=_refuse_constant if self.strict else None)
        except NestingTooDeep:
            raise
        except ValueError as exc:  # 含 UnicodeDecodeError
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
