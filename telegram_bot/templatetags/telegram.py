"""Telegram 消息模板的标签库：{% load telegram %}。

- {% linemode %}…{% endlinemode %} 与 {% line %}…{% endline %}：只输出 line 块，每块一行（同 healthchecks），
  模板里的缩进与换行不会进消息；
- {% colon %}…{% endcolon %}：块里的 HTML 后接随语言变化的冒号（不加粗的标签，或只加粗标题）；
- 共用片段：加粗标签、环境标识、提及（一人或一组）、http(s) 链接、剩余时间、“文字（备注）”。

过滤器只是 telegram_bot.rendering 里同名函数的薄包装：HTML 片段由那里生成、在那里标记为安全，
纯文本交回模板由自动转义处理。
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.template.base import Node, NodeList, Parser, Token

from .. import rendering

register = template.Library()

_LINES = "_telegram_lines"


class LineModeNode(Node):
    def __init__(self, nodelist: NodeList) -> None:
        self.nodelist = nodelist

    def render(self, context: Any) -> str:
        with context.push(**{_LINES: []}):
            self.nodelist.render(context)
            return "\n".join(context[_LINES])


class LineNode(Node):
    def __init__(self, nodelist: NodeList) -> None:
        self.nodelist = nodelist

    def render(self, context: Any) -> str:
        if _LINES not in context:
            raise template.TemplateSyntaxError("{% line %} 只能写在 {% linemode %} 里")
        context[_LINES].append(self.nodelist.render(context))
        return ""


@register.tag
def linemode(parser: Parser, token: Token) -> LineModeNode:
    """只保留其中 {% line %} 块的内容，按顺序每块一行；块外的文字（缩进、换行、注释）全部丢弃。"""
    nodelist = parser.parse(("endlinemode",))
    parser.delete_first_token()
    return LineModeNode(nodelist)


@register.tag
def line(parser: Parser, token: Token) -> LineNode:
    """消息里的一行；{% line %}{% endline %} 是空行。"""
    nodelist = parser.parse(("endline",))
    parser.delete_first_token()
    return LineNode(nodelist)


class ColonNode(Node):
    def __init__(self, nodelist: NodeList) -> None:
        self.nodelist = nodelist

    def render(self, context: Any) -> str:
        return rendering.colon_html(self.nodelist.render(context))


@register.tag
def colon(parser: Parser, token: Token) -> ColonNode:
    """{% colon %}<b>{% translate "配置被拒绝"|force_escape %}</b>{% endcolon %} → <b>配置被拒绝</b>：

    块里照常自动转义；冒号本身来自译文 "%(label)s："，同 label 过滤器。
    """
    nodelist = parser.parse(("endcolon",))
    parser.delete_first_token()
    return ColonNode(nodelist)


@register.filter
def label(text: str) -> str:
    """{% translate "项目"|label %} → <b>项目：</b>（冒号随语言变化）。"""
    return rendering.label_html(text)


@register.filter
def env_emoji(environment: str) -> str:
    return rendering.environment_badge(environment)[0]


@register.filter
def env_name(environment: str) -> str:
    """环境名（纯文本）：“生产”“预发布”……"""
    return rendering.environment_badge(environment)[1]


@register.filter
def env_badge(environment: str) -> str:
    """“🔴 生产”：emoji 加环境名（纯文本）。"""
    emoji, name = rendering.environment_badge(environment)
    return f"{emoji} {name}"


@register.filter
def with_note(text: Any, note: Any) -> str:
    """{{ text|with_note:note }} → “text（note）”（纯文本）。"""
    return rendering.with_note(text, note)


@register.filter
def join_names(items: Any) -> str:
    return rendering.join_names(str(item) for item in items)


@register.filter
def time_left(expires_at: datetime, now: datetime | None = None) -> str:
    """{{ approval.expires_at|time_left:now }} → “29 分钟（截止 …）”。now 要在上下文里（一条消息只取一次“现在”）。"""
    return rendering.time_left_text(expires_at, now)


@register.filter
def mention(approver: Any) -> str:
    """{{ approver|mention }} → tg://user?id= 链接，没有数字 id 时 @用户名。"""
    return rendering.approver_mention(approver)


@register.filter
def mentions(value: rendering.Mentions) -> str:
    """{{ waiting|mentions }} → 一组点名，空格分隔（rendering.Mentions：谁、链接与否由 Python 决定）。"""
    return rendering.mentions_html(value)


@register.simple_tag
def link(url: str | None, text: str) -> str:
    """{% link url text %}：只为 http(s) 地址生成 <a href>，其他地址什么也不输出。可用 as 存进变量。"""
    return rendering.link(url, text)
