"""测试用的 settings：显式打开测试模式，而不是靠“pytest 已被导入”去猜。

测试模式：不读开发者的 .env，Celery 用内存 broker 并在提交后同步执行任务。
APP_TESTING 只在导入 approvalbot.settings 的这一刻设置；DJANGO_SETTINGS_MODULE 随后改回正式的模块名。
两者都是为了测试里启动的真实子进程（manage.py、honcho、celery）：它们继承本进程的环境，
必须按生产方式运行，而不是也进入测试模式。本进程的 Django 此时已经配置好，不再读这两个变量。
"""

import os

os.environ["APP_TESTING"] = "1"
try:
    from approvalbot.settings import *  # noqa: F403
finally:
    del os.environ["APP_TESTING"]
    os.environ["DJANGO_SETTINGS_MODULE"] = "approvalbot.settings"
