"""唯一的 settings 模块：一切从环境变量读取（django-environ，存在 .env 时读取）。

无任何环境变量时是“嵌入式默认”：SQLite（WAL）+ 文件系统 Celery broker，一台机器即可跑全部进程。
生产环境必须提供的密钥缺失时直接报错，而不是悄悄用默认值。
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.utils.translation import gettext_lazy

from approvalbot.logging import logging_from_env
from approvalbot.secrets import SecretFileError, read_secret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("APP_VAR_DIR", BASE_DIR / "var"))

env = environ.Env()
# 测试模式只由 APP_TESTING 显式打开（tests/settings.py 设置它）
TESTING = env.bool("APP_TESTING", default=False)
# .env 只在存在时读取；真实环境变量优先；测试不读开发者的 .env
env_file = BASE_DIR / ".env"
if env_file.exists() and not TESTING and not os.environ.get("APP_IGNORE_DOTENV"):
    environ.Env.read_env(env_file, overwrite=False)


def secret(name: str, default: str = "") -> str:
    """读取密钥：NAME 或 NAME_FILE（Docker/K8s secret 文件）；文件读不出来时启动失败并说明原因。"""
    try:
        return read_secret(name, default)
    except SecretFileError as exc:
        raise RuntimeError(str(exc)) from None


DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = secret("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if DEBUG or TESTING or not env.bool("DJANGO_PRODUCTION", default=False):
        # 嵌入式/开发模式：每台机器生成并保存一个本地密钥，避免把密钥写进仓库
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file = VAR_DIR / "secret_key"
        if not key_file.exists():
            from django.core.management.utils import get_random_secret_key

            key_file.write_text(get_random_secret_key(), encoding="utf-8")
            key_file.chmod(0o600)
        SECRET_KEY = key_file.read_text(encoding="utf-8").strip()
    else:
        raise RuntimeError("生产环境必须设置 DJANGO_SECRET_KEY（或 DJANGO_SECRET_KEY_FILE）")

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_prometheus",  # /metrics 的请求、数据库指标（approvalbot.operations 合并成一个端点）
    "approvalbot",  # 只有管理命令（bootstrap_admin），没有模型
    "approvalbot.operations",  # 运维：健康检查、指标、告警、备份
    "accounts",
    "approvals",
    "jenkins_bridge",
    "telegram_bot",
]

MIDDLEWARE = [
    # 第一个与最后一个：请求计数与耗时（按视图、方法、状态码）把其余中间件都算在内
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # /api/ 下 Django 自己的 404/500 页也换成统一的 JSON 错误形状
    "jenkins_bridge.api.errors.api_error_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "approvalbot.urls"
WSGI_APPLICATION = "approvalbot.wsgi.application"
ASGI_APPLICATION = "approvalbot.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# ---------------------------------------------------------------- 数据库
# 嵌入式默认：SQLite + WAL + busy timeout，web/bot/worker/beat 四个进程共享同一文件时不会 "database is locked"
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": env.db(
        "DATABASE_URL", default=f"sqlite:///{(VAR_DIR / 'db.sqlite3').as_posix()}"
    )
}
_db = DATABASES["default"]
_db.setdefault("OPTIONS", {})
# 两种后端都带 django-prometheus 的查询计数与耗时（approvalbot/operations/db/）
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["ENGINE"] = "approvalbot.operations.db.sqlite"
    _db["OPTIONS"].update(
        {
            "timeout": 20,
            # IMMEDIATE：写事务一开始就拿写锁，避免“读后升级写”死锁
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
elif _db["ENGINE"] in ("django.db.backends.mysql",):
    _db["OPTIONS"].update(
        {
            # utf8mb4：中文与 emoji 都能完整存取
            "charset": "utf8mb4",
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
            # READ COMMITTED：条件更新看到的是已提交的最新行，避免 REPEATABLE READ 的快照误判
            "isolation_level": "read committed",
        }
    )
    _db.setdefault("TEST", {}).update({"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"})
    _db["ENGINE"] = "django_prometheus.db.backends.mysql"
_db.setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
_db.setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# ---------------------------------------------------------------- 国际化
LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="Asia/Shanghai")
USE_I18N = True
USE_TZ = True  # 数据库一律存 UTC

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "templates" / "static"]
# 嵌入式默认由 ASGI 进程自己提供静态文件；前面有 nginx 等时设为 false
SERVE_STATIC = env.bool("SERVE_STATIC", default=True)

# ---------------------------------------------------------------- 安全
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG and PUBLIC_BASE_URL.startswith("https"))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
_HTTPS = PUBLIC_BASE_URL.startswith("https://")
# 对外地址是 https 时默认强制 https + HSTS；健康检查与指标给内网探针用，免跳转
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=_HTTPS and not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000 if _HTTPS and not DEBUG else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# 子域名与 preload 影响整个域名，由运维显式决定（上面两个变量），不替他们打开
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Jenkins 可能发很大的描述；更大的请求体由 API 以 413 拒绝
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=256 * 1024)

# ---------------------------------------------------------------- DRF
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        # 先量嵌套深度再解析：嵌套 1000 层的 JSON 是 400，而不是解析器递归溢出的 500
        "jenkins_bridge.api.parsers.LimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_PAGINATION_CLASS": "jenkins_bridge.api.pagination.ApiPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jenkins_bridge.api.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    # 惰性字符串：文档页按请求的 Accept-Language 显示
    "TITLE": gettext_lazy("Jenkins 发布审批服务 API"),
    "DESCRIPTION": gettext_lazy("Jenkins 流水线通过本 API 申请发布审批、查询结果、回报构建结果。"),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI 用随包的静态文件，不依赖外部 CDN（内网、离线也能打开）
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# ---------------------------------------------------------------- Celery
# 嵌入式默认用文件系统 broker：无需任何服务器；生产设 CELERY_BROKER_URL=redis://…
# 测试：默认内存 broker、任务提交后同步执行（CI 的 MariaDB 轮次显式给 redis://，/health 会真连它）
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://" if TESTING else "filesystem://")
CELERY_BROKER_DIR = VAR_DIR / "celery"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("out", "processed", "control"):
        (CELERY_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "out"),
        "data_folder_out": str(CELERY_BROKER_DIR / "out"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        # 否则 kombu 会在当前目录建 control/（广播/pidbox 用）
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
        # 队列空时多久看一次目录：kombu 默认 1 秒，点按到 Jenkins 继续平均就多等半秒
        "polling_interval": env.float("CELERY_FS_POLLING_INTERVAL", default=0.05),
    }
else:
    # 重试退避上限（CELERY_RETRY_BACKOFF_MAX）必须低于 visibility_timeout，否则 acks_late 的任务会被重复投递
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_RETRY_BACKOFF_MAX = 600
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# 两个队列，worker 默认两个都消费（不必加 -Q）：有人在等的任务（继续 Jenkins、发/改审批消息）走 interactive，
# 周期扫描与清理走默认队列。beat 一次排进一批扫描时，点按后的任务不排在它们后面
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_INTERACTIVE_QUEUE = "interactive"
CELERY_TASK_QUEUES = {CELERY_INTERACTIVE_QUEUE: {}, CELERY_TASK_DEFAULT_QUEUE: {}}
CELERY_TASK_ROUTES = {name: {"queue": CELERY_INTERACTIVE_QUEUE} for name in (
    "jenkins_bridge.tasks.approval_resume_task",
    "telegram_bot.tasks.approval_announce_task",
    "telegram_bot.tasks.approval_messages_refresh_task",
    "telegram_bot.tasks.policy_notice_task",
    "telegram_bot.tasks.outbox_deliver_task",
)}
# Celery 的 Django 修补默认在每个任务前后关掉数据库连接（每个任务重连一次）；这里不让它关，
# 改由 approvalbot/celery.py 在每个任务前按 CONN_MAX_AGE 与健康检查处理（像 Django 处理请求那样）
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
CELERY_TIMEZONE = TIME_ZONE
# django-celery-beat 的 DatabaseScheduler，启动时装入下面的 CELERY_BEAT_SCHEDULE 并停用代码里已删的条目
# 主备：多个 beat 同时运行时只有持有租约的一个调度，它停了另一个在租约到期后接手（approvalbot/operations/beat.py）
CELERY_BEAT_SCHEDULER = "approvalbot.operations.beat:LeaderScheduler"
BEAT_LEASE_SECONDS = env.int("BEAT_LEASE_SECONDS", default=30)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# 不让 Celery 接管根日志：worker/beat 也走下面的 LOGGING（脱敏过滤器、LOG_FORMAT=json）
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=TESTING)
CELERY_TASK_EAGER_PROPAGATES = env.bool("CELERY_TASK_EAGER_PROPAGATES", default=False)
# 提醒、超时等扫描的间隔（秒）
SWEEP_INTERVAL_SECONDS = env.int("SWEEP_INTERVAL_SECONDS", default=30)
# 周期任务表：beat 启动时由 approvalbot.beat.Scheduler 装进数据库（名字带前缀的是代码托管的条目）
BEAT_MANAGED_PREFIX = "[auto] "
_BEAT_ENTRIES = {
    "operations.alerts": {
        "task": "operations.tasks.alerts_evaluate_task",
        "schedule": timedelta(seconds=env.int("ALERT_CHECK_INTERVAL_SECONDS", default=60)),
        "description": "检查各组件；持续失败的发一次告警，恢复时发一次恢复通知（在 beat 进程里执行，不依赖 worker）",
    },
    "operations.backup": {
        "task": "operations.tasks.backup_daily_task", "schedule": timedelta(minutes=5),
        "description": "每日备份：到了 backup.time 之后做当天的一次（数据库里记着，多个 beat/worker 也只做一次）",
    },
    "operations.heartbeat": {
        "task": "operations.tasks.beat_heartbeat_task", "schedule": timedelta(seconds=SWEEP_INTERVAL_SECONDS),
        "description": "记录 beat 与 worker 仍在运行（/health 检查新鲜度）",
    },
    "approvals.reminder_sweep": {
        "task": "approvals.tasks.reminder_sweep_task", "schedule": timedelta(seconds=SWEEP_INTERVAL_SECONDS),
        "description": "到期提醒：按群合并为一条摘要",
    },
    "approvals.timeout_sweep": {
        "task": "approvals.tasks.timeout_sweep_task", "schedule": timedelta(seconds=SWEEP_INTERVAL_SECONDS),
        "description": "超时处理：按规则策略拒绝并终止构建，或仅标记",
    },
    "approvals.policy_sweep": {
        "task": "approvals.tasks.policy_sweep_task", "schedule": timedelta(seconds=SWEEP_INTERVAL_SECONDS),
        "description": "发布策略：封版开始时拒绝规则要求拒绝的待审批，无人决定时升级",
    },
    "approvals.retention_purge": {
        "task": "approvals.tasks.retention_purge_task", "schedule": crontab(minute="30", hour="3"),
        "description": "保留期清理：删除过期的审批、历史、构建结果，构建日志先归档再删",
    },
    "accounts.config_reload": {
        "task": "accounts.tasks.config_reload_task", "schedule": timedelta(seconds=30),
        "description": "配置文件变化时重新校验并加载 users.json 与 app.json；坏文件被拒绝，旧配置继续生效",
    },
    "telegram_bot.recovery_sweep": {
        "task": "telegram_bot.tasks.telegram_recovery_sweep_task",
        "schedule": timedelta(seconds=env.int("RECOVERY_INTERVAL_SECONDS", default=15)), "kwargs": {"limit": 50},
        "description": "补发没有发出的 Telegram 消息、补改显示旧状态的消息",
    },
    "telegram_bot.processed_updates_cleanup": {
        "task": "telegram_bot.tasks.processed_updates_cleanup_task", "schedule": crontab(minute="17", hour="4"),
        "description": "清理 7 天前的已处理 update 记录",
    },
    "jenkins_bridge.action_recovery": {
        "task": "jenkins_bridge.tasks.jenkins_action_recovery_task",
        "schedule": timedelta(seconds=env.int("RECOVERY_INTERVAL_SECONDS", default=15)),
        "description": "补发 broker 丢失的、或执行途中 worker 死掉的 Jenkins 继续/中止操作",
    },
    "jenkins_bridge.build_mirror": {
        "task": "jenkins_bridge.tasks.jenkins_build_mirror_task",
        "schedule": timedelta(seconds=max(SWEEP_INTERVAL_SECONDS, 60)),
        "description": "发现已结束或已在 Jenkins 中处理的构建，关闭对应审批",
    },
}
# enabled=True：代码是这张表的依据，删掉后又加回来的条目重新生效
CELERY_BEAT_SCHEDULE = {BEAT_MANAGED_PREFIX + name: {**entry, "enabled": True} for name, entry in _BEAT_ENTRIES.items()}

# ---------------------------------------------------------------- Telegram
TELEGRAM_BOT_TOKEN = secret("TELEGRAM_BOT_TOKEN")
TELEGRAM_API_URL = env.str("TELEGRAM_API_URL", default="https://api.telegram.org").rstrip("/")
TELEGRAM_PROXY_URL = env.str("TELEGRAM_PROXY_URL", default="")
TELEGRAM_DEFAULT_CHAT_ID = env.int("TELEGRAM_DEFAULT_CHAT_ID", default=None)
TELEGRAM_MODE = env.str("TELEGRAM_MODE", default="polling")
TELEGRAM_WEBHOOK_SECRET = secret("TELEGRAM_WEBHOOK_SECRET")
# 轮询只能一个实例：启动后这么多秒内遇到 409 Conflict 的（后来的那个）退出，更早的继续（runbot）
TELEGRAM_POLL_CONFLICT_GRACE_SECONDS = env.float("TELEGRAM_POLL_CONFLICT_GRACE_SECONDS", default=60.0)
# 发送节奏（Telegram 的限制：同一群约 20 条/分钟、同一聊天 1 条/秒、总计 30 条/秒）
TELEGRAM_PACING_GROUP_SECONDS = env.float("TELEGRAM_PACING_GROUP_SECONDS", default=3.2)
TELEGRAM_PACING_PRIVATE_SECONDS = env.float("TELEGRAM_PACING_PRIVATE_SECONDS", default=1.0)
TELEGRAM_PACING_GLOBAL_SECONDS = env.float("TELEGRAM_PACING_GLOBAL_SECONDS", default=1 / 30)
# 429 的 retry_after 不超过这个秒数时就地等待重试，更长的交给 Celery 延后重试
TELEGRAM_MAX_INLINE_WAIT_SECONDS = env.float("TELEGRAM_MAX_INLINE_WAIT_SECONDS", default=10.0)
# 群里的审批消息、提醒、通知（以及所有 Celery 任务）用的语言；回答个人的命令/按钮则跟随其 Telegram 语言。
# 取 LANGUAGES 里的语言（zh-hans、en），也接受 zh-CN、en-US 这类写法
TELEGRAM_LANGUAGE = env.str("TELEGRAM_LANGUAGE", default=LANGUAGE_CODE).strip().lower().replace("_", "-")
if TELEGRAM_LANGUAGE.split("-")[0] not in {code.split("-")[0] for code, _label in LANGUAGES}:
    raise RuntimeError(f"TELEGRAM_LANGUAGE 只能是 {', '.join(code for code, _label in LANGUAGES)}，当前是 {TELEGRAM_LANGUAGE!r}")

# ---------------------------------------------------------------- Jenkins（默认服务器）
JENKINS_URL = env.str("JENKINS_URL", default="")
JENKINS_USER = env.str("JENKINS_USER", default="")
JENKINS_API_TOKEN = secret("JENKINS_API_TOKEN")
JENKINS_TIMEOUT_SECONDS = env.float("JENKINS_TIMEOUT_SECONDS", default=10.0)

APPROVAL_API_TOKEN = secret("APPROVAL_API_TOKEN")
# 可选：引导 token 的请求签名密钥（设置后请求须带 X-Approval-Signature）
APPROVAL_API_SIGNING_SECRET = secret("APPROVAL_API_SIGNING_SECRET")

# ---------------------------------------------------------------- 配置文件
APP_CONFIG_FILE = Path(env.str("APP_CONFIG_FILE", default=str(BASE_DIR / "config" / "app.json")))
CONFIG_BACKUP_DIR = Path(env.str("CONFIG_BACKUP_DIR", default=str(VAR_DIR / "config-backups")))
USERS_CONFIG_FILE = Path(env.str("USERS_CONFIG_FILE", default=str(BASE_DIR / "config" / "users.json")))
# 保留期清理删除构建日志前先把它 gzip 存到这里（G6）；设为空字符串则不归档、直接删除
LOG_ARCHIVE_DIR = env.str("LOG_ARCHIVE_DIR", default=str(VAR_DIR / "log-archive"))

# 审批默认值（可被 config/app.json 与项目规则覆盖）
APPROVAL_DEFAULT_TIMEOUT_MINUTES = env.int("APPROVAL_DEFAULT_TIMEOUT_MINUTES", default=60)
APPROVAL_REMINDER_INTERVAL_MINUTES = env.int("APPROVAL_REMINDER_INTERVAL_MINUTES", default=5)
APPROVAL_REMINDER_BACKOFF = env.float("APPROVAL_REMINDER_BACKOFF", default=1.5)
APPROVAL_REMINDER_MAX_COUNT = env.int("APPROVAL_REMINDER_MAX_COUNT", default=6)
APPROVAL_TIMEOUT_POLICY = env.str("APPROVAL_TIMEOUT_POLICY", default="reject")

# ---------------------------------------------------------------- 运维：备份、告警、指标
# 备份目录（D7）：manage.py backup 与每日备份写这里；保留份数与时间也可在 config/app.json 的 backup 里设置
BACKUP_DIR = Path(env.str("BACKUP_DIR", default=str(VAR_DIR / "backups")))
BACKUP_KEEP = env.int("BACKUP_KEEP", default=14)
BACKUP_TIME = env.str("BACKUP_TIME", default="03:00").strip()
if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", BACKUP_TIME):
    raise RuntimeError(f"BACKUP_TIME 要写成 24 小时制的 HH:MM（如 03:30），当前是 {BACKUP_TIME!r}")
# MySQL/MariaDB 的备份程序；找不到（或设为空）时在一个 REPEATABLE READ 事务里用 ORM 导出
BACKUP_MYSQLDUMP = env.str("BACKUP_MYSQLDUMP", default="mysqldump")
BACKUP_MYSQL_CLIENT = env.str("BACKUP_MYSQL_CLIENT", default="mysql")
# 告警（O3/O4）：组件持续失败多少分钟后告警（app.json 的 alerts.after_minutes 覆盖）；发到管理员群，没有则默认群
ALERT_AFTER_MINUTES = env.int("ALERT_AFTER_MINUTES", default=3)
TELEGRAM_ADMIN_CHAT_ID = env.int("TELEGRAM_ADMIN_CHAT_ID", default=None)
# Telegram 本身出问题时告警改发邮件（可选）：收件人逗号分隔；发信用下面 Django 的邮件设置
ALERT_EMAILS = env.list("ALERT_EMAILS", default=[])
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="approvalbot@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# django-prometheus：迁移状态的 Gauge 在多进程模式下每个进程一份，意义不大，不导出
PROMETHEUS_EXPORT_MIGRATIONS = False

# ---------------------------------------------------------------- 日志
LOG_LEVEL = env.str("LOG_LEVEL", default="DEBUG" if DEBUG else "INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
# 控制台（stderr）之外，设置 LOG_FILE 时每个进程（APP_PROCESS）另写一个按大小轮转的文件；见 approvalbot/logging.py
LOGGING = logging_from_env(env, level=LOG_LEVEL, fmt=LOG_FORMAT, base_dir=BASE_DIR)

