"""后台：Jenkins 服务器（可一键检查连接）与 API token（明文只在创建时显示一次）。"""

from __future__ import annotations

import secrets

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .client import JenkinsClient, JenkinsError
from .models import ApiScope, ApiToken, JenkinsServer, hash_token
from .services import TOKEN_PREFIX


@admin.register(JenkinsServer)
class JenkinsServerAdmin(admin.ModelAdmin):
    # 只填主机名时按 https 补全（Django 6 的默认行为，现在就采用）
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "url", "username", "api_token_env", "is_default", "is_active")
    list_filter = ("is_active", "is_default")
    search_fields = ("name", "url")
    actions = ["check_connection"]

    @admin.action(description=_("检查连接（读取 Jenkins 版本）"))
    def check_connection(self, request: HttpRequest, queryset: QuerySet[JenkinsServer]) -> None:
        for server in queryset:
            try:
                version = JenkinsClient(server, timeout=5).version()
            except JenkinsError as exc:
                self.message_user(request, _("%(name)s：连接失败：%(err)s") % {"name": server.name, "err": exc.message},
                                  messages.ERROR)
            else:
                self.message_user(request, _("%(name)s：正常，Jenkins %(v)s") % {"name": server.name, "v": version})


class ApiTokenForm(forms.ModelForm):
    """权限范围是 JSON 列表，但后台里应是勾选框：没人该手写 ["jenkins", "read"]。"""

    scopes = forms.TypedMultipleChoiceField(
        label=_("权限范围"), choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple,
        help_text=_("可多选。Jenkins 流水线用的 token 选「Jenkins」与「只读」。"),
        error_messages={"required": _("至少选择一个权限范围。"),
                        "invalid_choice": _("未知的权限范围「%(value)s」：只能是 jenkins、approve、read。")},
    )

    class Meta:
        model = ApiToken
        fields = ("name", "scopes", "signing_secret_env", "description", "is_active", "expires_at")

    def clean_scopes(self) -> list[str]:
        # 与 create_api_token 一样去重并排序：同一组权限只有一种写法
        return sorted(set(self.cleaned_data["scopes"]))


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ("name", "key_prefix", "scopes_display", "is_active", "expires_at", "last_used_at", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "key_prefix", "description")
    readonly_fields = ("key_prefix", "created_at", "last_used_at")
    fields = ("name", "scopes", "signing_secret_env", "description", "is_active", "expires_at",
              "key_prefix", "created_at", "last_used_at")
    actions = ["deactivate"]

    @admin.display(description=_("权限范围"))
    def scopes_display(self, obj: ApiToken) -> str:
        return ", ".join(obj.scopes or []) or "-"

    def save_model(self, request: HttpRequest, obj: ApiToken, form, change: bool) -> None:
        # 表单已校验权限范围（勾选框、至少一个、只能是已知的）
        if not change:
            raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
            obj.token_hash, obj.key_prefix = hash_token(raw), raw[:12]
            super().save_model(request, obj, form, change)
            self.message_user(request, _("token 已生成，明文只显示这一次，请立即保存：%(t)s") % {"t": raw},
                              messages.SUCCESS)
            return
        super().save_model(request, obj, form, change)

    @admin.action(description=_("停用所选 token"))
    def deactivate(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.update(is_active=False)
        self.message_user(request, _("已停用 %(n)s 个 token") % {"n": count})
