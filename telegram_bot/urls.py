from django.urls import path

from .views import telegram_webhook

app_name = "telegram_bot"

urlpatterns = [
    path("telegram/webhook/", telegram_webhook, name="webhook"),
]
