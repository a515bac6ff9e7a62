"""服务端画的 SVG 图（统计页用）：竖柱（堆叠）、横向分组柱、折线，都有坐标轴、刻度、标签与图例。

不用 JS 图表库：图随 HTML 一起到达、离线可用，靠 viewBox 随容器宽度缩放（手机上也一样）。
每段文字都经 escape；颜色由 CSS 类 s-<系列> 决定（templates/static/stats.css）。
全模块只在 _svg() 里 mark_safe 一次。
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

WIDTH = 400  # viewBox 宽：与手机上卡片的宽度相近，字号缩放后仍读得清；桌面上三列，也接近原大
FONT = 13
LEGEND_ROW = 20
MAX_X_LABELS = 7
_KEY = re.compile(r"[a-z0-9_-]+")

Format = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """一组数：key 决定 CSS 类（s-<key>，只许小写字母、数字、- 与 _），name 显示在图例与提示里。"""

    key: str
    name: str
    values: Sequence[float]

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise ValueError(f"series key {self.key!r} is not a safe CSS class")


# ---------------------------------------------------------------- 数字与刻度


def _n(value: float) -> str:
    """坐标与数值：一位小数，去掉多余的“.0”。"""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def count_label(value: float) -> str:
    return _n(value) if value != int(value) else str(int(value))


def duration_label(seconds: float | None) -> str:
    """简短的时长：45 秒、12 分钟、3.5 小时、2 天；None 显示为“-”。"""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return _("%(n)s 秒") % {"n": _n(seconds)}
    if seconds < 3600:
        return _("%(n)s 分钟") % {"n": _n(seconds / 60)}
    if seconds < 86400:
        return _("%(n)s 小时") % {"n": _n(seconds / 3600)}
    return _("%(n)s 天") % {"n": _n(seconds / 86400)}


def nice_step(raw: float) -> float:
    """不小于 raw 的“好看”步长：1、2、5 乘以 10 的幂。"""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power * (1 + 1e-9):
            return factor * power
    return 10 * power  # pragma: no cover - 上面的 10 一定命中


# 时长刻度的步长（秒）：整秒、整分钟、整小时、整天
_DURATION_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def axis_ticks(maximum: float, *, duration: bool = False, ticks: int = 4) -> list[float]:
    """从 0 到盖住 maximum 的刻度（约 ticks 段）。计数的步长至少为 1；时长取整秒/分/时/天。"""
    maximum = max(maximum, 0.0)
    raw = maximum / ticks if maximum else 1.0
    if duration:
        step = next((s for s in _DURATION_STEPS if s >= raw), None) or 86400 * nice_step(raw / 86400)
    else:
        step = max(nice_step(raw), 1.0)
    count = max(1, math.ceil(maximum / step - 1e-9))
    return [step * i for i in range(count + 1)]


def text_width(text: str, size: float = FONT) -> float:
    """文字宽度的估计：全角字一个字号宽，其他约 0.6 个。服务端量不了真实字形，够用来留边距。"""
    return sum(size if unicodedata.east_asian_width(ch) in "WF" else size * 0.6 for ch in text)


def fit_text(text: str, width: float, size: float = FONT) -> str:
    """超过 width 时截短并加“…”（完整文字放在 <title> 里）。"""
    if text_width(text, size) <= width:
        return text
    out = ""
    for ch in text:
        if text_width(out + ch + "…", size) > width:
            break
        out += ch
    return out + "…"


# ---------------------------------------------------------------- SVG 片段


def _text(x: float, y: float, text: str, css: str, anchor: str = "start", title: str = "") -> str:
    tip = f"<title>{escape(title)}</title>" if title else ""
    return (f'<text class="{css}" x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}">{tip}{escape(text)}</text>')


def _rect(x: float, y: float, w: float, h: float, css: str, title: str) -> str:
    return (f'<rect class="{css}" x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0.5))}" height="{_n(max(h, 0.5))}">'
            f"<title>{escape(title)}</title></rect>")


def _line(x1: float, y1: float, x2: float, y2: float, css: str) -> str:
    return f'<line class="{css}" x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}"/>'


def _legend(series: Sequence[Series], width: float) -> tuple[list[str], float]:
    """图例（系列多于一个时）：色块 + 名字，放不下时换行。返回片段与占用的高度。"""
    if len(series) < 2:
        return [], 6.0
    parts, x, y = [], 4.0, 4.0
    for item in series:
        item_width = 16 + text_width(item.name, FONT - 1) + 14
        if x > 4 and x + item_width > width:
            x, y = 4.0, y + LEGEND_ROW
        parts.append(f'<rect class="swatch s-{item.key}" x="{_n(x)}" y="{_n(y + 2)}" width="11" height="11"/>')
        parts.append(_text(x + 16, y + 12, item.name, "legend"))
        x += item_width
    return ['<g class="legend">', *parts, "</g>"], y + LEGEND_ROW + 4


def _svg(width: float, height: float, label: str, parts: Sequence[str], css: str) -> SafeString:
    # 每个片段的文字都已 escape，坐标是本模块格式化的数字：这里是唯一的 mark_safe
    return mark_safe(
        f'<svg class="chart {css}" viewBox="0 0 {_n(width)} {_n(height)}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>{"".join(parts)}</svg>'
    )


def _empty(parts: list[str], x: float, y: float, empty_text: str | None) -> None:
    parts.append(_text(x, y, empty_text or _("暂无数据"), "empty", "middle"))


def _x_labels(labels: Sequence[str], left: float, slot: float, y: float) -> list[str]:
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    return [_text(left + slot * (i + 0.5), y, label, "tick", "middle")
            for i, label in enumerate(labels) if i % every == 0]


def _y_axis(ticks: list[float], fmt: Format, left: float, right: float, top: float, bottom: float) -> list[str]:
    parts = []
    for tick in ticks:
        y = bottom - (bottom - top) * tick / ticks[-1]
        parts.append(_line(left, y, right, y, "grid" if tick else "axis"))
        parts.append(_text(left - 6, y + 4, fmt(tick) if tick else "0", "tick", "end"))
    parts.append(_line(left, top, left, bottom, "axis"))
    return parts


# ---------------------------------------------------------------- 图


def column_chart(
    labels: Sequence[str], series: Sequence[Series], *, label: str, height: float = 240,
    empty_text: str | None = None,
) -> SafeString:
    """竖柱图（计数）：每个标签一根柱，多个系列自下而上堆叠。"""
    totals = [sum(item.values[i] for item in series) for i in range(len(labels))]
    ticks = axis_ticks(max(totals, default=0))
    parts, top = _legend(series, WIDTH)
    left = max(text_width(count_label(t)) for t in ticks) + 10
    right, bottom = WIDTH - 6, height - 24
    parts += _y_axis(ticks, count_label, left, right, top + 6, bottom)
    if not any(totals):
        _empty(parts, (left + right) / 2, (top + bottom) / 2, empty_text)
        return _svg(WIDTH, height, label, parts, "column-chart")
    slot = (right - left) / len(labels)
    scale = (bottom - top - 6) / ticks[-1]
    for i, name in enumerate(labels):
        base = bottom
        for item in series:
            value = item.values[i]
            if value <= 0:
                continue
            parts.append(_rect(left + slot * (i + 0.14), base - value * scale, slot * 0.72, value * scale,
                               f"bar s-{item.key}", f"{name} · {item.name}: {count_label(value)}"))
            base -= value * scale
    parts += _x_labels(labels, left, slot, height - 8)
    return _svg(WIDTH, height, label, parts, "column-chart")


def row_chart(
    labels: Sequence[str], series: Sequence[Series], *, label: str, duration: bool = True,
    empty_text: str | None = None,
) -> SafeString:
    """横向分组柱：每行一个名字（项目、审批人），每个系列一根细柱，柱尾写数值。行多时图变高。"""
    fmt: Format = duration_label if duration else count_label
    parts, top = _legend(series, WIDTH)
    maximum = max((v for s in series for v in s.values), default=0)
    left = min(max((text_width(name) for name in labels), default=40) + 12, WIDTH * 0.38)
    right = WIDTH - 8 - text_width(fmt(maximum), FONT - 1)
    ticks = axis_ticks(maximum, duration=duration)
    # 刻度文字横排，窄图里少分几段，免得挤在一起
    widest = max(text_width(fmt(t), FONT - 1) for t in ticks) + 10
    if (right - left) / (len(ticks) - 1) < widest:
        ticks = axis_ticks(maximum, duration=duration, ticks=max(1, int((right - left) // widest)))
    # 每根柱占一条“车道”：柱粗 bar，车道间留 lane_gap，柱尾的数值居中在自己的车道里、不压到下一根
    bar, lane_gap, gap = 12.0, 4.0, 6.0
    lane = bar + lane_gap
    row = len(series) * lane + 2 * gap
    bottom = top + max(len(labels), 1) * row
    height = bottom + 26
    for tick in ticks:
        x = left + (right - left) * tick / ticks[-1]
        parts.append(_line(x, top, x, bottom, "grid" if tick else "axis"))
        parts.append(_text(x, bottom + 18, fmt(tick) if tick else "0", "tick", "middle"))
    parts.append(_line(left, bottom, right, bottom, "axis"))
    if not labels or not maximum:
        _empty(parts, (left + right) / 2, (top + bottom) / 2 + 4, empty_text)
        return _svg(WIDTH, height, label, parts, "row-chart")
    scale = (right - left) / ticks[-1]
    for i, name in enumerate(labels):
        y0 = top + i * row + gap
        middle = y0 + (len(series) * lane - lane_gap) / 2
        parts.append(_text(left - 8, middle + 4, fit_text(name, left - 12), "row-label", "end", title=name))
        for index, item in enumerate(series):
            value = item.values[i]
            y = y0 + index * lane
            if value > 0:
                parts.append(_rect(left, y, value * scale, bar, f"bar s-{item.key}",
                                   f"{name} · {item.name}: {fmt(value)}"))
            parts.append(_text(left + value * scale + 4, y + bar / 2 + 4, fmt(value), "value"))
    return _svg(WIDTH, height, label, parts, "row-chart")


def line_chart(
    labels: Sequence[str], series: Sequence[Series], *, label: str, height: float = 220,
    empty_text: str | None = None,
) -> SafeString:
    """折线图（计数）：每个系列一条线，每个点一个圆点（带提示）。"""
    parts, top = _legend(series, WIDTH)
    maximum = max((v for s in series for v in s.values), default=0)
    ticks = axis_ticks(maximum)
    left = max(text_width(count_label(t)) for t in ticks) + 10
    right, bottom = WIDTH - 6, height - 24
    parts += _y_axis(ticks, count_label, left, right, top + 6, bottom)
    if not labels:
        _empty(parts, (left + right) / 2, (top + bottom) / 2, empty_text)
        return _svg(WIDTH, height, label, parts, "line-chart")
    slot = (right - left) / len(labels)
    scale = (bottom - top - 6) / ticks[-1]
    for item in series:
        points = [(left + slot * (i + 0.5), bottom - v * scale) for i, v in enumerate(item.values)]
        parts.append(f'<polyline class="line s-{item.key}" points="'
                     + " ".join(f"{_n(x)},{_n(y)}" for x, y in points) + '"/>')
        for (x, y), name, value in zip(points, labels, item.values, strict=True):
            parts.append(f'<circle class="point s-{item.key}" cx="{_n(x)}" cy="{_n(y)}" r="3.5">'
                         f"<title>{escape(f'{name} · {item.name}: {count_label(value)}')}</title></circle>")
    if not maximum:
        _empty(parts, (left + right) / 2, (top + bottom) / 2, empty_text)
    parts += _x_labels(labels, left, slot, height - 8)
    return _svg(WIDTH, height, label, parts, "line-chart")
