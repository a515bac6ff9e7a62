"""approvalbot.sqlite（按真实参数上限分批）+ django-prometheus 的查询计数与耗时。"""

from __future__ import annotations

from django.db.backends.sqlite3.base import SQLiteCursorWrapper
from django_prometheus.db.common import DatabaseWrapperMixin

from approvalbot.sqlite import base

DatabaseFeatures = base.DatabaseFeatures


class DatabaseWrapper(DatabaseWrapperMixin, base.DatabaseWrapper):
    CURSOR_CLASS = SQLiteCursorWrapper
