"""各 app 给人看的文字里共用的小片段。"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils.translation import pgettext


def join_names(items: Iterable[object]) -> str:
    """并列的名字/项目：中文用顿号，英文用逗号。纯文本（调用方负责转义）。"""
    return pgettext("list separator", "、").join(str(item) for item in items)
