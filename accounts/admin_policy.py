"""发布策略的后台：封版窗口（X4）、审批委托（X16）可编辑，策略审计只读。

来自 app.json 的窗口（source=file）由加载器管理：这里改了会在文件下次变化时被覆盖（打开时有提示）。
委托的授予与撤销走 accounts.delegations 的服务（与 /delegate、/undelegate 同一条路，同样写审计）；已有的委托不能改，只能撤销。
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from approvalbot.admin_base import ReadOnlyAdminMixin
from approvalbot.text import join_names

from .admin import FileSourceWarningMixin, ListTextField
from .audit import policy_event_record
from .config.timespec import zone
from .delegations import delegation_check, delegation_grant, delegation_revoke_one
from .environments import normalize_environment
from .errors import PolicyError
from .models import (
    ALL_ENVIRONMENTS,
    Approver,
    Delegation,
    FreezeKind,
    FreezeWindow,
    PolicyEvent,
    PolicyEventKind,
    Source,
)


def _local(value: object) -> str:
    return date_format(timezone.localtime(value), "Y-m-d H:i") if value else "-"


def _joined(items: list[str]) -> str:
    return join_names(str(i) for i in items) or "-"


def _actor(request: HttpRequest) -> Approver | None:
    return getattr(request.user, "approver", None)


class FreezeWindowForm(forms.ModelForm):
    environments = ListTextField(label=gettext_lazy("环境"), help_text=gettext_lazy(
        "逗号或换行分隔，如 production, staging（生产/prod 会自动归一化）；* 表示所有环境"))
    projects = ListTextField(label=gettext_lazy("项目"), required=False, help_text=gettext_lazy(
        "项目名、别名或通配模式，逗号或换行分隔；留空表示所有项目"))

    class Meta:
        model = FreezeWindow
        fields = ("name", "kind", "environments", "projects", "start_day", "start_time", "end_day", "end_time",
                  "starts_at", "ends_at", "timezone", "reason", "is_active")

    def clean_environments(self) -> list[str]:
        envs = list(dict.fromkeys(normalize_environment(e) for e in self.cleaned_data["environments"]))
        if not envs:
            raise forms.ValidationError(_("至少写一个环境；* 表示所有环境。"))
        return [ALL_ENVIRONMENTS] if ALL_ENVIRONMENTS in envs else envs

    def clean_timezone(self) -> str:
        name = (self.cleaned_data.get("timezone") or "").strip()
        if name and zone(name) is None:
            raise forms.ValidationError(_("未知的时区「%(tz)s」，要写 IANA 时区名，如 Asia/Shanghai。") % {"tz": name})
        return name

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") == FreezeKind.WEEKLY:
            for name in ("start_day", "start_time", "end_day", "end_time"):
                if data.get(name) is None:
                    self.add_error(name, _("每周重复的窗口要填开始与结束的星期和时刻。"))
            if all(data.get(n) is not None for n in ("start_day", "start_time", "end_day", "end_time")) and (
                    data["start_day"], data["start_time"]) == (data["end_day"], data["end_time"]):
                self.add_error("end_time", _("每周窗口的开始与结束不能是同一时刻。"))
            data.update(starts_at=None, ends_at=None)
        elif data.get("kind") == FreezeKind.ONCE:
            starts, ends = data.get("starts_at"), data.get("ends_at")
            if starts is None:
                self.add_error("starts_at", _("一次性的窗口要填开始时间。"))
            if ends is None:
                self.add_error("ends_at", _("一次性的窗口要填结束时间。"))
            if starts and ends and ends <= starts:
                self.add_error("ends_at", _("结束时间必须晚于开始时间。"))
            data.update(start_day=None, start_time=None, end_day=None, end_time=None)
        return data


@admin.register(FreezeWindow)
class FreezeWindowAdmin(FileSourceWarningMixin, admin.ModelAdmin):
    form = FreezeWindowForm
    list_display = ("name", "kind", "environments_display", "projects_display", "when_display", "timezone",
                    "is_active", "source")
    list_filter = ("kind", "is_active", "source")
    search_fields = ("name", "key", "reason")
    fieldsets = (
        (None, {"fields": ("name", "kind", "environments", "projects", "reason", "is_active", "source", "key")}),
        (gettext_lazy("每周重复"), {"fields": ("start_day", "start_time", "end_day", "end_time"),
                                "description": gettext_lazy("如周五 18:00 到周一 09:00：结束可以在下一周。")}),
        (gettext_lazy("一次性"), {"fields": ("starts_at", "ends_at")}),
        (gettext_lazy("时区"), {"fields": ("timezone",), "description": gettext_lazy(
            "每周窗口的星期与时刻按这个时区的墙上时间计算；留空用 TIME_ZONE。")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple[str, ...]:
        return (*super().get_readonly_fields(request, obj), "key")

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # 审计引用着它：不用的窗口停用即可

    @admin.display(description=gettext_lazy("环境"))
    def environments_display(self, obj: FreezeWindow) -> str:
        return _("所有环境") if ALL_ENVIRONMENTS in obj.environments else _joined(obj.environments)

    @admin.display(description=gettext_lazy("项目"))
    def projects_display(self, obj: FreezeWindow) -> str:
        return _joined(obj.projects) if obj.projects else _("所有项目")

    @admin.display(description=gettext_lazy("时间"))
    def when_display(self, obj: FreezeWindow) -> str:
        if obj.kind == FreezeKind.WEEKLY:
            return f"{obj.get_start_day_display()} {obj.start_time:%H:%M} → {obj.get_end_day_display()} {obj.end_time:%H:%M}"
        return f"{_local(obj.starts_at)} → {_local(obj.ends_at)}"

    def save_model(self, request: HttpRequest, obj: FreezeWindow, form: forms.Form, change: bool) -> None:
        if not change:
            obj.source = Source.ADMIN
            obj.created_by = _actor(request)
        super().save_model(request, obj, form, change)
        kind = PolicyEventKind.FREEZE_CHANGED if change else PolicyEventKind.FREEZE_STARTED
        policy_event_record(kind=kind, channel="admin", actor=_actor(request), actor_name=request.user.get_username(),
                            freeze_window=obj, details={"changed": list(form.changed_data), "name": obj.name})


class DelegationForm(forms.ModelForm):
    projects = ListTextField(label=gettext_lazy("限定项目"), required=False,
                             help_text=gettext_lazy("项目名或通配模式，逗号或换行分隔；留空表示不限"))
    environments = ListTextField(label=gettext_lazy("限定环境"), required=False,
                                 help_text=gettext_lazy("如 production, staging；留空表示不限"))

    class Meta:
        model = Delegation
        fields = ("delegator", "delegate", "starts_at", "ends_at", "projects", "environments", "reason")

    def clean(self) -> dict:
        data = super().clean()
        if self.instance.pk is None and not self.errors:
            try:
                delegation_check(delegator=data.get("delegator"), delegate=data.get("delegate"),
                                 starts_at=data["starts_at"], ends_at=data["ends_at"])
            except PolicyError as exc:
                raise forms.ValidationError(exc.message) from None
        return data


@admin.register(Delegation)
class DelegationAdmin(admin.ModelAdmin):
    form = DelegationForm
    list_display = ("delegator", "delegate", "starts_at", "ends_at", "scope_display", "state_display", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), ("ends_at", admin.DateFieldListFilter))
    search_fields = ("delegator__username", "delegator__display_name", "delegate__username", "delegate__display_name",
                     "reason")
    list_select_related = ("delegator", "delegate")
    autocomplete_fields = ("delegator", "delegate")
    actions = ("revoke_selected",)

    def get_readonly_fields(self, request: HttpRequest, obj: Delegation | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        # 已授予的委托不能改：要变就撤销再授予（两次都进审计）
        return ("delegator", "delegate", "starts_at", "ends_at", "projects", "environments", "reason", "created_by",
                "created_at", "revoked_at", "revoked_by")

    def get_fields(self, request: HttpRequest, obj: Delegation | None = None) -> tuple[str, ...]:
        if obj is None:
            return DelegationForm.Meta.fields
        return self.get_readonly_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Delegation, form: forms.Form, change: bool) -> None:
        if change:
            return  # 只读：没有可保存的
        data = form.cleaned_data
        try:
            created = delegation_grant(
                delegator=data["delegator"], delegate=data["delegate"], starts_at=data["starts_at"],
                ends_at=data["ends_at"], projects=data["projects"], environments=data["environments"],
                reason=data.get("reason", ""), actor=_actor(request), channel="admin")
        except PolicyError as exc:  # 表单检查之后又有人建了重叠的委托
            self.message_user(request, exc.message, messages.ERROR)
            return
        obj.pk = created.pk

    @admin.display(description=gettext_lazy("范围"))
    def scope_display(self, obj: Delegation) -> str:
        parts = [_joined(obj.projects) if obj.projects else _("所有项目"),
                 _joined(obj.environments) if obj.environments else _("所有环境")]
        return " / ".join(parts)

    @admin.display(description=gettext_lazy("状态"))
    def state_display(self, obj: Delegation) -> str:
        now = timezone.now()
        if obj.revoked_at:
            return _("已撤销")
        if obj.ends_at <= now:
            return _("已到期")
        return _("未开始") if obj.starts_at > now else _("生效中")

    @admin.action(description=gettext_lazy("撤销所选委托"))
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Delegation]) -> None:
        revoked = [d for d in queryset.select_related("delegator", "delegate")
                   if delegation_revoke_one(delegation=d, actor=_actor(request), channel="admin")]
        self.message_user(request, _("已撤销 %(n)d 条委托。") % {"n": len(revoked)}, messages.SUCCESS)


@admin.register(PolicyEvent)
class PolicyEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """策略审计（只读）：封版的开始与结束、紧急发布、委托的授予、使用与撤销。"""

    list_display = ("created_at", "kind", "actor_name", "channel", "freeze_window", "delegation", "approval_public_id",
                    "details_short")
    list_filter = ("kind", "channel", ("created_at", admin.DateFieldListFilter))
    search_fields = ("actor_name", "approval_public_id")
    list_select_related = ("freeze_window", "delegation__delegator", "delegation__delegate")
    date_hierarchy = "created_at"
    fields = ("created_at", "kind", "actor", "actor_name", "channel", "freeze_window", "delegation",
              "approval_public_id", "details_pretty")
    readonly_fields = fields
    actions = ("export_csv",)

    @admin.display(description=gettext_lazy("详情"))
    def details_short(self, obj: PolicyEvent) -> str:
        text = json.dumps(obj.details, ensure_ascii=False, sort_keys=True) if obj.details else ""
        return text if len(text) <= 120 else text[:117] + "..."

    @admin.action(description=gettext_lazy("导出所选策略审计（CSV）"))
    def export_csv(self, request: HttpRequest, queryset: QuerySet[PolicyEvent]) -> HttpResponse:
        from approvals.exports import policy_events_csv_response  # 后台可以调用领域层；accounts 本身不依赖它

        return policy_events_csv_response(queryset)

    @admin.display(description=gettext_lazy("详情"))
    def details_pretty(self, obj: PolicyEvent) -> str:
        if not obj.details:
            return "-"
        return format_html("<pre style='margin:0;white-space:pre-wrap'>{}</pre>",
                           json.dumps(obj.details, ensure_ascii=False, indent=2, sort_keys=True))
