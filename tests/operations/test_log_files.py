"""LOG_FILE：每个进程一个按大小轮转的文件，密钥照样被抹掉，多进程同写一个文件也不会写坏（O6）。"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import environ
import pytest

from approvalbot.logging import ProcessSafeRotatingFileHandler, build_logging, logging_from_env, process_log_path

from .helpers import ROOT, process_env, skip_or_fail

# 运行时拼出：源码里不出现完整的 token 形状
SECRET_PART = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
BOT_TOKEN = "123456789:" + SECRET_PART


def _from_env(monkeypatch, **values: str) -> dict:
    for name in ("LOG_FILE", "LOG_MAX_BYTES", "LOG_BACKUP_COUNT", "LOG_CONSOLE", "APP_PROCESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return logging_from_env(environ.Env(), level="INFO", fmt="text", base_dir=Path("/srv/approvalbot"))


def test_without_log_file_only_the_console_handler_is_configured(monkeypatch):
    config = _from_env(monkeypatch)
    assert list(config["handlers"]) == ["console"]
    assert config["root"]["handlers"] == ["console"]


def test_log_file_adds_a_rotating_file_named_after_the_process(monkeypatch):
    config = _from_env(monkeypatch, LOG_FILE="/var/log/approvalbot/app.log", APP_PROCESS="worker")
    handler = config["handlers"]["file"]
    assert handler["filename"] == "/var/log/approvalbot/app-worker.log"
    assert (handler["maxBytes"], handler["backupCount"]) == (10 * 1024 * 1024, 5)
    # 文件与控制台都经过脱敏过滤器
    assert handler["filters"] == ["redact"] and config["handlers"]["console"]["filters"] == ["redact"]
    assert sorted(config["root"]["handlers"]) == ["console", "file"]


def test_each_process_role_gets_its_own_file():
    names = {role: process_log_path("/var/log/approvalbot/app.log", role).name
             for role in ("web", "bot", "worker", "beat")}
    assert names == {"web": "app-web.log", "bot": "app-bot.log", "worker": "app-worker.log", "beat": "app-beat.log"}
    # 没有角色的一次性命令（migrate、load_config）写 LOG_FILE 本身
    assert process_log_path("/var/log/approvalbot/app.log", "app").name == "app.log"


def test_relative_log_file_is_under_the_project_and_console_can_be_turned_off(monkeypatch):
    config = _from_env(monkeypatch, LOG_FILE="var/log/app.log", APP_PROCESS="beat", LOG_CONSOLE="false",
                       LOG_MAX_BYTES="2048", LOG_BACKUP_COUNT="2")
    assert list(config["handlers"]) == ["file"]
    assert config["handlers"]["file"]["filename"] == "/srv/approvalbot/var/log/app-beat.log"
    assert (config["handlers"]["file"]["maxBytes"], config["handlers"]["file"]["backupCount"]) == (2048, 2)


@pytest.mark.parametrize(("values", "message"), [
    ({"APP_PROCESS": "../etc"}, "APP_PROCESS"),
    ({"APP_PROCESS": "Web"}, "APP_PROCESS"),
    ({"LOG_MAX_BYTES": "ten"}, "LOG_MAX_BYTES"),
    ({"LOG_MAX_BYTES": "-1"}, "LOG_MAX_BYTES"),
    ({"LOG_BACKUP_COUNT": "0"}, "LOG_BACKUP_COUNT"),
])
def test_bad_log_settings_fail_at_start_with_a_clear_message(monkeypatch, values, message):
    with pytest.raises(RuntimeError, match=message):
        _from_env(monkeypatch, LOG_FILE="/tmp/app.log", **values)


def test_bad_log_setting_stops_manage_py_with_the_message(tmp_path):
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=process_env(tmp_path, LOG_FILE=str(tmp_path / "app.log"),
                                                      LOG_BACKUP_COUNT="0"))
    assert done.returncode != 0
    assert "LOG_BACKUP_COUNT 必须至少为 1" in done.stderr


WRITE_RECORDS = textwrap.dedent("""
    import logging, sys
    import django
    django.setup()
    token = sys.argv[1]
    log = logging.getLogger("httpx")
    for i in range(int(sys.argv[2])):
        log.warning("record %04d POST https://api.telegram.org/bot%s/sendMessage", i, token)
    try:
        raise RuntimeError(f"InvalidToken {token}")
    except RuntimeError:
        logging.getLogger("telegram_bot").exception("bot failed")
""")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_real_process_rotates_at_log_max_bytes_and_never_writes_the_token(tmp_path, fmt):
    log_file = tmp_path / "logs" / "app.log"
    env = process_env(tmp_path, LOG_FILE=str(log_file), LOG_MAX_BYTES="4000", LOG_BACKUP_COUNT="2",
                      APP_PROCESS="worker", LOG_FORMAT=fmt, LOG_CONSOLE="false", TELEGRAM_BOT_TOKEN=BOT_TOKEN,
                      DJANGO_SETTINGS_MODULE="approvalbot.settings")
    done = subprocess.run([sys.executable, "-c", WRITE_RECORDS, BOT_TOKEN, "200"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # LOG_CONSOLE=false：不再写控制台
    current = tmp_path / "logs" / "app-worker.log"
    files = [current, Path(f"{current}.1"), Path(f"{current}.2")]
    assert all(f.exists() for f in files) and not Path(f"{current}.3").exists()
    assert all(f.stat().st_size <= 4000 for f in files)
    text = "".join(f.read_text(encoding="utf-8") for f in reversed(files))
    assert SECRET_PART not in text
    assert "/bot***/sendMessage" in text and "record 0199" in text
    # 最旧的记录随轮转被删除，只留最近 LOG_BACKUP_COUNT + 1 个文件
    assert "record 0000" not in text
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[-1]["message"] == "bot failed" and "InvalidToken ***" in lines[-1]["exc_info"]
    else:
        assert "bot failed" in text and "InvalidToken ***" in text


CONCURRENT_WRITER = textwrap.dedent("""
    import logging, os, sys
    from approvalbot.logging import ProcessSafeRotatingFileHandler
    handler = ProcessSafeRotatingFileHandler(sys.argv[1], maxBytes=3000, backupCount=1000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("w")
    log.addHandler(handler)
    log.propagate = False
    name, count = sys.argv[2], int(sys.argv[3])
    # 与 celery prefork 一样：父进程建好 handler 后 fork，子进程沿用继承来的 handler
    child = os.fork()
    who = f"{name}-child" if child == 0 else f"{name}-parent"
    for i in range(count):
        log.warning("%s %05d %s", who, i, "x" * 40)
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
""")


def test_processes_sharing_one_file_lose_nothing_and_keep_each_file_under_the_limit(tmp_path):
    log_file = tmp_path / "app-web.log"
    count = 400
    writers = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(log_file), name, str(count)], cwd=ROOT)
               for name in ("a", "b")]
    for writer in writers:
        assert writer.wait(timeout=60) == 0
    files = sorted(tmp_path.glob("app-web.log*"))
    files = [f for f in files if not f.name.endswith(".lock")]
    lines = [line for f in files for line in f.read_text().splitlines()]
    # 4 个写入进程 × count 行，一行不丢、一行不重、没有被截断或拼在一起的行
    expected = {f"{w}-{side} {i:05d} {'x' * 40}" for w in ("a", "b") for side in ("parent", "child")
                for i in range(count)}
    assert len(lines) == len(expected) and set(lines) == expected
    assert all(f.stat().st_size <= 3000 for f in files)


def test_file_renamed_by_logrotate_is_reopened_without_copytruncate(tmp_path):
    """docker/logrotate/approvalbot（LOG_MAX_BYTES=0）：改名轮转后，下一条日志写进新文件。"""
    logrotate = shutil.which("logrotate") or (Path("/usr/sbin/logrotate") if Path("/usr/sbin/logrotate").exists()
                                              else None)
    if not logrotate:
        skip_or_fail("没有 logrotate（Debian 包 logrotate）")
    config = (ROOT / "docker" / "logrotate" / "approvalbot").read_text(encoding="utf-8")
    assert "copytruncate" not in config.split("{", 1)[1]
    # 路径换到临时目录；su/create 的用户换成当前用户（测试机上没有 approvalbot 用户）
    config = config.replace("/var/log/approvalbot", str(tmp_path / "logs"))
    config = "\n".join(line for line in config.splitlines() if not line.strip().startswith(("su ", "create ")))
    (tmp_path / "logrotate.conf").write_text(config, encoding="utf-8")
    config_dict = build_logging(level="INFO", fmt="text", log_file=str(tmp_path / "logs" / "app.log"),
                                max_bytes=0, process="web", console=False)
    spec = config_dict["handlers"]["file"]
    handler = ProcessSafeRotatingFileHandler(spec["filename"], spec["maxBytes"], spec["backupCount"])
    log = logging.getLogger("tests.operations.logrotate")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("before rotation")
        done = subprocess.run([str(logrotate), "--force", "--state", str(tmp_path / "state"),
                               str(tmp_path / "logrotate.conf")], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        log.warning("after rotation")
    finally:
        log.removeHandler(handler)
        handler.close()
    current = tmp_path / "logs" / "app-web.log"
    assert current.read_text() == "after rotation\n"
    assert (tmp_path / "logs" / "app-web.log.1").read_text() == "before rotation\n"
