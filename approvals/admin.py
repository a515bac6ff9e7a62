"""审批后台：只读的审批、历史、构建结果与日志；同意/拒绝（列表的批量动作、审批页上的按钮）走 approvals.services
（与 Telegram、API 同一条路，见 approvals.web）。

审批的任何字段都不能在后台直接改：状态只能经服务层变化，才能保证权限检查、票数、历史与 Jenkins 副作用一致。
列表在 1280 px 宽的屏幕上不横向滚动（构建合成一列、时间只显示到分钟、状态不折行），手机上只留最要紧的几列。
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.environments import is_production
from approvalbot.admin_base import ReadOnlyAdminMixin
from approvalbot.text import join_names

from .exports import approvals_csv_response, events_csv_response
from .models import Approval, ApprovalEvent, BuildLog, BuildResult, Status, Vote
from .web import DecisionForm, account_not_linked_message, web_decide, why_cannot_vote

LOG_PREVIEW_CHARS = 20_000


def _pretty_json(value: object) -> str:
    if not value:
        return "-"
    return format_html("<pre style='margin:0;white-space:pre-wrap'>{}</pre>",
                       json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True))


def _environment_badge(environment: str) -> str:
    # 生产一眼可辨
    return f"🔴 {environment}" if is_production(environment) else f"🟢 {environment or '-'}"


def _short_time(value) -> str:
    """列表里的时间只到分钟，今年的不写年份：两列时间不把表格撑出屏幕。"""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    return date_format(local, "m-d H:i" if local.year == timezone.localtime().year else "Y-m-d H:i")


def _log_link(approval: Approval) -> str:
    return format_html('<a href="{}">{}</a>', reverse("approvals:log_viewer", args=[approval.public_id]), _("日志"))


class VoteInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Vote
    template = "admin/approvals/readonly_tabular.html"
    extra = 0
    can_delete = False
    fields = ("created_at", "approver", "decision", "channel", "reason")
    readonly_fields = fields
    ordering = ("created_at", "id")


class ApprovalEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ApprovalEvent
    template = "admin/approvals/readonly_tabular.html"
    extra = 0
    can_delete = False
    fields = ("created_at", "kind", "actor_name", "channel", "details_pretty")
    readonly_fields = fields
    ordering = ("created_at", "id")

    @admin.display(description=gettext_lazy("详情"))
    def details_pretty(self, obj: ApprovalEvent) -> str:
        return _pretty_json(obj.details)


class RejectReasonForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("拒绝理由"),
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=gettext_lazy("会记入审批历史并显示在 Telegram 消息里；留空则记为“在管理后台拒绝”。"),
    )


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "public_id", "build_display", "environment_display", "version", "status_display", "votes_display",
        "requested_by", "created_display", "expires_display", "decided_display", "log_link",
    )
    list_display_links = ("public_id",)
    list_filter = ("status", "project", "environment", ("created_at", admin.DateFieldListFilter),
                   "decision_channel", "jenkins_action_state", "jenkins_server")
    search_fields = ("public_id", "job_name", "version", "description", "requested_by")
    date_hierarchy = "created_at"
    list_per_page = 50
    list_select_related = ("jenkins_server",)
    inlines = (VoteInline, ApprovalEventInline)
    change_form_template = "admin/approvals/approval/change_form.html"
    actions = ("approve_selected", "reject_selected", "export_approvals_csv", "export_events_csv")
    fieldsets = (
        (gettext_lazy("发布"), {"fields": (
            "public_id", "project", "environment", "environment_raw", "project_rule", "job_name", "build_number",
            "build_url_link", "version", "operation", "description", "requested_by", "requester",
        )}),
        (gettext_lazy("审批状态"), {"fields": (
            "status", "required_approvals", "created_at", "expires_at", "decided_at", "decided_by_name",
            "decision_channel", "reason", "superseded_by",
        )}),
        (gettext_lazy("通知与提醒"), {"fields": (
            "chat_id", "timeout_policy", "stop_build", "reminder_policy", "next_reminder_at", "reminder_count",
        )}),
        (gettext_lazy("Jenkins"), {"fields": (
            "jenkins_server", "resume_mode", "input_id", "callback_url", "jenkins_action_state",
            "jenkins_action_attempts", "jenkins_action_error", "jenkins_action_at",
        )}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Approval | None = None) -> list[str]:
        return [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        return super().get_queryset(request).annotate(
            approve_votes=Count("votes", filter=Q(votes__decision=Vote.Decision.APPROVE))
        )

    @admin.display(description=gettext_lazy("环境"), ordering="environment")
    def environment_display(self, obj: Approval) -> str:
        return _environment_badge(obj.environment)

    @admin.display(description=gettext_lazy("状态"), ordering="status")
    def status_display(self, obj: Approval) -> str:
        icons = {Status.PENDING: "⏳", Status.APPROVED: "✅", Status.REJECTED: "❌", Status.TIMEOUT: "⌛",
                 Status.CANCELLED: "🚫"}
        return f"{icons.get(obj.status, '')} {obj.get_status_display()}"

    @admin.display(description=gettext_lazy("同意票"))
    def votes_display(self, obj: Approval) -> str:
        return f"{getattr(obj, 'approve_votes', obj.approvals_received)}/{obj.required_approvals}"

    @admin.display(description=gettext_lazy("项目 / 构建"), ordering="project")
    def build_display(self, obj: Approval) -> str:
        # 项目与任务合成一列：任务名（最后一段）就是项目名时只写一次
        build = f"{obj.job_name} #{obj.build_number}"
        if obj.job_name.rsplit("/", 1)[-1] == obj.project:
            return build
        return format_html("{}<br><span class='quiet'>{}</span>", obj.project, build)

    @admin.display(description=gettext_lazy("决定人"), ordering="decided_by_name")
    def decided_display(self, obj: Approval) -> str:
        return obj.decided_by_name or "-"

    @admin.display(description=gettext_lazy("创建时间"), ordering="created_at")
    def created_display(self, obj: Approval) -> str:
        return _short_time(obj.created_at)

    @admin.display(description=gettext_lazy("截止时间"), ordering="expires_at")
    def expires_display(self, obj: Approval) -> str:
        return _short_time(obj.expires_at)

    @admin.display(description=gettext_lazy("构建日志"))
    def log_link(self, obj: Approval) -> str:
        return _log_link(obj)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        """审批页：顶部是日志链接，待审批时还有同意/拒绝（提交到 approvals:decide，回到这一页）。"""
        obj = self.get_object(request, object_id)
        extra: dict = dict(extra_context or {})
        if obj is not None:
            approver = getattr(request.user, "approver", None)
            extra.update({
                "log_url": reverse("approvals:log_viewer", args=[obj.public_id]),
                "decide_url": reverse("approvals:decide", args=[obj.public_id]),
                "decision_form": DecisionForm(initial={"next": request.get_full_path()}),
                "why_not": why_cannot_vote(obj, approver),
                "not_linked": account_not_linked_message(request.user) if approver is None else "",
                "is_pending": obj.status == Status.PENDING,
            })
        return super().change_view(request, object_id, form_url, extra)

    @admin.display(description=gettext_lazy("构建链接"))
    def build_url_link(self, obj: Approval) -> str:
        return format_html('<a href="{0}" target="_blank" rel="noopener">{0}</a>', obj.build_url) if obj.build_url else "-"

    # -------------------------------------------------------- 动作：一律经服务层

    def _decide(self, request: HttpRequest, queryset: QuerySet[Approval], decision: str, reason: str) -> None:
        """对所选审批逐条投票；每条的拒绝原因（权限、已决定、自审……）原样告诉操作的人。"""
        done: list[str] = []
        for approval in queryset.order_by("created_at", "id"):
            result = web_decide(user=request.user, approval=approval, decision=decision, reason=reason)
            if result.final:
                done.append(approval.public_id)
            else:
                self.message_user(request, _("%(id)s：%(message)s") % {"id": approval.public_id, "message": result.text},
                                  result.level)
        if done:
            text = _("已同意：%(ids)s") if decision == Vote.Decision.APPROVE else _("已拒绝：%(ids)s")
            self.message_user(request, text % {"ids": join_names(done)}, messages.SUCCESS)

    @admin.action(description=gettext_lazy("同意所选审批"))
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        self._decide(request, queryset, Vote.Decision.APPROVE, "")

    @admin.action(description=gettext_lazy("拒绝所选审批"))
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> HttpResponse | None:
        """先显示一页填写拒绝理由，确认后再逐条拒绝。"""
        if request.POST.get("confirm") == "yes":
            form = RejectReasonForm(request.POST)
            if form.is_valid():
                reason = form.cleaned_data["reason"].strip() or _("在管理后台拒绝")
                self._decide(request, queryset, Vote.Decision.REJECT, reason)
                return None
        else:
            form = RejectReasonForm()
        context = {
            **self.admin_site.each_context(request),
            "title": _("拒绝所选审批"),
            "opts": self.model._meta,
            "queryset": queryset,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action": "reject_selected",
            "changelist_url": reverse("admin:approvals_approval_changelist"),
        }
        return TemplateResponse(request, "admin/approvals/approval/reject_selected.html", context)

    @admin.action(description=gettext_lazy("导出所选审批（CSV）"))
    def export_approvals_csv(self, request: HttpRequest, queryset: QuerySet[Approval]) -> HttpResponse:
        return approvals_csv_response(queryset)

    @admin.action(description=gettext_lazy("导出所选审批的历史（CSV）"))
    def export_events_csv(self, request: HttpRequest, queryset: QuerySet[Approval]) -> HttpResponse:
        return events_csv_response(ApprovalEvent.objects.filter(approval__in=queryset))


@admin.register(ApprovalEvent)
class ApprovalEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "approval_link", "kind", "actor_name", "channel", "details_short")
    list_filter = ("kind", "channel", ("created_at", admin.DateFieldListFilter), "approval__environment")
    search_fields = ("approval__public_id", "approval__project", "actor_name")
    date_hierarchy = "created_at"
    list_select_related = ("approval",)
    list_per_page = 100
    actions = ("export_events_csv",)
    fields = ("approval", "created_at", "kind", "actor", "actor_name", "channel", "details_pretty")
    readonly_fields = fields

    @admin.display(description=gettext_lazy("审批"), ordering="approval__public_id")
    def approval_link(self, obj: ApprovalEvent) -> str:
        url = reverse("admin:approvals_approval_change", args=[obj.approval_id])
        return format_html('<a href="{}">{}</a>', url, obj.approval.public_id)

    @admin.display(description=gettext_lazy("详情"))
    def details_short(self, obj: ApprovalEvent) -> str:
        text = json.dumps(obj.details, ensure_ascii=False, sort_keys=True) if obj.details else ""
        return text if len(text) <= 120 else text[:117] + "..."

    @admin.display(description=gettext_lazy("详情"))
    def details_pretty(self, obj: ApprovalEvent) -> str:
        return _pretty_json(obj.details)

    @admin.action(description=gettext_lazy("导出所选历史（CSV）"))
    def export_events_csv(self, request: HttpRequest, queryset: QuerySet[ApprovalEvent]) -> HttpResponse:
        return events_csv_response(queryset)


@admin.register(BuildResult)
class BuildResultAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("received_at", "job_name", "build_number", "project", "environment", "version", "result",
                    "duration_display", "approval", "log_link")
    list_filter = ("result", "environment", ("received_at", admin.DateFieldListFilter), "jenkins_server")
    search_fields = ("job_name", "project", "version", "approval__public_id")
    date_hierarchy = "received_at"
    list_select_related = ("approval",)
    readonly_fields = ("approval", "jenkins_server", "job_name", "build_number", "build_url", "project",
                       "environment", "version", "result", "duration_ms", "details_pretty", "received_at")
    fields = readonly_fields

    @admin.display(description=gettext_lazy("构建日志"))
    def log_link(self, obj: BuildResult) -> str:
        return _log_link(obj.approval) if obj.approval else "-"

    @admin.display(description=gettext_lazy("耗时"), ordering="duration_ms")
    def duration_display(self, obj: BuildResult) -> str:
        if obj.duration_ms is None:
            return "-"
        seconds = obj.duration_ms // 1000
        return f"{seconds // 60}:{seconds % 60:02d}"

    @admin.display(description=gettext_lazy("详情"))
    def details_pretty(self, obj: BuildResult) -> str:
        return _pretty_json(obj.details)


@admin.register(BuildLog)
class BuildLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("fetched_at", "job_name", "build_number", "approval", "size", "is_complete", "log_link")
    list_filter = ("is_complete", "jenkins_server")
    search_fields = ("job_name", "approval__public_id")
    list_select_related = ("approval",)
    # 日志可能有几十 MB：列表不取正文，详情只显示末尾
    readonly_fields = ("approval", "log_link", "jenkins_server", "job_name", "build_number", "size", "is_complete",
                       "fetched_at", "content_tail")
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[BuildLog]:
        qs = super().get_queryset(request)
        return qs if request.resolver_match and request.resolver_match.url_name.endswith("_change") else qs.defer(
            "content")

    @admin.display(description=gettext_lazy("日志查看器"))
    def log_link(self, obj: BuildLog) -> str:
        return _log_link(obj.approval) if obj.approval else "-"

    @admin.display(description=gettext_lazy("日志末尾"))
    def content_tail(self, obj: BuildLog) -> str:
        text = obj.content[-LOG_PREVIEW_CHARS:]
        prefix = _("（仅显示最后 %(n)s 个字符）\n") % {"n": LOG_PREVIEW_CHARS} if len(obj.content) > LOG_PREVIEW_CHARS else ""
        return format_html("<pre style='max-height:40em;overflow:auto;white-space:pre-wrap'>{}{}</pre>", prefix, text)
