from django.urls import path

from . import views

app_name = "approvals"

urlpatterns = [
    path("logs/<str:public_id>", views.log_viewer, name="log_viewer"),
    path("logs/<str:public_id>/tail", views.log_tail, name="log_tail"),
    path("logs/<str:public_id>/download", views.log_download, name="log_download"),
]
