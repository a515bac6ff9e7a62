"""/api/…（DRF）。"""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .api import views

urlpatterns = [
    path("api/stage/approval/wait", views.approval_wait_view, name="api-wait"),
    path("api/status", views.ApprovalStatusApi.as_view(), name="api-status"),
    path("api/status/<str:public_id>", views.ApprovalDetailApi.as_view(), name="api-status-detail"),
    path("api/approvals", views.ApprovalListApi.as_view(), name="api-approvals"),
    path("api/approve/<str:public_id>", views.ApprovalApproveApi.as_view(), name="api-approve"),
    path("api/reject/<str:public_id>", views.ApprovalRejectApi.as_view(), name="api-reject"),
    path("api/users", views.UserListApi.as_view(), name="api-users"),
    path("api/build/result", views.BuildResultApi.as_view(), name="api-build-result"),
    path("api/schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
