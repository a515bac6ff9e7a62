"""SQLite 后端的小改动：按实际编译的变量上限分批。

Django 假定 SQLite 每条语句最多 999 个参数（很老的默认值），批量写入会被切成很多条语句；
SQLite 3.32 起默认上限是 32766。按真实上限分批，扫描任务的查询数与批大小无关。
"""

from __future__ import annotations

import sqlite3

from django.db.backends.sqlite3 import base, features
from django.utils.functional import cached_property


class DatabaseFeatures(features.DatabaseFeatures):
    @cached_property
    def max_query_params(self) -> int:
        self.connection.ensure_connection()
        return self.connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures
