"""URL 总表。各 app 的路由在各自的 urls.py 里，这里只挂载。"""

from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy

from . import views

# 惰性字符串：每个请求按其语言（LocaleMiddleware）显示
admin.site.site_header = gettext_lazy("Jenkins 发布审批")
admin.site.site_title = gettext_lazy("发布审批后台")
admin.site.index_title = gettext_lazy("管理")
# 左侧的模型导航栏占掉 300 px：1280 宽的屏幕上审批列表（还有右侧的筛选栏）就得横向滚动。首页与面包屑足够导航
admin.site.enable_nav_sidebar = False

urlpatterns = [
    # 首页：后台用户的待审批与组件状态；后台右上角的「查看站点」也指向这里
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    # /api/…
    path("", include("jenkins_bridge.urls")),
    # /health、/metrics
    path("", include("approvalbot.operations.urls")),
    # /telegram/webhook/
    path("", include("telegram_bot.urls")),
    # /logs/<id>、/approvals/<id>/decide
    path("", include("approvals.urls")),
    path("", include("approvals.stats_urls")),  # /stats
]
