"""审计导出（X9）：审批与审批历史导出为 CSV。

UTF-8 带 BOM，Excel 直接双击打开中文不乱码；逐行流式输出，导出几十万行也不占内存。
以 = + - @ 开头的文本加前缀 '，防止有人在发布说明里写公式，导出后在 Excel 里被执行（CSV 注入）。
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from .models import Approval, ApprovalEvent, Vote

if TYPE_CHECKING:
    from accounts.models import PolicyEvent

BOM = "\ufeff"
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """csv.writer 需要一个“文件”；这里直接把写入的行交回给生成器。"""

    def write(self, value: str) -> str:
        return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def _time(value: datetime | None) -> str:
    return date_format(timezone.localtime(value), "Y-m-d H:i:s") if value else ""


def _stream(header: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield BOM + writer.writerow(header)
    for row in rows:
        yield writer.writerow(row)


def _response(filename_prefix: str, header: list[str], rows: Iterable[list[Any]]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_stream(header, rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{filename_prefix}-{stamp}.csv"'
    return response


def approvals_csv_response(queryset: QuerySet[Approval]) -> StreamingHttpResponse:
    """所选审批，一行一条，含票数与决定信息。"""
    header = [
        _("审批编号"), _("项目"), _("环境"), _("任务"), _("构建号"), _("版本"), _("操作类型"), _("发布说明"),
        _("发起人"), _("状态"), _("所需同意票数"), _("已同意票数"), _("创建时间"), _("截止时间"), _("决定时间"),
        _("决定人"), _("决定渠道"), _("理由"), _("Jenkins 操作状态"), _("构建链接"),
    ]
    qs = queryset.order_by("created_at", "id").annotate(
        approve_votes=Count("votes", filter=Q(votes__decision=Vote.Decision.APPROVE))
    )

    def rows() -> Iterator[list[Any]]:
        for a in qs.iterator(chunk_size=500):
            yield [
                a.public_id, _text(a.project), _text(a.environment), _text(a.job_name), a.build_number,
                _text(a.version),
                _text(a.operation), _text(a.description), _text(a.requested_by), a.get_status_display(),
                a.required_approvals, a.approve_votes, _time(a.created_at), _time(a.expires_at),
                _time(a.decided_at), _text(a.decided_by_name), a.get_decision_channel_display(), _text(a.reason),
                a.get_jenkins_action_state_display(), _text(a.build_url),
            ]

    return _response("approvals", header, rows())


def events_csv_response(queryset: QuerySet[ApprovalEvent]) -> StreamingHttpResponse:
    """审批历史（只追加的审计记录），按时间顺序。"""
    header = [_("时间"), _("审批编号"), _("项目"), _("环境"), _("类型"), _("操作人"), _("渠道"), _("详情")]
    qs = queryset.select_related("approval").order_by("created_at", "id")

    def rows() -> Iterator[list[Any]]:
        for e in qs.iterator(chunk_size=500):
            yield [
                _time(e.created_at), e.approval.public_id, _text(e.approval.project), _text(e.approval.environment),
                e.get_kind_display(), _text(e.actor_name), e.get_channel_display(),
                _text(json.dumps(e.details, ensure_ascii=False, sort_keys=True)) if e.details else "",
            ]

    return _response("approval-events", header, rows())


def policy_events_csv_response(queryset: QuerySet[PolicyEvent]) -> StreamingHttpResponse:
    """发布策略审计（封版、紧急发布、委托的授予/使用/撤销），按时间顺序。"""
    header = [_("时间"), _("类型"), _("操作人"), _("渠道"), _("封版窗口"), _("委托"), _("审批编号"), _("详情")]
    qs = queryset.select_related("freeze_window", "delegation__delegator", "delegation__delegate").order_by(
        "created_at", "id")

    def rows() -> Iterator[list[Any]]:
        for e in qs.iterator(chunk_size=500):
            yield [
                _time(e.created_at), e.get_kind_display(), _text(e.actor_name), _text(e.channel),
                _text(e.freeze_window.name if e.freeze_window else ""), _text(str(e.delegation or "")),
                e.approval_public_id, _text(json.dumps(e.details, ensure_ascii=False, sort_keys=True)) if e.details else "",
            ]

    return _response("policy-events", header, rows())
