from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TelegramBotConfig(AppConfig):
    name = "telegram_bot"
    verbose_name = _("Telegram 机器人")

    def ready(self) -> None:
        # approvals.effects 按任务名投递：web 与 bot 进程里也要注册好任务，否则 delay 找不到
        from . import tasks  # noqa: F401
