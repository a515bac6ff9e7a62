"""业务计数器（Prometheus）：在事件发生的进程里计数（决定在 web/bot/worker，外部调用失败在 worker）。

同一台机器上的所有进程写同一个 PROMETHEUS_MULTIPROC_DIR（prometheus_client 的多进程模式，目录在
approvalbot/__init__.py 里、导入 prometheus_client 之前设定），/metrics 把它们加在一起。计数器只增不减：
不从保留期清理会删行的表里推算。表里的“现在有多少”是水平量，另作 Gauge（approvalbot/operations/metrics.py）。
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# 决定耗时的桶（秒）：从半分钟到一天
DECISION_LATENCY_BUCKETS = (30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

DECISIONS = Counter("approvalbot_decisions", "已做出的决定（按结果与渠道）", ["status", "channel"])
DECISION_LATENCY = Histogram("approvalbot_decision_latency_seconds", "从申请到同意或拒绝的耗时",
                             buckets=DECISION_LATENCY_BUCKETS)
EXTERNAL_CALL_ERRORS = Counter("approvalbot_external_call_errors", "调用 Jenkins / Telegram 失败的次数",
                               ["system", "kind"])
LONGPOLL_WAITERS = Gauge("approvalbot_longpoll_waiters", "正在长轮询等待的请求数（各 web 进程之和）",
                         multiprocess_mode="livesum")

# Celery 任务（approvalbot/celery.py 的信号里计数；worker 的每个子进程、beat 进程各写自己的文件，/metrics 汇总）
TASK_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)
CELERY_TASK_DURATION = Histogram("approvalbot_celery_task_duration_seconds", "Celery 任务执行耗时（按任务与结果）",
                                 ["task", "state"], buckets=TASK_DURATION_BUCKETS)
CELERY_TASK_FAILURES = Counter("approvalbot_celery_task_failures", "Celery 任务失败（抛出异常）的次数", ["task"])
CELERY_TASK_RETRIES = Counter("approvalbot_celery_task_retries", "Celery 任务安排重试的次数", ["task"])
