"""读取、校验、应用与备份配置文件（C1–C11）；beat 的热加载与 `manage.py load_config` 都走这里。

流程：读文件 → 解析 JSON → 校验（含与数据库中后台记录的冲突检查）→ 一个事务内应用 → 备份文件。
任何一处校验失败，整份文件被拒绝，数据库保持上一个好配置（C8），错误与被拒内容的校验和记在 ConfigState 上：
每个 prefork worker、重启后的进程都从这一行知道“这份坏内容已经报过了”，不会重复校验与通知。
"""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from ..models import ConfigState
from .apply import app_apply, users_apply
from .errors import ConfigError
from .validate import app_validate, users_validate

logger = logging.getLogger(__name__)

USERS = "users"
APP = "app"
CONFIG_NAMES = (USERS, APP)
BACKUPS_KEPT = 20


@dataclass
class LoadResult:
    """一次加载/校验的结果，供命令输出、周期任务日志与通知使用。"""

    name: str
    path: str
    status: str  # missing | unchanged | checked | applied | refused
    checksum: str = ""
    changed: bool = False  # 内容与上一次成功加载的不同
    applying: bool = True  # False 即 --check：只校验
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "refused"

    def describe(self) -> str:
        """一行中文摘要，用于日志与 Telegram 通知。"""
        if self.status == "missing":
            return _("%(file)s 不存在，跳过（保持当前配置）。") % {"file": self.path}
        if self.status == "unchanged":
            return _("%(file)s 未变化。") % {"file": self.path}
        if self.status == "checked":
            return _("%(file)s 校验通过。") % {"file": self.path}
        if self.status == "refused" and not self.applying:
            return _("%(file)s 校验失败：\n%(errors)s") % {"file": self.path, "errors": "\n".join(self.errors)}
        if self.status == "refused":
            return _("%(file)s 校验失败，已拒绝，继续使用上一次的好配置：\n%(errors)s") % {
                "file": self.path, "errors": "\n".join(self.errors)
            }
        parts = [f"{_label(k)} {v}" for k, v in self.summary.items() if v]
        return _("%(file)s 已加载（%(parts)s）。") % {
            "file": self.path, "parts": pgettext("list separator", "，").join(parts) or _("无变化")
        }


def _label(key: str) -> str:
    labels = {
        "roles_created": _("新建角色"), "roles_updated": _("更新角色"), "roles_deactivated": _("停用角色"),
        "users_created": _("新建审批人"), "users_updated": _("更新审批人"), "users_deactivated": _("停用审批人"),
        "rules_created": _("新建规则"), "rules_updated": _("更新规则"), "rules_deactivated": _("停用规则"),
        "keys": _("配置项"),
        "freeze_created": _("新建封版窗口"), "freeze_updated": _("更新封版窗口"), "freeze_deactivated": _("停用封版窗口"),
    }
    return labels.get(key, key)


# ---------------------------------------------------------------- 读取文件


def config_path(name: str) -> Path:
    return Path(settings.USERS_CONFIG_FILE if name == USERS else settings.APP_CONFIG_FILE)


def _file_label(path: Path) -> str:
    """错误里显示的文件名：项目内的文件用相对路径，更短也不泄露部署目录。"""
    try:
        return str(path.resolve().relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(path)


def parse_json(raw: bytes, file_label: str) -> Any:
    """解析 JSON；语法错误给出行号与列号，重复的键也算错误（json 默认会悄悄取后一个）。"""
    try:
        text = raw.decode("utf-8-sig")  # 容忍 Windows 记事本加的 BOM
    except UnicodeDecodeError as exc:
        raise ConfigError([_("%(file)s: 不是 UTF-8 编码（第 %(pos)s 字节附近）") % {
            "file": file_label, "pos": exc.start}]) from None
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as exc:
        raise ConfigError([_("%(file)s: 第 %(line)s 行第 %(col)s 列：JSON 格式错误（%(msg)s）") % {
            "file": file_label, "line": exc.lineno, "col": exc.colno, "msg": exc.msg}]) from None
    if duplicates:
        raise ConfigError([_("%(file)s: 重复的键「%(key)s」（后一个会覆盖前一个，请删掉其中一个）") % {
            "file": file_label, "key": key} for key in dict.fromkeys(duplicates)])
    if not isinstance(data, dict):
        raise ConfigError([_("%(file)s: 顶层必须是 JSON 对象 {…}") % {"file": file_label}])
    return data


def file_permission_warnings(path: Path) -> list[str]:
    """C10：谁能改 users.json 谁就能给自己审批权限；所有人可写时必须提醒。"""
    try:
        mode = path.stat().st_mode
    except OSError:
        return []
    if mode & stat.S_IWOTH:
        return [_("%(file)s: 所有用户都可写（权限 %(mode)s），任何本机用户都能修改审批权限；请执行 chmod 640 %(file)s") % {
            "file": _file_label(path), "mode": oct(stat.S_IMODE(mode))}]
    return []


# ---------------------------------------------------------------- 加载与入口


def _validate(name: str, data: dict[str, Any], label: str) -> tuple[Any, list[str]]:
    return users_validate(data, file_label=label) if name == USERS else app_validate(data, file_label=label)


def config_load(name: str, *, apply: bool = True, force: bool = True) -> LoadResult:
    """校验并（apply=True 时）应用一份配置文件。

    force=False 用于周期任务：内容已生效、或同一份坏内容已被拒绝过（记在数据库里），就什么都不做（C5/C6）。
    apply=False 即 --check：只校验，数据库一行不写。
    """
    path = config_path(name)
    label = _file_label(path)
    result = LoadResult(name=name, path=label, status="missing", applying=apply)
    if not path.is_file():
        return result
    raw = path.read_bytes()
    result.checksum = hashlib.sha256(raw).hexdigest()
    result.warnings.extend(file_permission_warnings(path))
    good, refused = (ConfigState.objects.filter(name=name).values_list("checksum", "refused_checksum").first()
                     or ("", ""))
    result.changed = result.checksum != good
    # 已生效的内容，或已被（任何一个进程、重启之前）拒绝并报过的坏内容
    if not force and result.checksum in (good, refused):
        result.status = "unchanged"
        if apply and not result.changed:
            # 坏文件被改回了上一个好配置：错误已不存在
            ConfigState.objects.filter(name=name).exclude(last_error="", refused_checksum="").update(
                last_error="", last_error_at=None, refused_checksum="")
        return result
    try:
        data = parse_json(raw, label)
        if not apply:
            _config, warnings = _validate(name, data, label)
            result.warnings.extend(warnings)
            result.status = "checked"
            return result
        ConfigState.objects.get_or_create(name=name)  # 先有这一行再加行锁：锁不存在的行在 MariaDB 上锁的是间隙
        with transaction.atomic():
            state = ConfigState.objects.select_for_update().get(name=name)
            if not force and result.checksum in (state.checksum, state.refused_checksum):
                result.status = "unchanged"  # 另一个 worker 刚处理完同一份内容
                return result
            config, warnings = _validate(name, data, label)
            if name == USERS:
                result.summary = users_apply(config)
                stored = {k: v for k, v in data.items() if not k.startswith("_")}
            else:
                stored = config
                result.summary = {"keys": sum(len(v) if isinstance(v, dict) else 1 for v in config.values()),
                                  **app_apply(config)}
            state.path = str(path)
            state.data = stored
            state.checksum = result.checksum
            state.loaded_at = timezone.now()
            state.last_error = ""
            state.last_error_at = None
            state.refused_checksum = ""
            state.save()
        result.warnings.extend(warnings)
    except ConfigError as exc:
        result.status = "refused"
        result.errors = exc.errors
        if apply and not _refusal_record(name, path, exc.errors, result.checksum, force=force):
            result.status = "unchanged"  # 另一个 worker 已经拒绝并报过同一份内容
        return result
    result.status = "applied"
    if result.changed:
        _backup(name, raw, result.checksum)
    return result


def _refusal_record(name: str, path: Path, errors: list[str], checksum: str, *, force: bool) -> bool:
    """坏文件只记错误与它的校验和，不碰 data/checksum：上一个好配置继续生效（C8）。

    返回 False 表示这份坏内容已被别的进程记过（周期任务据此不再重复通知）；force=True（手动加载）总是重新记录。
    """
    ConfigState.objects.get_or_create(name=name)
    with transaction.atomic():
        state = ConfigState.objects.select_for_update().get(name=name)
        if not force and state.refused_checksum == checksum:
            return False
        state.path = str(path)
        state.last_error = "\n".join(errors)
        state.last_error_at = timezone.now()
        state.refused_checksum = checksum
        state.save(update_fields=["path", "last_error", "last_error_at", "refused_checksum"])
    return True


def backup_dir() -> Path:
    return Path(getattr(settings, "CONFIG_BACKUP_DIR", Path(settings.VAR_DIR) / "config-backups"))


def _backup(name: str, raw: bytes, checksum: str) -> None:
    """C11：每份成功应用的新内容存一份带时间戳的副本，只留最近 20 份。备份失败不影响已生效的配置。"""
    folder = backup_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"{name}-{stamp}-{checksum[:8]}.json"
        target.write_bytes(raw)
        target.chmod(0o600)  # 里面有 Telegram id 与邮箱
        for old in sorted(folder.glob(f"{name}-*.json"))[:-BACKUPS_KEPT]:
            old.unlink(missing_ok=True)
    except OSError:
        logger.exception("配置备份失败：%s -> %s", name, folder)


def config_reload(*, apply: bool = True, force: bool = True) -> list[LoadResult]:
    """依次处理 users.json 与 app.json；两份互不影响（一份坏了另一份照常加载）。"""
    return [config_load(name, apply=apply, force=force) for name in CONFIG_NAMES]


def result_as_dict(result: LoadResult) -> dict[str, Any]:
    return asdict(result)
