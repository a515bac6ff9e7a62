"""审批人与权限的后台：角色、审批人、项目规则可编辑；配置状态只读。

来自配置文件（source=file）的记录也允许在后台改——紧急时（比如有人离职）不必等改文件发版；
但配置文件内容变化并重新加载时会以文件为准覆盖这些改动，所以打开这类记录时明确提示。
后台新建的记录（source=admin）永远不会被配置文件改动。
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from approvalbot.admin_base import ReadOnlyAdminMixin
from approvalbot.text import join_names

from .environments import normalize_environment
from .models import Approver, ConfigState, ProjectRule, Role, Source

FILE_MANAGED_HELP = gettext_lazy(
    "来源为“配置文件”的记录由 config/users.json 管理：这里的修改立即生效，"
    "但配置文件下次变化并重新加载时会被文件内容覆盖；要长期修改请改配置文件。"
)


class ListTextField(forms.CharField):
    """把 JSON 列表字段显示成“逗号或换行分隔”的文本，后台填写不必手写 JSON。"""

    widget = forms.Textarea(attrs={"rows": 2, "cols": 60})

    def prepare_value(self, value: object) -> str:
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        if isinstance(value, str) and value.startswith("["):
            try:
                return ", ".join(str(v) for v in json.loads(value))
            except ValueError:
                return value
        return "" if value is None else str(value)

    def to_python(self, value: object) -> list[str]:
        text = super().to_python(value) or ""
        items = [part.strip() for chunk in text.splitlines() for part in chunk.replace("，", ",").split(",")]
        return list(dict.fromkeys(item for item in items if item))


class FileSourceWarningMixin:
    """打开来自配置文件的记录时提醒：改动会在下次加载配置时被覆盖。"""

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        obj = self.get_object(request, object_id)
        if obj is not None and obj.source == Source.FILE and request.method == "GET":
            self.message_user(request, FILE_MANAGED_HELP, messages.WARNING)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple[str, ...]:
        # 来源只由系统设置：后台新建的一律是“管理后台”
        return (*super().get_readonly_fields(request, obj), "source")


@admin.register(Role)
class RoleAdmin(FileSourceWarningMixin, admin.ModelAdmin):
    list_display = ("key", "name", "is_admin", "can_use_bot", "can_approve", "approver_count", "is_active", "source")
    list_filter = ("is_admin", "can_approve", "is_active", "source")
    search_fields = ("key", "name")
    fields = ("key", "name", "is_admin", "can_use_bot", "can_approve", "is_active", "source")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Role]:
        return super().get_queryset(request).annotate(n_approvers=Count("approvers"))

    @admin.display(description=gettext_lazy("审批人数"), ordering="n_approvers")
    def approver_count(self, obj: Role) -> int:
        return obj.n_approvers


class TelegramBoundFilter(admin.SimpleListFilter):
    title = gettext_lazy("Telegram 绑定")
    parameter_name = "bound"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", _("已绑定数字 ID")), ("no", _("未绑定"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Approver]) -> QuerySet[Approver]:
        if self.value() == "yes":
            return queryset.filter(telegram_id__isnull=False)
        if self.value() == "no":
            return queryset.filter(telegram_id__isnull=True)
        return queryset


class ApproverForm(forms.ModelForm):
    projects = ListTextField(label=gettext_lazy("可审批项目"), required=False,
                             help_text=gettext_lazy("项目名或通配模式，逗号或换行分隔，如 shop-*；留空表示不限"))
    environments = ListTextField(label=gettext_lazy("可审批环境"), required=False,
                                 help_text=gettext_lazy("如 production, staging（生产/prod 会自动归一化）；留空表示不限"))

    class Meta:
        model = Approver
        fields = ("username", "display_name", "role", "extra_roles", "user", "is_active", "telegram_username",
                  "telegram_id", "email", "jenkins_user", "projects", "environments")

    def clean_environments(self) -> list[str]:
        return list(dict.fromkeys(normalize_environment(e) for e in self.cleaned_data["environments"]))


@admin.register(Approver)
class ApproverAdmin(FileSourceWarningMixin, admin.ModelAdmin):
    form = ApproverForm
    list_display = ("username", "display_name", "role", "telegram_binding", "user", "email", "is_active", "source")
    list_filter = ("role", TelegramBoundFilter, "is_active", "source")
    search_fields = ("username", "display_name", "telegram_username", "email", "jenkins_user", "user__username")
    list_select_related = ("role", "user")
    autocomplete_fields = ("user", "role")
    filter_horizontal = ("extra_roles",)
    fieldsets = (
        (None, {"fields": ("username", "display_name", "role", "extra_roles", "user", "is_active", "source")}),
        (gettext_lazy("Telegram"), {
            "fields": ("telegram_username", "telegram_id", "telegram_bound_at"),
            "description": gettext_lazy(
                "只填 Telegram 用户名时，此人第一次和机器人说话时会自动绑定数字 ID；之后改用户名也不影响。"
            ),
        }),
        (gettext_lazy("识别与范围"), {"fields": ("email", "jenkins_user", "projects", "environments")}),
        (gettext_lazy("时间"), {"fields": ("created_at", "updated_at")}),
    )
    readonly_fields = ("telegram_bound_at", "created_at", "updated_at")

    @admin.display(description=gettext_lazy("Telegram 绑定"), ordering="telegram_id")
    def telegram_binding(self, obj: Approver) -> str:
        name = f" @{obj.telegram_username}" if obj.telegram_username else ""
        if obj.telegram_id:
            return f"✅ {obj.telegram_id}{name}"
        return _("⏳ 未绑定%(name)s") % {"name": name}


class ProjectRuleForm(forms.ModelForm):
    aliases = ListTextField(label=gettext_lazy("别名"), required=False,
                            help_text=gettext_lazy("逗号或换行分隔，如 shop, 商城后端；只在不带环境的项目规则上有效"))
    patterns = ListTextField(label=gettext_lazy("匹配模式"), required=False,
                             help_text=gettext_lazy("通配模式，逗号或换行分隔，如 folder/shop-*"))

    class Meta:
        model = ProjectRule
        fields = ("project", "environment", "aliases", "patterns", "is_default", "is_active", "approvers",
                  "approver_roles", "owners", "required_approvals", "required_roles", "chat_id", "timeout_minutes",
                  "timeout_policy", "stop_build", "reminder_interval_minutes", "reminder_backoff", "reminder_max_count",
                  "escalation_approvers", "escalation_roles", "escalate_after_reminders", "escalate_before_minutes",
                  "freeze_pending")

    def clean_environment(self) -> str:
        return normalize_environment(self.cleaned_data.get("environment"))

    def clean(self) -> dict:
        data = super().clean()
        project = (data.get("project") or "").strip()
        # 别名重复时匹配结果取决于顺序（P7），保存前就拦下
        names = {project.lower()}
        others = ProjectRule.objects.filter(environment="", is_default=False, is_active=True)
        if self.instance.pk:
            others = others.exclude(pk=self.instance.pk)
        taken: dict[str, str] = {}
        for rule in others:
            if rule.project.lower() == project.lower():
                continue
            taken[rule.project.lower()] = rule.project
            for alias in rule.aliases:
                taken.setdefault(str(alias).lower(), rule.project)
        for alias in data.get("aliases") or []:
            if alias.lower() in names:
                continue
            if alias.lower() in taken:
                self.add_error("aliases", _("别名「%(alias)s」与项目「%(other)s」的名称或别名相同") % {
                    "alias": alias, "other": taken[alias.lower()]})
        return data


@admin.register(ProjectRule)
class ProjectRuleAdmin(FileSourceWarningMixin, admin.ModelAdmin):
    form = ProjectRuleForm
    list_display = ("project", "environment_display", "aliases_display", "approvers_display", "required_approvals",
                    "chat_id", "timeout_minutes", "timeout_policy", "is_default", "is_active", "source")
    list_filter = ("environment", "is_default", "is_active", "source", "timeout_policy")
    search_fields = ("project",)
    filter_horizontal = ("approvers", "approver_roles", "owners", "required_roles", "escalation_approvers",
                         "escalation_roles")
    fieldsets = (
        (None, {
            "fields": ("project", "environment", "aliases", "patterns", "is_default", "is_active", "source"),
            "description": gettext_lazy(
                "环境为空的是项目基础规则；同一项目带环境的规则只覆盖其中填写了的项（生产可以更严格）。"
                "默认规则在没有任何项目匹配时使用。"
            ),
        }),
        (gettext_lazy("审批人"), {"fields": ("approvers", "approver_roles", "owners", "required_approvals",
                                            "required_roles")}),
        (gettext_lazy("通知、超时与提醒"), {"fields": (
            "chat_id", "timeout_minutes", "timeout_policy", "stop_build", "reminder_interval_minutes",
            "reminder_backoff", "reminder_max_count",
        )}),
        (gettext_lazy("升级与封版"), {
            "fields": ("escalation_approvers", "escalation_roles", "escalate_after_reminders",
                       "escalate_before_minutes", "freeze_pending"),
            "description": gettext_lazy(
                "无人决定时（提醒达到次数，或距截止不到所填分钟数，任一先到）把升级审批人拉进来，只升级一次；"
                "封版开始时仍在等的审批按“封版开始时的待审批”处理。"
            ),
        }),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProjectRule]:
        return super().get_queryset(request).prefetch_related("approvers", "approver_roles")

    @admin.display(description=gettext_lazy("环境"), ordering="environment")
    def environment_display(self, obj: ProjectRule) -> str:
        return obj.environment or _("（全部）")

    @admin.display(description=gettext_lazy("别名"))
    def aliases_display(self, obj: ProjectRule) -> str:
        return join_names(str(a) for a in obj.aliases) or "-"

    @admin.display(description=gettext_lazy("审批人"))
    def approvers_display(self, obj: ProjectRule) -> str:
        names = [a.label for a in obj.approvers.all()] + [f"[{r}]" for r in obj.approver_roles.all()]
        return join_names(names) or "-"


@admin.register(ConfigState)
class ConfigStateAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """配置文件的加载状态（只读）：最后一个好配置、校验和与最近一次错误（C8）。"""

    list_display = ("name", "path", "checksum_short", "loaded_at", "error_flag", "last_error_at")
    fields = ("name", "path", "checksum", "loaded_at", "last_error_display", "last_error_at", "data_pretty")
    readonly_fields = fields
    actions = ("reload_now",)

    @admin.display(description=gettext_lazy("校验和"))
    def checksum_short(self, obj: ConfigState) -> str:
        return obj.checksum[:12]

    @admin.display(description=gettext_lazy("有错误"), boolean=True)
    def error_flag(self, obj: ConfigState) -> bool:
        return bool(obj.last_error)

    @admin.display(description=gettext_lazy("最近一次错误"))
    def last_error_display(self, obj: ConfigState) -> str:
        return format_html("<pre style='margin:0;white-space:pre-wrap'>{}</pre>", obj.last_error) if obj.last_error else "-"

    @admin.display(description=gettext_lazy("内容（最后一个好配置）"))
    def data_pretty(self, obj: ConfigState) -> str:
        return format_html("<pre style='margin:0;white-space:pre-wrap'>{}</pre>",
                           json.dumps(obj.data, ensure_ascii=False, indent=2))

    @admin.action(description=gettext_lazy("立即重新加载配置文件"))
    def reload_now(self, request: HttpRequest, queryset: QuerySet[ConfigState]) -> None:
        """与 `manage.py load_config` 相同；改了文件不想等 30 秒时用。"""
        from .config import config_reload
        from .tasks import config_change_notify

        if not request.user.is_superuser:
            self.message_user(request, _("只有超级管理员可以重新加载配置文件。"), messages.ERROR)
            return
        for result in config_reload(apply=True, force=True):
            level = messages.ERROR if result.status == "refused" else messages.SUCCESS
            self.message_user(request, result.describe(), level)
            for warning in result.warnings:
                self.message_user(request, warning, messages.WARNING)
            if result.changed and result.status in ("applied", "refused"):
                config_change_notify(result)


# 发布策略（封版窗口、委托、策略审计）的后台在单独的模块里；导入即注册
from . import admin_policy  # noqa: E402,F401
