from django.urls import path

from . import views, web

app_name = "approvals"

urlpatterns = [
    path("logs/<str:public_id>", views.log_viewer, name="log_viewer"),
    path("logs/<str:public_id>/tail", views.log_tail, name="log_tail"),
    path("logs/<str:public_id>/download", views.log_download, name="log_download"),
    # 首页与后台审批页上的同意/拒绝按钮
    path("approvals/<str:public_id>/decide", web.approval_decide_view, name="decide"),
]
