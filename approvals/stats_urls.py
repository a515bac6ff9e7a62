"""/stats：审批分析页（X18），只给后台 staff。"""

from django.urls import path

from . import stats_views

app_name = "stats"

urlpatterns = [
    path("stats", stats_views.stats_page, name="page"),
]
