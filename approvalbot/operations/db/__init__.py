"""数据库后端 = 项目原来的后端 + django-prometheus 的计数（查询次数、耗时、错误、连接数，按别名与数据库种类）。

MySQL/MariaDB 直接用 django_prometheus.db.backends.mysql；SQLite 要保留 approvalbot.sqlite 的小改动，在这里组合。
"""
