"""API 输入字段：接受什么、拒绝什么，与 OpenAPI 文档里写的完全一致（文档由 openapi_schema() 生成）。

Jenkins 与脚本发来的值五花八门：JSON 里的构建号常是字符串 "128"，文本字段偶尔是数字，缺省的值常是 null。
这里的规则：
- 文本：字符串或数字（数字按原样转成字符串）；长度按发来的原样计算（不先去掉首尾空白）；不许 NUL；
- 整数：整数，或只由数字组成的字符串（可带正负号与首尾空白）；"1_000"、"１２"、"5.0"、true 都不是；
- 秒数：有限的数，或十进制写法的数字字符串；
- 任何字段给 null 都等于没给（canonical_input 丢掉 null）。所以文档里每个字段都可为 null。
查询串与表单里的值都是字符串，文档按参数位置分别给出（location="query" / "body"）。
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.fields import empty

NO_NUL_PATTERN = r"^[^\x00]*$"
INTEGER_PATTERN = r"^\s*[+-]?[0-9]+\s*$"
NUMBER_PATTERN = r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
_INTEGER = re.compile(INTEGER_PATTERN, re.ASCII)
_NUMBER = re.compile(NUMBER_PATTERN, re.ASCII)


def _with_bounds(schema: dict[str, Any], field: serializers.Field) -> dict[str, Any]:
    for attr, key in (("min_value", "minimum"), ("max_value", "maximum")):
        value = getattr(field, attr, None)
        if value is not None:
            schema[key] = value
    return schema


class DocumentedField:
    """字段自己给出文档：openapi_schema(location) 描述它在查询串（"query"）或请求体（"body"）里接受的值。"""

    def openapi_schema(self, location: str) -> dict[str, Any]:
        raise NotImplementedError


class TextField(DocumentedField, serializers.CharField):
    """文本：长度上限按发来的值计算（与文档的 maxLength 一致），再去掉首尾空白。"""

    def to_internal_value(self, data: Any) -> str:
        if self.max_length is not None and isinstance(data, str) and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)

    def openapi_schema(self, location: str) -> dict[str, Any]:
        text: dict[str, Any] = {"type": "string", "pattern": NO_NUL_PATTERN}
        if self.max_length is not None:
            text["maxLength"] = self.max_length
        if not self.allow_blank:
            text["minLength"] = 1
        if location == "query":
            return text
        return {"oneOf": [text, {"type": "number"}]}


class WholeNumberField(DocumentedField, serializers.IntegerField):
    """整数：Jenkins 的 BUILD_NUMBER 是字符串 "128"，也要认；DRF 的 IntegerField 还会认 "1_000"、"5.0"、全角数字。"""

    def run_validation(self, data: Any = empty) -> int | None:
        if self.allow_null and isinstance(data, str) and data.strip() == "":
            data = None  # 表单里表达“没有”只能用空串
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, str) and not _INTEGER.fullmatch(data):
            self.fail("invalid")
        elif isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return super().to_internal_value(data)

    def openapi_schema(self, location: str) -> dict[str, Any]:
        number = _with_bounds({"type": "integer"}, self)
        if location == "query":
            return number
        text = {"type": "string", "pattern": r"^\s*([+-]?[0-9]+)?\s*$" if self.allow_null else INTEGER_PATTERN}
        return {"oneOf": [number, text]}


class SecondsField(DocumentedField, serializers.FloatField):
    """秒数：有限的数。DRF 的 FloatField 会把 true 当成 1.0、认 "1_0" 这类写法。"""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or (isinstance(data, str) and not _NUMBER.fullmatch(data)):
            self.fail("invalid")
        return super().to_internal_value(data)

    def openapi_schema(self, location: str) -> dict[str, Any]:
        number = _with_bounds({"type": "number"}, self)
        if location == "query":
            return number
        return {"oneOf": [number, {"type": "string", "pattern": NUMBER_PATTERN}]}


class UpperChoiceField(DocumentedField, serializers.ChoiceField):
    """选项：大小写与首尾空白不计（Jenkins 的 currentBuild.result 是大写，脚本里常写小写）。"""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            data = data.strip().upper()
        return super().to_internal_value(data)

    def openapi_schema(self, location: str) -> dict[str, Any]:
        values = [str(value) for value in self.choices]
        # 文档用不分大小写的正则表达“原样的选项值，大小写随意”：JSON Schema 没有不分大小写的 enum
        alternatives = "|".join("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in value)
                                for value in values)
        return {"type": "string", "pattern": rf"^\s*({alternatives})\s*$"}


class DocumentedFieldExtension(OpenApiSerializerFieldExtension):
    """请求体里的字段用它们自己的 openapi_schema("body")；说明（help_text）、可为 null 由 spectacular 加上。"""

    target_class = DocumentedField
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return self.target.openapi_schema("body")


class Described:
    """文档里组件的说明用 openapi_description（惰性翻译）：spectacular 默认取 docstring，那是写给维护者的中文，
    英文文档里会原样留下。"""

    openapi_description: Any = ""


def _described(schema: dict[str, Any], serializer: Any) -> dict[str, Any]:
    description = getattr(serializer, "openapi_description", "")
    if description:
        schema["description"] = description
    else:
        schema.pop("description", None)
    return schema


class DescribedExtension(OpenApiSerializerExtension):
    target_class = Described
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return _described(auto_schema._map_serializer(self.target, direction, bypass_extensions=True), self.target)


class RequiredAlternatives(Described):
    """经 canonical_input 合并的请求体：null 等于没给（所以可选字段在文档里都可为 null）；
    “至少给全其中一组字段”（组内字段不为 null、不为空串）的校验在 validate() 里，文档写成 anyOf。"""

    required_alternatives: tuple[tuple[str, ...], ...] = ()


class RequiredAlternativesExtension(OpenApiSerializerExtension):
    target_class = RequiredAlternatives
    match_subclasses = True
    priority = 1  # 这些序列化器也是 Described：由这里一并写说明

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = _described(auto_schema._map_serializer(self.target, direction, bypass_extensions=True), self.target)
        if direction == "request":
            required = set(schema.get("required", []))
            for name, prop in schema["properties"].items():
                if name not in required:
                    prop["nullable"] = True
            schema["anyOf"] = [
                {"required": list(group), "properties": {name: {"not": {"enum": [None, ""]}} for name in group}}
                for group in self.target.required_alternatives
            ]
        return schema


def query_parameters(serializer: serializers.Serializer, *, exclude: tuple[str, ...] = ()) -> list[OpenApiParameter]:
    """把输入序列化器的字段写成查询参数的文档（查询串里的值都是字符串，不可能是 null）。"""
    parameters = []
    for name, field in serializer.fields.items():
        if name in exclude:
            continue
        if isinstance(field, DocumentedField):
            schema = field.openapi_schema("query")
        elif isinstance(field, serializers.ChoiceField):
            schema = {"type": "string", "enum": [str(value) for value in field.choices]}
        elif isinstance(field, serializers.DateTimeField):
            schema = {"type": "string", "format": "date-time"}
        else:  # pragma: no cover - 新字段类型要在这里写明文档
            raise TypeError(f"{name}: 不知道 {type(field).__name__} 在查询串里的文档")
        # 说明保持惰性：文档按每个请求的 Accept-Language 生成，导入时 str() 会把它定格成中文
        parameters.append(OpenApiParameter(name, schema, OpenApiParameter.QUERY, required=field.required,
                                           description=field.help_text or ""))
    return parameters
