"""config/users.json 与 config/app.json（C1–C11，P1–P4）。

schema.py 声明文件的形状（pydantic v2），errors.py 把错误说成中文，checks.py 做跨记录检查，
validate.py 把两者串起来，apply.py 写库，loader.py 读文件、记状态、备份，是外部的入口。
"""

from .errors import ConfigError
from .loader import (
    APP,
    CONFIG_NAMES,
    USERS,
    LoadResult,
    backup_dir,
    config_load,
    config_path,
    config_reload,
    parse_json,
    result_as_dict,
)
from .validate import app_validate, users_validate

__all__ = [
    "APP", "CONFIG_NAMES", "USERS", "ConfigError", "LoadResult", "app_validate", "backup_dir", "config_load",
    "config_path", "config_reload", "parse_json", "result_as_dict", "users_validate",
]
