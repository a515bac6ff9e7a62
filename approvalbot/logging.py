"""日志：格式（文本/JSON）、脱敏（任何泄露到消息里的密钥都被替换）、按进程分文件并按大小轮转。"""

from __future__ import annotations

import fcntl
import json
import logging
import logging.handlers
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import environ

# Telegram Bot token 形如 123456:ABC...，常出现在 httpx 的请求 URL 里
_BOT_TOKEN_RE = re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{20,}")
_BEARER_RE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def redact(text: str) -> str:
    """把 Bot token、Bearer token 以及已配置的密钥替换为 ***。"""
    from django.conf import settings

    text = _BOT_TOKEN_RE.sub("***", text)
    text = _BEARER_RE.sub(r"\1***", text)
    for name in ("TELEGRAM_BOT_TOKEN", "APPROVAL_API_TOKEN", "JENKINS_API_TOKEN", "TELEGRAM_WEBHOOK_SECRET"):
        value = getattr(settings, name, "") or ""
        if len(value) >= 8 and value in text:
            text = text.replace(value, "***")
    return text


class RedactSecretsFilter(logging.Filter):
    """最后一道防线：即使某个库把 token 写进日志，也在输出前抹掉。"""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - 格式化失败时保持原样交给 handler 报告
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        # 异常文字也要抹：python-telegram-bot 的 InvalidToken 把整个 token 写进异常信息，
        # 文本格式的 handler 会原样打印堆栈（Formatter 优先使用已缓存的 exc_text）
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """一行一个 JSON 对象，便于日志系统检索（O5/O7）。"""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("approval_id", "task_id", "chat_id"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exc_info"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False)


# ---------------------------------------------------------------- 配置（settings.LOGGING 由这里生成）

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 5
DEFAULT_PROCESS = "app"
_PROCESS_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# 这些库在 DEBUG 级别会把请求 URL（含 Bot token）或大量噪音写进日志
_QUIET_LOGGERS = {
    # httpx 会记录完整请求 URL，而 Bot token 就在 URL 里
    "httpx": {"level": "WARNING"},
    "httpcore": {"level": "WARNING"},
    # python-telegram-bot 在 DEBUG 级别记录含 token 的 Bot API 地址与每次请求的参数
    "telegram": {"level": "INFO"},
    "urllib3": {"level": "WARNING"},
    "django.db.backends": {"level": "INFO"},
}


def process_log_path(log_file: str | Path, process: str) -> Path:
    """每个进程角色一个文件：app.log + web → app-web.log；没有角色的一次性命令（migrate 等）写 LOG_FILE 本身。"""
    path = Path(log_file)
    if process == DEFAULT_PROCESS:
        return path
    return path.with_name(f"{path.stem}-{process}{path.suffix}")


class ProcessSafeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """按大小轮转；同一角色的多个进程（gunicorn 的几个 worker、celery 的子进程）共用一个文件也不会写坏。

    标准 RotatingFileHandler 只适合单进程：另一个进程改名轮转后，其余进程仍写进已改名的旧文件，
    各自按自己的偏移判断大小，结果是重复轮转、丢日志。这里每次写入都持有一把跨进程的文件锁
    （fcntl 记录锁属于进程，fork 出的子进程自然各持各的），并在写之前检查文件是否已被别的进程或 logrotate
    改名，改名了就打开新文件——所以 logrotate 不需要 copytruncate。
    """

    # 参数名与标准库一致：dictConfig 按名字传参
    def __init__(self, filename: str, maxBytes: int, backupCount: int, encoding: str = "utf-8") -> None:
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(filename, maxBytes=maxBytes, backupCount=backupCount, encoding=encoding, delay=True)
        self._lock_path = self.baseFilename + ".lock"
        # 用裸文件描述符：不受垃圾回收影响，close() 里显式关闭
        self._lock_fd = self._open_lock()

    def _open_lock(self) -> int:
        return os.open(self._lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def _acquire_process_lock(self) -> None:
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
        except OSError:
            # 进程池在 fork 后可能关掉了继承来的描述符：重新打开一个（旧编号不再碰，可能已被别处复用）
            self._lock_fd = self._open_lock()
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._acquire_process_lock()
        except OSError:
            self.handleError(record)
            return
        try:
            self._reopen_if_rotated()
            super().emit(record)
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    def _reopen_if_rotated(self) -> None:
        if self.stream is None:
            return
        try:
            current = os.stat(self.baseFilename)
        except FileNotFoundError:
            current = None
        opened = os.fstat(self.stream.fileno())
        if current is None or (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            self.stream.close()
            self.stream = None

    def close(self) -> None:
        super().close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def build_logging(
    *,
    level: str,
    fmt: str,
    log_file: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    backup_count: int = DEFAULT_BACKUP_COUNT,
    process: str = DEFAULT_PROCESS,
    console: bool = True,
    base_dir: Path | None = None,
) -> dict:
    """生成 settings.LOGGING：控制台（stderr）与可选的按大小轮转文件，每个 handler 都经过脱敏过滤器。"""
    if not _PROCESS_RE.match(process):
        raise RuntimeError(f"APP_PROCESS 只能是小写字母、数字、_ 和 -（最长 32 个字符），当前是 {process!r}")
    formatter = "json" if fmt == "json" else "text"
    handlers: dict[str, dict] = {}
    if console or not log_file:
        handlers["console"] = {"class": "logging.StreamHandler", "formatter": formatter, "filters": ["redact"]}
    if log_file:
        # LOG_MAX_BYTES=0：不按大小轮转，交给 logrotate（文件被改名后下一次写入自动打开新文件）
        if max_bytes < 0:
            raise RuntimeError(f"LOG_MAX_BYTES 必须是非负整数（字节；0 = 交给 logrotate），当前是 {max_bytes}")
        if max_bytes and backup_count <= 0:
            # backupCount=0 时标准库根本不轮转，文件会无限增长
            raise RuntimeError(f"LOG_BACKUP_COUNT 必须至少为 1，当前是 {backup_count}")
        path = Path(log_file)
        if not path.is_absolute():
            # 相对路径按项目目录解析：各进程的工作目录不同也写到同一处
            path = (base_dir or Path.cwd()) / path
        handlers["file"] = {
            "class": "approvalbot.logging.ProcessSafeRotatingFileHandler",
            "filename": str(process_log_path(path, process)),
            "maxBytes": max_bytes,
            "backupCount": backup_count,
            "formatter": formatter,
            "filters": ["redact"],
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": "approvalbot.logging.JsonFormatter"},
        },
        "filters": {"redact": {"()": "approvalbot.logging.RedactSecretsFilter"}},
        "handlers": handlers,
        "root": {"handlers": list(handlers), "level": level},
        "loggers": {name: dict(options) for name, options in _QUIET_LOGGERS.items()},
    }


def logging_from_env(env: environ.Env, *, level: str, fmt: str, base_dir: Path) -> dict:
    """从环境变量读 LOG_FILE、LOG_MAX_BYTES、LOG_BACKUP_COUNT、LOG_CONSOLE 与进程角色 APP_PROCESS。"""
    try:
        max_bytes = env.int("LOG_MAX_BYTES", default=DEFAULT_MAX_BYTES)
        backup_count = env.int("LOG_BACKUP_COUNT", default=DEFAULT_BACKUP_COUNT)
    except ValueError as exc:
        raise RuntimeError(f"LOG_MAX_BYTES 与 LOG_BACKUP_COUNT 必须是整数：{exc}") from None
    return build_logging(
        level=level, fmt=fmt, log_file=env.str("LOG_FILE", default=""), max_bytes=max_bytes,
        backup_count=backup_count, process=env.str("APP_PROCESS", default=DEFAULT_PROCESS).strip(),
        console=env.bool("LOG_CONSOLE", default=True), base_dir=base_dir,
    )
