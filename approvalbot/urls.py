"""URL 总表。各 app 的路由在各自的 urls.py 里，这里只挂载。"""

from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy

# 惰性字符串：每个请求按其语言（LocaleMiddleware）显示
admin.site.site_header = gettext_lazy("Jenkins 发布审批")
admin.site.site_title = gettext_lazy("发布审批后台")
admin.site.index_title = gettext_lazy("管理")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    # /api/…
    path("", include("jenkins_bridge.urls")),
    # /health、/metrics
    path("", include("approvalbot.operations.urls")),
    # /telegram/webhook/
    path("", include("telegram_bot.urls")),
    # /logs/<id>
    path("", include("approvals.urls")),
]
