"""运维测试用到别的 app 的夹具：假 Jenkins、API token、假 Telegram。"""

from tests.jenkins_bridge.conftest import api, celery_eager, fake_jenkins, jenkins_server, make_token  # noqa: F401
from tests.telegram_bot.conftest import fake_tg, tg_users  # noqa: F401
